//! Refuses a client CA that is one of certflow's own issuers.
//!
//! If the CA that authenticates API clients also signs the certificates certflow issues, a
//! tenant could request a certificate naming another client and log in as it. So before the
//! API serves mutual TLS, it compares the client CA bundle with the CA certificates of every
//! configured issuer, by public key: a match anywhere (root or intermediate) stops start-up.
//!
//! Vault PKI issuers are read from Vault's unauthenticated `LIST <mount>/issuers` and
//! `GET <mount>/issuer/<id>/json` (every issuer of the mount, with its chain); other issuers
//! name a `ca_certificates_file`. An issuer whose CA cannot be read stops start-up too.

use anyhow::{Context, Result, bail};
use certflow_common::{IssuerConfig, IssuersConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

/// Why a client CA is not used.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaRefused {
    /// It is one of certflow's own CAs: never.
    #[error("{0}")]
    OwnIssuer(String),
    /// An issuer's CA certificates could not be read (Vault down, a file missing): not now.
    #[error("{0:#}")]
    CannotCheck(anyhow::Error),
}

pub async fn refuse_own_issuer_as_client_ca(
    client_ca: &[CertificateDer<'_>],
    issuers: &IssuersConfig,
) -> Result<(), ClientCaRefused> {
    let client_keys: Vec<(Vec<u8>, String)> = client_ca
        .iter()
        .filter_map(|der| key_and_subject(der))
        .collect();
    for (name, issuer) in &issuers.issuers {
        let certificates = match issuer {
            IssuerConfig::VaultPki(vault) => vault_pki_certificates(&vault.mount)
                .await
                .with_context(|| {
                    format!("reading the CA certificates of issuer {name} from Vault, to check the client CA is not one of them")
                }),
            IssuerConfig::AwsPrivateCa(aws) => file_certificates(name, aws.ca_certificates_file.as_deref()),
            IssuerConfig::KeyfactorCommand(kf) => file_certificates(name, kf.ca_certificates_file.as_deref()),
        }
        .map_err(ClientCaRefused::CannotCheck)?;
        for der in &certificates {
            let Some((key, _)) = key_and_subject(der) else {
                continue;
            };
            if let Some((_, subject)) = client_keys.iter().find(|(k, _)| *k == key) {
                return Err(ClientCaRefused::OwnIssuer(format!(
                    "CERTFLOW_API_TLS_CLIENT_CA holds {subject}, a CA of certflow's own issuer {name}: \
                     a tenant could request a certificate naming another client and log in as it. \
                     Use a CA that certflow does not issue from"
                )));
            }
        }
    }
    Ok(())
}

/// The subject public key (DER) and subject of a certificate.
fn key_and_subject(der: &[u8]) -> Option<(Vec<u8>, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((cert.public_key().raw.to_vec(), cert.subject().to_string()))
}

fn file_certificates(issuer: &str, path: Option<&str>) -> Result<Vec<CertificateDer<'static>>> {
    let Some(path) = path else {
        bail!(
            "issuers.{issuer}.ca_certificates_file is needed with CERTFLOW_API_TLS_CLIENT_CA: \
             the API checks that the client CA is not one of certflow's own issuers"
        );
    };
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading issuers.{issuer}.ca_certificates_file {path}"))
}

#[derive(Deserialize)]
struct Listed {
    data: ListedKeys,
}

#[derive(Deserialize)]
struct ListedKeys {
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct IssuerJson {
    data: IssuerData,
}

#[derive(Deserialize)]
struct IssuerData {
    certificate: String,
    #[serde(default)]
    ca_chain: Vec<String>,
}

/// Every issuer certificate of a Vault PKI mount, with its chain. Uses `VAULT_ADDR`,
/// `VAULT_CACERT` and `VAULT_NAMESPACE`; no token (these endpoints are unauthenticated).
async fn vault_pki_certificates(mount: &str) -> Result<Vec<CertificateDer<'static>>> {
    let addr = std::env::var("VAULT_ADDR")
        .ok()
        .filter(|a| !a.is_empty())
        .context("VAULT_ADDR is not set")?;
    let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Ok(ca) = std::env::var("VAULT_CACERT")
        && !ca.is_empty()
    {
        let pem = std::fs::read(&ca).with_context(|| format!("reading VAULT_CACERT {ca}"))?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let http = http.build()?;
    let namespace = std::env::var("VAULT_NAMESPACE").unwrap_or_default();
    let get = |path: String| {
        let mut request = http.get(format!("{}/v1/{mount}/{path}", addr.trim_end_matches('/')));
        if !namespace.is_empty() {
            request = request.header("X-Vault-Namespace", &namespace);
        }
        request
    };
    let listed: Listed = get("issuers?list=true".into())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut certificates = Vec::new();
    for id in listed.data.keys {
        let issuer: IssuerJson = get(format!("issuer/{id}/json"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for pem in std::iter::once(&issuer.data.certificate).chain(&issuer.data.ca_chain) {
            certificates.push(
                CertificateDer::from_pem_slice(pem.as_bytes())
                    .with_context(|| format!("issuer {id}'s certificate from Vault"))?,
            );
        }
    }
    Ok(certificates)
}
