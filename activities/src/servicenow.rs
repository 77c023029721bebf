//! ServiceNow's Table API, for writing a certificate's state back to the record it came from:
//! `PATCH {instance}/api/now/table/{table}/{sys_id}` with the configured field names.
//!
//! Configuration (environment): `SERVICENOW_INSTANCE` (an instance name such as `acme`, or a
//! base URL), `SERVICENOW_USERNAME`/`SERVICENOW_PASSWORD` for Basic auth or
//! `SERVICENOW_CLIENT_ID`/`SERVICENOW_CLIENT_SECRET` for OAuth client credentials (token from
//! `{instance}/oauth_token.do`), `CERTFLOW_SERVICENOW_TABLE` and `CERTFLOW_SERVICENOW_FIELDS`.

use crate::rest::{
    Auth, AuthError, ClientCredentials, MAX_RETRY_AFTER, Secret, backoff, retry_after,
};
use anyhow::{Context, anyhow, bail};
use certflow_common::servicenow::RecordUpdate;
use reqwest::StatusCode;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use time::macros::format_description;

/// Attempts per update when ServiceNow answers 429 or 5xx; then Temporal retries the activity.
const ATTEMPTS: u32 = 3;

/// certflow's facts and the default ServiceNow field each is written to.
const DEFAULT_FIELDS: &[(&str, &str)] = &[
    ("state", "u_certflow_state"),
    ("serial", "u_certflow_serial"),
    ("not_after", "u_certflow_not_after"),
    ("issuer", "u_certflow_issuer"),
    ("vault_path", "u_certflow_vault_path"),
    ("error", "u_certflow_error"),
];

#[derive(Debug, thiserror::Error)]
pub enum ServiceNowError {
    /// Credentials, permissions or the record itself are wrong: retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// Outage, throttling, network: retry later.
    #[error("ServiceNow is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
}

pub struct ServiceNow {
    http: reqwest::Client,
    base: String,
    table: String,
    /// certflow fact → ServiceNow field name.
    fields: BTreeMap<String, String>,
    auth: Auth,
}

impl ServiceNow {
    /// `None` when `SERVICENOW_INSTANCE` is not set: write-back is off.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(instance) = var("SERVICENOW_INSTANCE") else {
            return Ok(None);
        };
        let base = if instance.contains("://") {
            instance.trim_end_matches('/').to_string()
        } else {
            format!("https://{instance}.service-now.com")
        };
        let auth = match (var("SERVICENOW_USERNAME"), var("SERVICENOW_CLIENT_ID")) {
            (Some(username), None) => Auth::Basic {
                username,
                password: Secret::from_env("SERVICENOW_PASSWORD", "the ServiceNow password")?,
            },
            (None, Some(client_id)) => Auth::ClientCredentials(ClientCredentials::new(
                format!("{base}/oauth_token.do"),
                client_id,
                Secret::from_env("SERVICENOW_CLIENT_SECRET", "the ServiceNow OAuth secret")?,
                None,
                None,
            )),
            _ => bail!("set either SERVICENOW_USERNAME or SERVICENOW_CLIENT_ID (not both)"),
        };
        let table = var("CERTFLOW_SERVICENOW_TABLE").unwrap_or_else(|| "pm_project".into());
        check_name("CERTFLOW_SERVICENOW_TABLE", &table)?;
        let mut fields: BTreeMap<String, String> = DEFAULT_FIELDS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(mapping) = var("CERTFLOW_SERVICENOW_FIELDS") {
            for pair in mapping.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (fact, field) = pair.split_once('=').with_context(|| {
                    format!("CERTFLOW_SERVICENOW_FIELDS: {pair:?} is not fact=field")
                })?;
                let Some(slot) = fields.get_mut(fact.trim()) else {
                    bail!(
                        "CERTFLOW_SERVICENOW_FIELDS: unknown fact {fact:?}; known: {}",
                        DEFAULT_FIELDS
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                };
                check_name("CERTFLOW_SERVICENOW_FIELDS", field.trim())?;
                *slot = field.trim().to_string();
            }
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Some(Self {
            http,
            base,
            table,
            fields,
            auth,
        }))
    }

    /// The PATCH body: each fact under its configured field name; absent facts are cleared.
    pub fn body(&self, update: &RecordUpdate) -> Value {
        let r = &update.report;
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let facts = [
            ("state", state),
            ("serial", r.serial.clone().unwrap_or_default()),
            (
                "not_after",
                r.not_after_unix.map(glide_date_time).unwrap_or_default(),
            ),
            ("issuer", r.issuer.clone()),
            ("vault_path", r.vault_path.clone().unwrap_or_default()),
            ("error", r.error.clone().unwrap_or_default()),
        ];
        let mut body = Map::new();
        for (fact, value) in facts {
            body.insert(self.fields[fact].clone(), Value::String(value));
        }
        Value::Object(body)
    }

    /// Writes one report to the record.
    pub async fn update(&self, update: &RecordUpdate) -> Result<(), ServiceNowError> {
        let url = format!(
            "{}/api/now/table/{}/{}",
            self.base, self.table, update.record.sys_id
        );
        let body = self.body(update);
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = self
                .http
                .patch(&url)
                .header("accept", "application/json")
                .json(&body);
            let request = self
                .auth
                .apply(&self.http, request)
                .await
                .map_err(|e| match e {
                    AuthError::Refused(m) => ServiceNowError::Refused(m),
                    AuthError::Unavailable(e) => ServiceNowError::Unavailable(e),
                })?;
            let (failure, wait) = match request.send().await {
                Err(e) => (format!("no answer ({e})"), backoff(attempt)),
                Ok(response) => match response.status() {
                    s if s.is_success() => return Ok(()),
                    StatusCode::UNAUTHORIZED if !refreshed && self.auth.refresh().await => {
                        refreshed = true;
                        continue;
                    }
                    s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                        return Err(ServiceNowError::Refused(format!(
                            "ServiceNow refused certflow's credentials or permissions (HTTP {s}) updating {} {}",
                            self.table, update.record.number
                        )));
                    }
                    StatusCode::NOT_FOUND => {
                        return Err(ServiceNowError::Refused(format!(
                            "ServiceNow has no record {} ({}) in table {}",
                            update.record.number, update.record.sys_id, self.table
                        )));
                    }
                    s @ StatusCode::TOO_MANY_REQUESTS => {
                        let wait = retry_after(response.headers()).unwrap_or(backoff(attempt));
                        (format!("HTTP {s}"), wait.min(MAX_RETRY_AFTER))
                    }
                    s if s.is_server_error() => (format!("HTTP {s}"), backoff(attempt)),
                    s => {
                        let text = response.text().await.unwrap_or_default();
                        return Err(ServiceNowError::Refused(format!(
                            "ServiceNow answered HTTP {s} updating {}: {}",
                            update.record.number,
                            text.chars().take(300).collect::<String>()
                        )));
                    }
                },
            };
            if attempt >= ATTEMPTS {
                return Err(ServiceNowError::Unavailable(anyhow!(
                    "{failure} after {attempt} attempts"
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Table and field names: ServiceNow's own identifiers (letters, digits, `_`).
fn check_name(variable: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 80
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("{variable}: {name:?} is not a ServiceNow table or field name");
    }
    Ok(())
}

/// ServiceNow's glide date-time format, in UTC: `2026-11-29 13:45:00`.
fn glide_date_time(unix: i64) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_use_the_glide_format() {
        assert_eq!(glide_date_time(1_796_000_000), "2026-11-30 00:53:20");
    }

    #[test]
    fn names_are_servicenow_identifiers() {
        assert!(check_name("T", "x_custom_project").is_ok());
        assert!(check_name("T", "pm_project/../sys_user").is_err());
        assert!(check_name("T", "").is_err());
    }
}
