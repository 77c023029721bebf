//! What the REST integrations (Keyfactor Command, ServiceNow) share: credentials that never
//! print, HTTP Basic or OAuth 2.0 client-credentials auth with the token cached until shortly
//! before it expires, and the Retry-After and backoff rules.

use anyhow::anyhow;
use reqwest::RequestBuilder;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Tokens are fetched again this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Longest Retry-After honoured inside one call; longer waits go back to Temporal's retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A credential read from the environment; never printed.
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn from_env(name: &str, what: &str) -> anyhow::Result<Self> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret)
            .ok_or_else(|| anyhow!("environment variable {name} ({what}) is not set"))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why authentication could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The identity provider refused the credentials: retrying will not help.
    #[error("{0}")]
    Refused(String),
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
}

pub enum Auth {
    Basic { username: String, password: Secret },
    ClientCredentials(ClientCredentials),
}

/// OAuth 2.0 client credentials, with the access token cached.
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub audience: Option<String>,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl ClientCredentials {
    pub fn new(
        token_url: String,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        audience: Option<String>,
    ) -> Self {
        Self {
            token_url,
            client_id,
            client_secret,
            scope,
            audience,
            cached: Mutex::new(None),
        }
    }

    /// The cached token, fetched again when missing or about to expire.
    async fn token(&self, http: &reqwest::Client) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((value, expires)) = cached.as_ref()
            && Instant::now() + TOKEN_MARGIN < *expires
        {
            return Ok(Secret(value.0.clone()));
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        let response = http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(anyhow!("OAuth token endpoint: {e}")))?;
        let status = response.status();
        if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
            return Err(AuthError::Refused(format!(
                "the OAuth token endpoint refused certflow's client credentials (HTTP {status})"
            )));
        }
        if !status.is_success() {
            return Err(AuthError::Unavailable(anyhow!(
                "OAuth token endpoint answered HTTP {status}"
            )));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(anyhow!("OAuth token response: {e}")))?;
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(300));
        *cached = Some((Secret(body.access_token.clone()), Instant::now() + lifetime));
        Ok(Secret(body.access_token))
    }
}

impl Auth {
    /// Adds the credentials to `request`.
    pub async fn apply(
        &self,
        http: &reqwest::Client,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, AuthError> {
        Ok(match self {
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            Auth::ClientCredentials(oauth) => request.bearer_auth(oauth.token(http).await?.0),
        })
    }

    /// After a 401: drops a cached token so the next call fetches a new one. Returns whether
    /// trying again can help (only with OAuth, whose token may have been revoked early).
    pub async fn refresh(&self) -> bool {
        match self {
            Auth::Basic { .. } => false,
            Auth::ClientCredentials(oauth) => {
                *oauth.cached.lock().await = None;
                true
            }
        }
    }
}

/// Exponential backoff inside one call: 1 s, 2 s, 4 s, …
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(attempt.min(6)))
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
    }
}
