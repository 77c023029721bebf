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

use crate::access::identity::PeerIdentity;
use crate::access::own_issuers::ClientCaRefused;
use anyhow::{Context, Result};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// The client certificate of this connection, if one was presented and verified. A
/// connection outlives a CRL reload (keep-alive, HTTP/2): each request asks [`Self::identity`],
/// which checks the certificate again against the configuration now in use if it changed since
/// the handshake, so a revoked certificate stops working on open connections too.
#[derive(Clone)]
pub struct PeerCertificate {
    identity: Option<PeerIdentity>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    generation: u64,
    tls: Arc<ReloadingAcceptor>,
}

impl PeerCertificate {
    /// The certificate of a handshake made with configuration `generation` of `tls`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        generation: u64,
        tls: Arc<ReloadingAcceptor>,
    ) -> Self {
        Self {
            identity: chain.first().and_then(|der| PeerIdentity::from_der(der)),
            chain: Arc::new(chain),
            generation,
            tls,
        }
    }

    /// Who the certificate names, if it still verifies.
    pub fn identity(&self) -> Option<PeerIdentity> {
        let identity = self.identity.clone()?;
        let (generation, verifier) = self.tls.verifier();
        if generation == self.generation {
            return Some(identity);
        }
        let (end_entity, intermediates) = self.chain.split_first()?;
        let verifier = verifier?;
        match verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
            Ok(_) => Some(identity),
            Err(e) => {
                tracing::info!(error = %e, "client certificate no longer verifies (new CA or CRL)");
                None
            }
        }
    }
}

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

    fn acceptor(&self) -> Result<Loaded> {
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
            let verifier = verifier.build()?;
            (
                builder.with_client_cert_verifier(verifier.clone()),
                Some(verifier),
            )
        } else {
            (builder.with_no_client_auth(), None)
        };
        let (builder, verifier) = builder;
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Loaded {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            verifier,
            generation: 0,
        })
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

/// One loaded configuration: the acceptor, its client certificate verifier, and its number.
#[derive(Clone)]
struct Loaded {
    acceptor: TlsAcceptor,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    generation: u64,
}

/// The TLS configuration in use, loaded again when one of its files changes.
pub struct ReloadingAcceptor {
    current: RwLock<Loaded>,
}

impl ReloadingAcceptor {
    /// Loads the files now (an error stops start-up) and watches them from then on. A new client
    /// CA passes `check` (that it is none of certflow's own CAs) before it is used.
    pub fn start<F, Fut>(settings: TlsSettings, check: F) -> Result<Arc<Self>>
    where
        F: Fn(Vec<CertificateDer<'static>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), ClientCaRefused>> + Send,
    {
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
                let loaded = match settings.acceptor() {
                    Ok(loaded) => loaded,
                    // Half-written files are normal while they are being replaced: try again.
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "TLS files changed but do not load; keeping the previous ones");
                        continue;
                    }
                };
                let client_ca = settings.client_ca_certificates().unwrap_or_default();
                if !client_ca.is_empty() {
                    match check(client_ca).await {
                        Ok(()) => {}
                        Err(e @ ClientCaRefused::OwnIssuer(_)) => {
                            tracing::error!(error = %e, "the new client CA is refused; keeping the previous TLS configuration");
                            stamp = now;
                            continue;
                        }
                        // Vault down, say: the files stay changed, and the check is tried
                        // again at the next look.
                        Err(e @ ClientCaRefused::CannotCheck(_)) => {
                            tracing::warn!(error = %e, "the new client CA cannot be checked yet; keeping the previous TLS configuration and trying again");
                            continue;
                        }
                    }
                }
                let mut current = this.current.write().expect("TLS lock");
                let generation = current.generation + 1;
                *current = Loaded {
                    generation,
                    ..loaded
                };
                stamp = now;
                tracing::info!(
                    generation,
                    "TLS files changed: certificate, client CA and CRL reloaded"
                );
            }
        });
        Ok(this)
    }

    /// The acceptor for a new connection, and the configuration's number.
    pub fn current(&self) -> (TlsAcceptor, u64) {
        let current = self.current.read().expect("TLS lock");
        (current.acceptor.clone(), current.generation)
    }

    fn verifier(&self) -> (u64, Option<Arc<dyn ClientCertVerifier>>) {
        let current = self.current.read().expect("TLS lock");
        (current.generation, current.verifier.clone())
    }
}
