//! HTTPS for the starter API, with optional mutual TLS.
//!
//! `CERTFLOW_API_TLS_CERT` and `CERTFLOW_API_TLS_KEY` (PEM files) turn HTTPS on. With
//! `CERTFLOW_API_TLS_CLIENT_CA` as well, the API asks for client certificates: one that is
//! presented must chain to that CA (else the handshake fails), and must not be revoked by
//! `CERTFLOW_API_TLS_CLIENT_CRL` if that is set. Which client a certificate authenticates is
//! decided in `identity.rs`. Callers without a certificate can still use Basic or bearer
//! credentials.
//!
//! The files are read again when they change (a renewed server certificate, a new CRL), so
//! nothing needs a restart; a set of files that does not load keeps the previous one in use.

use crate::identity::PeerIdentity;
use anyhow::{Context, Result};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// The verified client certificate of this connection, if one was presented.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<PeerIdentity>);

/// How often the files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct TlsSettings {
    cert: String,
    key: String,
    client_ca: Option<String>,
    client_crls: Vec<String>,
}

impl TlsSettings {
    pub fn from_env() -> Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let client_crls: Vec<String> = var("CERTFLOW_API_TLS_CLIENT_CRL")
            .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default();
        match (var("CERTFLOW_API_TLS_CERT"), var("CERTFLOW_API_TLS_KEY")) {
            (Some(cert), Some(key)) => {
                let client_ca = var("CERTFLOW_API_TLS_CLIENT_CA");
                anyhow::ensure!(
                    client_ca.is_some() || client_crls.is_empty(),
                    "CERTFLOW_API_TLS_CLIENT_CRL needs CERTFLOW_API_TLS_CLIENT_CA"
                );
                Ok(Some(Self {
                    cert,
                    key,
                    client_ca,
                    client_crls,
                }))
            }
            (None, None) => {
                anyhow::ensure!(
                    var("CERTFLOW_API_TLS_CLIENT_CA").is_none() && client_crls.is_empty(),
                    "CERTFLOW_API_TLS_CLIENT_CA and _CLIENT_CRL need CERTFLOW_API_TLS_CERT and _KEY"
                );
                Ok(None)
            }
            _ => anyhow::bail!("set both CERTFLOW_API_TLS_CERT and CERTFLOW_API_TLS_KEY"),
        }
    }

    /// The client CA certificates, if mutual TLS is on.
    pub fn client_ca_certificates(&self) -> Result<Vec<CertificateDer<'static>>> {
        let Some(path) = &self.client_ca else {
            return Ok(Vec::new());
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading CERTFLOW_API_TLS_CLIENT_CA {path}"))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "CERTFLOW_API_TLS_CLIENT_CA {path} holds no certificate"
        );
        Ok(certs)
    }

    fn acceptor(&self) -> Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading CERTFLOW_API_TLS_CERT {}", self.cert))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading CERTFLOW_API_TLS_KEY {}", self.key))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.client_ca.is_some() {
            let mut roots = RootCertStore::empty();
            for ca in self.client_ca_certificates()? {
                roots.add(ca)?;
            }
            let mut crls = Vec::new();
            for path in &self.client_crls {
                let found = CertificateRevocationListDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("reading CERTFLOW_API_TLS_CLIENT_CRL {path}"))?;
                anyhow::ensure!(
                    !found.is_empty(),
                    "CERTFLOW_API_TLS_CLIENT_CRL {path} holds no CRL"
                );
                crls.extend(found);
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated();
            if !crls.is_empty() {
                // A client certificate whose issuer has no CRL here, or whose CRL is past its
                // next update, is refused: revocation status unknown is not "good".
                verifier = verifier
                    .with_crls(crls)
                    .only_check_end_entity_revocation()
                    .enforce_revocation_expiration();
            }
            builder.with_client_cert_verifier(verifier.build()?)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn files(&self) -> impl Iterator<Item = &String> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(&self.client_ca)
            .chain(&self.client_crls)
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.files()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// The TLS configuration in use, loaded again when one of its files changes.
pub struct ReloadingAcceptor {
    current: RwLock<TlsAcceptor>,
}

impl ReloadingAcceptor {
    /// Loads the files now (an error stops start-up) and watches them from then on.
    pub fn start(settings: TlsSettings) -> Result<Arc<Self>> {
        let mut stamp = settings.modified();
        let this = Arc::new(Self {
            current: RwLock::new(settings.acceptor().context("TLS configuration")?),
        });
        let watched = Arc::downgrade(&this);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_CHECK).await;
                let Some(this) = watched.upgrade() else {
                    return;
                };
                let now = settings.modified();
                if now == stamp {
                    continue;
                }
                match settings.acceptor() {
                    Ok(acceptor) => {
                        *this.current.write().expect("TLS lock") = acceptor;
                        stamp = now;
                        tracing::info!(
                            "TLS files changed: certificate, client CA and CRL reloaded"
                        );
                    }
                    // Half-written files are normal while they are being replaced: try again.
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "TLS files changed but do not load; keeping the previous ones")
                    }
                }
            }
        });
        Ok(this)
    }

    pub fn current(&self) -> TlsAcceptor {
        self.current.read().expect("TLS lock").clone()
    }
}
