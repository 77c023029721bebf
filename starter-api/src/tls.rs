//! HTTPS for the starter API, with optional mutual TLS.
//!
//! `CERTFLOW_API_TLS_CERT` and `CERTFLOW_API_TLS_KEY` (PEM files) turn HTTPS on. With
//! `CERTFLOW_API_TLS_CLIENT_CA` as well, the API asks for client certificates: one that is
//! presented must chain to that CA (else the handshake fails), and a client of the clients file
//! whose `tls_client_cn` matches its subject CN is authenticated by it, with no password or
//! token. Callers without a certificate can still use Basic or bearer credentials.

use anyhow::{Context, Result};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The subject CN of the verified client certificate of this connection, if one was presented.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<String>);

pub struct TlsSettings {
    cert: String,
    key: String,
    client_ca: Option<String>,
}

impl TlsSettings {
    pub fn from_env() -> Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("CERTFLOW_API_TLS_CERT"), var("CERTFLOW_API_TLS_KEY")) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert,
                key,
                client_ca: var("CERTFLOW_API_TLS_CLIENT_CA"),
            })),
            (None, None) => {
                anyhow::ensure!(
                    var("CERTFLOW_API_TLS_CLIENT_CA").is_none(),
                    "CERTFLOW_API_TLS_CLIENT_CA needs CERTFLOW_API_TLS_CERT and _KEY"
                );
                Ok(None)
            }
            _ => anyhow::bail!("set both CERTFLOW_API_TLS_CERT and CERTFLOW_API_TLS_KEY"),
        }
    }

    pub fn acceptor(&self) -> Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading CERTFLOW_API_TLS_CERT {}", self.cert))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading CERTFLOW_API_TLS_KEY {}", self.key))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("reading CERTFLOW_API_TLS_CLIENT_CA {path}"))?
                {
                    roots.add(ca?)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The subject CN of a DER certificate.
pub(crate) fn subject_cn(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}
