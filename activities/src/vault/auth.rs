//! Vault authentication that lasts as long as the worker.
//!
//! A token is renewed before it expires; a method that can log in (AppRole, JWT/OIDC,
//! Kubernetes, TLS certificate) logs in again when renewal is impossible or Vault rejects the
//! token; a token file (a Vault Agent sink) is read again whenever it changes. A keeper task
//! checks the token every few seconds, so a token revoked behind the worker's back is noticed
//! and replaced. The state is exported as metrics and as the worker's readiness.
//!
//! Configuration follows Vault's own variables (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT`,
//! `VAULT_NAMESPACE`, `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY`) plus `CERTFLOW_VAULT_AUTH` and
//! the method's own settings (see [`AuthMethod::from_env`]).

use super::{Vault, VaultError};
use crate::rest::Secret;
use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How often the keeper checks the token, and re-reads a token file.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// A token is renewed once less than this fraction of its lifetime is left.
const RENEW_WHEN_LEFT: f64 = 0.5;

/// How the worker authenticates to Vault.
#[derive(Clone)]
pub enum AuthMethod {
    /// `VAULT_TOKEN`: a token handed over; renewed while renewable, never replaced.
    Token(Secret),
    /// `CERTFLOW_VAULT_TOKEN_FILE`: a file holding the token (a Vault Agent sink), read
    /// again when it changes; the agent renews it.
    TokenFile(PathBuf),
    /// AppRole: `CERTFLOW_VAULT_ROLE_ID` (or `_ROLE_ID_FILE`) and
    /// `CERTFLOW_VAULT_SECRET_ID_FILE`.
    AppRole {
        mount: String,
        role_id: String,
        secret_id_file: PathBuf,
    },
    /// JWT/OIDC: `CERTFLOW_VAULT_ROLE` and the JWT in `CERTFLOW_VAULT_JWT_FILE`.
    Jwt {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
    /// Kubernetes: `CERTFLOW_VAULT_ROLE`, the service account token in
    /// `CERTFLOW_VAULT_JWT_FILE` (default the pod's own).
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
    /// TLS certificate: `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY`, optionally the certificate
    /// role `CERTFLOW_VAULT_ROLE`.
    Cert { mount: String, name: String },
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AuthMethod {
    /// `CERTFLOW_VAULT_AUTH` (`token`, `token-file`, `approle`, `jwt`, `kubernetes`, `cert`);
    /// without it, `VAULT_TOKEN` or else `CERTFLOW_VAULT_TOKEN_FILE`. Nothing configured is an
    /// error: the worker never runs without a way to authenticate.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &str| var(name).with_context(|| format!("{name} is not set"));
        let mount = |default: &str| var("CERTFLOW_VAULT_AUTH_MOUNT").unwrap_or(default.into());
        let method = match var("CERTFLOW_VAULT_AUTH") {
            Some(m) => m,
            None if var("VAULT_TOKEN").is_some() => "token".into(),
            None if var("CERTFLOW_VAULT_TOKEN_FILE").is_some() => "token-file".into(),
            None => bail!(
                "no Vault authentication: set VAULT_TOKEN, CERTFLOW_VAULT_TOKEN_FILE or CERTFLOW_VAULT_AUTH"
            ),
        };
        Ok(match method.as_str() {
            "token" => Self::Token(Secret::from_env("VAULT_TOKEN", "Vault token")?),
            "token-file" => Self::TokenFile(required("CERTFLOW_VAULT_TOKEN_FILE")?.into()),
            "approle" => Self::AppRole {
                mount: mount("approle"),
                role_id: match var("CERTFLOW_VAULT_ROLE_ID") {
                    Some(id) => id,
                    None => read_trimmed(&required("CERTFLOW_VAULT_ROLE_ID_FILE")?.into())?,
                },
                secret_id_file: required("CERTFLOW_VAULT_SECRET_ID_FILE")?.into(),
            },
            "jwt" | "oidc" => Self::Jwt {
                mount: mount("jwt"),
                role: required("CERTFLOW_VAULT_ROLE")?,
                jwt_file: required("CERTFLOW_VAULT_JWT_FILE")?.into(),
            },
            "kubernetes" => Self::Kubernetes {
                mount: mount("kubernetes"),
                role: required("CERTFLOW_VAULT_ROLE")?,
                jwt_file: var("CERTFLOW_VAULT_JWT_FILE")
                    .unwrap_or("/var/run/secrets/kubernetes.io/serviceaccount/token".into())
                    .into(),
            },
            "cert" => {
                required("VAULT_CLIENT_CERT")?;
                required("VAULT_CLIENT_KEY")?;
                Self::Cert {
                    mount: mount("cert"),
                    name: var("CERTFLOW_VAULT_ROLE").unwrap_or_default(),
                }
            }
            other => bail!(
                "CERTFLOW_VAULT_AUTH={other:?}: use token, token-file, approle, jwt, kubernetes or cert"
            ),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::TokenFile(_) => "token-file",
            Self::AppRole { .. } => "approle",
            Self::Jwt { .. } => "jwt",
            Self::Kubernetes { .. } => "kubernetes",
            Self::Cert { .. } => "cert",
        }
    }

    fn can_log_in(&self) -> bool {
        !matches!(self, Self::Token(_) | Self::TokenFile(_))
    }
}

fn read_trimmed(path: &PathBuf) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(text)
}

/// What the keeper knows about the token in use.
#[derive(Debug, Clone)]
pub struct AuthStatus {
    /// Vault accepted the token at the last check.
    pub ok: bool,
    /// When it expires (`None`: never, or unknown), and the lifetime it was given.
    pub expires_at: Option<Instant>,
    pub ttl_seconds: Option<u64>,
    pub renewable: bool,
    /// Why the last check, renewal or login failed.
    pub last_error: Option<String>,
    /// The token file's modification time when it was last read.
    file_stamp: Option<SystemTime>,
}

impl Default for AuthStatus {
    fn default() -> Self {
        Self {
            ok: false,
            expires_at: None,
            ttl_seconds: None,
            renewable: false,
            last_error: Some("not authenticated yet".into()),
            file_stamp: None,
        }
    }
}

/// Why a token was not renewed.
enum Renewal {
    /// Vault refused (or gave too little): a login is due.
    Refused(anyhow::Error),
    /// Vault could not be asked: the token may be fine.
    Unreachable(anyhow::Error),
}

#[derive(Deserialize)]
struct LookupSelf {
    /// Seconds left, and the lifetime it was created (or last renewed) with.
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    creation_ttl: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct AuthAnswer {
    auth: AuthBody,
}

#[derive(Deserialize)]
struct AuthBody {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

impl Vault {
    /// Obtains a first token (login, file, or the token given) and checks it with Vault.
    pub async fn authenticate(&self) -> Result<()> {
        match &self.method {
            AuthMethod::Token(_) => self
                .check()
                .await
                .map_err(|e| anyhow!("Vault rejects the worker's token: {e}")),
            AuthMethod::TokenFile(path) => self.reload_file(path, true).await,
            _ => self.log_in().await,
        }
    }

    /// Runs for the worker's life: keeps the token valid.
    pub fn spawn_keeper(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                if let Err(e) = self.keep().await {
                    tracing::warn!(error = %format!("{e:#}"), method = self.method.name(), "Vault authentication");
                    self.set_failed(format!("{e:#}"));
                }
            }
        });
    }

    /// One round of the keeper: a changed token file is read; a token close to expiry is
    /// renewed (or replaced by a login when it cannot be); a token Vault rejects is replaced.
    async fn keep(&self) -> Result<()> {
        if let AuthMethod::TokenFile(path) = &self.method {
            self.reload_file(path, false).await?;
        }
        let status = self.auth_status();
        let due = match (status.expires_at, status.ttl_seconds) {
            (Some(at), Some(ttl)) => {
                let left = at.saturating_duration_since(Instant::now()).as_secs_f64();
                left < ttl as f64 * RENEW_WHEN_LEFT || left < 2.0 * CHECK_EVERY.as_secs_f64()
            }
            _ => false,
        };
        if due {
            let renewal = match status.renewable {
                true => self.renew().await,
                false => Err(Renewal::Refused(anyhow!("the token is not renewable"))),
            };
            match renewal {
                Ok(()) => {}
                // Vault could not be asked: the token may be fine; ask again next round.
                Err(Renewal::Unreachable(e)) => return Err(e),
                Err(Renewal::Refused(_)) if self.method.can_log_in() => return self.log_in().await,
                Err(Renewal::Refused(e)) => return Err(e),
            }
        }
        match self.check().await {
            // A login only when Vault rejects the token: a network error or a sealed Vault
            // says nothing about it (and each login spends one use of a bounded secret_id).
            Err(VaultError::Denied(e)) if self.method.can_log_in() => {
                tracing::warn!(error = %e, "Vault rejects the token; logging in again");
                self.log_in().await
            }
            Err(VaultError::Denied(e)) => Err(anyhow!("Vault rejects the worker's token: {e}")),
            Err(e) => Err(anyhow!("checking the worker's token with Vault: {e}")),
            Ok(()) => Ok(()),
        }
    }

    /// Looks the token up (`auth/token/lookup-self`) and records its remaining lifetime.
    async fn check(&self) -> Result<(), VaultError> {
        let lookup: LookupSelf = self
            .raw(reqwest::Method::GET, "auth/token/lookup-self", None)
            .await?;
        let lifetime = lookup.creation_ttl.max(lookup.ttl);
        self.set_valid(lookup.ttl, lifetime, lookup.renewable);
        Ok(())
    }

    async fn renew(&self) -> Result<(), Renewal> {
        let answer: serde_json::Value = self
            .raw_full(
                reqwest::Method::POST,
                "auth/token/renew-self",
                Some(&serde_json::json!({})),
            )
            .await
            .map_err(|e| match e {
                VaultError::Denied(_) | VaultError::Rejected(_) => {
                    Renewal::Refused(anyhow!("renewing the token: {e}"))
                }
                _ => Renewal::Unreachable(anyhow!("renewing the token: {e}")),
            })?;
        let auth: AuthBody = serde_json::from_value(answer["auth"].clone())
            .context("the answer to renew-self has no auth")
            .map_err(Renewal::Unreachable)?;
        let previous = self.auth_status().ttl_seconds.unwrap_or(0);
        // A token near its max TTL is renewed for less than asked: log in again instead.
        if auth.lease_duration > 0 && auth.lease_duration < previous / 2 {
            return Err(Renewal::Refused(anyhow!(
                "renewal gave only {} s",
                auth.lease_duration
            )));
        }
        self.set_valid(auth.lease_duration, auth.lease_duration, auth.renewable);
        crate::metrics::VAULT_AUTH
            .with_label_values(&["renewal", "ok"])
            .inc();
        tracing::info!(ttl = auth.lease_duration, "Vault token renewed");
        Ok(())
    }

    /// Logs in with the configured method and switches every later call to the new token.
    async fn log_in(&self) -> Result<()> {
        let (path, body) = match &self.method {
            AuthMethod::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => (
                format!("auth/{mount}/login"),
                serde_json::json!({"role_id": role_id, "secret_id": read_trimmed(secret_id_file)?}),
            ),
            AuthMethod::Jwt {
                mount,
                role,
                jwt_file,
            }
            | AuthMethod::Kubernetes {
                mount,
                role,
                jwt_file,
            } => (
                format!("auth/{mount}/login"),
                serde_json::json!({"role": role, "jwt": read_trimmed(jwt_file)?}),
            ),
            AuthMethod::Cert { mount, name } => (
                format!("auth/{mount}/login"),
                if name.is_empty() {
                    serde_json::json!({})
                } else {
                    serde_json::json!({"name": name})
                },
            ),
            AuthMethod::Token(_) | AuthMethod::TokenFile(_) => bail!("this method cannot log in"),
        };
        let answer = self.login_call(&path, &body).await;
        let outcome = if answer.is_ok() { "ok" } else { "error" };
        crate::metrics::VAULT_AUTH
            .with_label_values(&["login", outcome])
            .inc();
        let auth =
            answer.map_err(|e| anyhow!("logging in to Vault ({}): {e}", self.method.name()))?;
        let previous = self.current_token();
        self.use_token(Secret::new(auth.auth.client_token))?;
        // The token this login replaces is of no more use: revoked, not left to expire.
        if !previous.expose().is_empty() {
            self.revoke_token(previous).await;
        }
        let ttl = auth.auth.lease_duration;
        self.set_valid(ttl, ttl, auth.auth.renewable);
        tracing::info!(
            method = self.method.name(),
            ttl = auth.auth.lease_duration,
            "logged in to Vault"
        );
        Ok(())
    }

    async fn login_call(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<AuthAnswer, VaultError> {
        let answer = self
            .raw_unauthenticated(reqwest::Method::POST, path, body)
            .await?;
        serde_json::from_value(answer).map_err(|e| {
            VaultError::Unavailable(anyhow::Error::new(e).context("unexpected login answer"))
        })
    }

    /// Reads the token file if it changed since the last read (or always with `force`).
    async fn reload_file(&self, path: &PathBuf, force: bool) -> Result<()> {
        let stamp = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading the token file {}", path.display()))?;
        if !force && self.auth_status().file_stamp == Some(stamp) {
            return Ok(());
        }
        let token = read_trimmed(path)?;
        self.use_token(Secret::new(token))?;
        self.status.lock().unwrap().file_stamp = Some(stamp);
        tracing::info!(file = %path.display(), "Vault token read from its file");
        self.check()
            .await
            .map_err(|e| anyhow!("Vault rejects the worker's token: {e}"))
    }

    /// Revokes a token a login replaced (best effort: it expires anyway).
    async fn revoke_token(&self, token: Secret) {
        let revoked = self
            .call(
                reqwest::Method::POST,
                "auth/token/revoke-self",
                Some(&serde_json::json!({})),
                Some(token.expose()),
            )
            .await;
        match revoked {
            Ok(_) => tracing::info!("the previous Vault token was revoked"),
            Err(e) => tracing::info!(error = %e, "the previous Vault token could not be revoked"),
        }
    }

    pub fn auth_status(&self) -> AuthStatus {
        self.status.lock().unwrap().clone()
    }

    /// Vault accepts the token: `ttl` seconds left of a `lifetime` (0: never expires).
    fn set_valid(&self, ttl: u64, lifetime: u64, renewable: bool) {
        let mut s = self.status.lock().unwrap();
        s.ok = true;
        s.ttl_seconds = (lifetime > 0).then_some(lifetime);
        s.expires_at = (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl));
        s.renewable = renewable;
        s.last_error = None;
        crate::metrics::VAULT_AUTH_OK.set(1);
        crate::metrics::VAULT_TOKEN_TTL.set(ttl as i64);
    }

    fn set_failed(&self, error: String) {
        let mut s = self.status.lock().unwrap();
        s.ok = false;
        s.last_error = Some(error);
        crate::metrics::VAULT_AUTH_OK.set(0);
    }
}
