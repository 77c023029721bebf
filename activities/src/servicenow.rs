//! ServiceNow's Table API, for writing a certificate's state back to the record it came from:
//! `PATCH {instance}/api/now/table/{table}/{sys_id}` with the configured field names.
//!
//! Configuration (environment): `SERVICENOW_INSTANCE` (an instance name such as `acme`, or a
//! base URL), `SERVICENOW_USERNAME`/`SERVICENOW_PASSWORD` for Basic auth or
//! `SERVICENOW_CLIENT_ID`/`SERVICENOW_CLIENT_SECRET` for OAuth client credentials (token from
//! `{instance}/oauth_token.do`), `CERTFLOW_SERVICENOW_TABLE` and `CERTFLOW_SERVICENOW_FIELDS`.
//!
//! Tenants are kept apart: only the tenants in `CERTFLOW_SERVICENOW_TENANTS` (default: the
//! `default` tenant alone) write back, and before every write the record is read to check that it
//! is the one the request named (its `number`) and, with `CERTFLOW_SERVICENOW_TENANT_FIELD`, that
//! it belongs to the tenant. Several tenants on one instance need that field: without it a tenant
//! could name another tenant's `sys_id`.

use crate::rest::{
    Auth, AuthError, ClientCredentials, MAX_RETRY_AFTER, Secret, backoff, retry_after,
};
use anyhow::{Context, anyhow, bail};
use certflow_common::DEFAULT_TENANT;
use certflow_common::servicenow::{
    DEFAULT_GIVE_UP_SECONDS, DEFAULT_RETRY_REFUSED_SECONDS, RecordUpdate, WriteBack,
};
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
    /// The record is not the tenant's to write: never written.
    #[error("{0}")]
    Forbidden(String),
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
    /// Tenant → the value its records hold in `tenant_field` (the tenant's name unless mapped).
    tenants: BTreeMap<String, String>,
    tenant_field: Option<String>,
    write_back: WriteBack,
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
        let tenant_field = var("CERTFLOW_SERVICENOW_TENANT_FIELD");
        if let Some(field) = &tenant_field {
            check_name("CERTFLOW_SERVICENOW_TENANT_FIELD", field)?;
        }
        let tenants = parse_tenants(
            var("CERTFLOW_SERVICENOW_TENANTS").as_deref(),
            tenant_field.is_some(),
        )?;
        let seconds = |name: &str, default: u64| -> anyhow::Result<u64> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=365 * 86_400).contains(n))
                    .with_context(|| {
                        format!("{name}: {v:?} is not a number of seconds (1 to a year)")
                    }),
            }
        };
        let write_back = WriteBack {
            give_up_after_seconds: seconds(
                "CERTFLOW_SERVICENOW_GIVE_UP_SECONDS",
                DEFAULT_GIVE_UP_SECONDS,
            )?,
            retry_refused_seconds: seconds(
                "CERTFLOW_SERVICENOW_RETRY_SECONDS",
                DEFAULT_RETRY_REFUSED_SECONDS,
            )?,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Some(Self {
            http,
            base,
            table,
            fields,
            auth,
            tenants,
            tenant_field,
            write_back,
        }))
    }

    /// How this worker writes back for `tenant`; `None` if it does not.
    pub fn write_back_for(&self, tenant: &str) -> Option<WriteBack> {
        self.tenants
            .contains_key(tenant)
            .then(|| self.write_back.clone())
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

    /// Writes one report to the record, once the record is checked to be the tenant's.
    pub async fn update(&self, update: &RecordUpdate) -> Result<(), ServiceNowError> {
        let url = format!(
            "{}/api/now/table/{}/{}",
            self.base, self.table, update.record.sys_id
        );
        self.check_owner(&url, update).await?;
        let body = self.body(update);
        self.call(update, || self.http.patch(&url).json(&body))
            .await
            .map(drop)
    }

    /// The record must be the one the request named, and the tenant's.
    async fn check_owner(&self, url: &str, update: &RecordUpdate) -> Result<(), ServiceNowError> {
        let tenant = update.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        let Some(expected) = self.tenants.get(tenant) else {
            return Err(ServiceNowError::Forbidden(format!(
                "tenant {tenant} does not write back to ServiceNow on this worker \
                 (CERTFLOW_SERVICENOW_TENANTS)"
            )));
        };
        let mut fields = vec!["number"];
        fields.extend(self.tenant_field.as_deref());
        // Field names are checked identifiers (letters, digits, `_`): nothing to escape.
        let read = format!(
            "{url}?sysparm_fields={}&sysparm_exclude_reference_link=true",
            fields.join(",")
        );
        let response = self.call(update, || self.http.get(&read)).await?;
        let record: Value = response.json().await.map_err(|e| {
            ServiceNowError::Unavailable(anyhow!("reading record {}: {e}", update.record.number))
        })?;
        let field = |name: &str| record["result"][name].as_str().unwrap_or("").to_string();
        let number = field("number");
        if number != update.record.number {
            return Err(ServiceNowError::Forbidden(format!(
                "ServiceNow record {} in table {} is {:?}, not {}: nothing written",
                update.record.sys_id, self.table, number, update.record.number
            )));
        }
        if let Some(name) = &self.tenant_field
            && field(name) != *expected
        {
            return Err(ServiceNowError::Forbidden(format!(
                "ServiceNow record {} does not belong to tenant {tenant} (field {name}): \
                 nothing written",
                update.record.number
            )));
        }
        Ok(())
    }

    /// One Table API call, with authentication, retried on 429 and 5xx a few times; the
    /// successful response.
    async fn call(
        &self,
        update: &RecordUpdate,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ServiceNowError> {
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = request().header("accept", "application/json");
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
                    s if s.is_success() => return Ok(response),
                    StatusCode::UNAUTHORIZED if !refreshed && self.auth.refresh().await => {
                        refreshed = true;
                        continue;
                    }
                    s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                        return Err(ServiceNowError::Refused(format!(
                            "ServiceNow refused certflow's credentials or permissions (HTTP {s}) on {} {}",
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
                            "ServiceNow answered HTTP {s} on {}: {}",
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

/// `CERTFLOW_SERVICENOW_TENANTS`: `tenant` or `tenant=value` (the value its records hold in the
/// tenant field), comma-separated; unset means the default tenant alone.
fn parse_tenants(
    list: Option<&str>,
    has_tenant_field: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut tenants = BTreeMap::new();
    for entry in list
        .unwrap_or(DEFAULT_TENANT)
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (tenant, value) = match entry.split_once('=') {
            Some((t, v)) => {
                if !has_tenant_field {
                    bail!(
                        "CERTFLOW_SERVICENOW_TENANTS: {entry:?} maps a tenant to a value, \
                         but CERTFLOW_SERVICENOW_TENANT_FIELD is not set"
                    );
                }
                (t.trim(), v.trim())
            }
            None => (entry, entry),
        };
        if tenant.is_empty() || value.is_empty() {
            bail!("CERTFLOW_SERVICENOW_TENANTS: {entry:?} needs a tenant (and a value after =)");
        }
        if tenants
            .insert(tenant.to_string(), value.to_string())
            .is_some()
        {
            bail!("CERTFLOW_SERVICENOW_TENANTS: tenant {tenant} is listed twice");
        }
    }
    // Two tenants expecting one value could each write the other's records.
    let mut values: Vec<&String> = tenants.values().collect();
    values.sort();
    if let Some(shared) = values.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "CERTFLOW_SERVICENOW_TENANTS: two tenants expect the value {:?} in the tenant field",
            shared[0]
        );
    }
    if tenants.len() > 1 && !has_tenant_field {
        bail!(
            "CERTFLOW_SERVICENOW_TENANTS lists {} tenants: set CERTFLOW_SERVICENOW_TENANT_FIELD \
             so that each writes only to its own records",
            tenants.len()
        );
    }
    Ok(tenants)
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
    fn tenants_default_to_the_default_tenant_and_several_need_a_field() {
        let one = parse_tenants(None, false).unwrap();
        assert_eq!(one.keys().collect::<Vec<_>>(), ["default"]);
        assert!(parse_tenants(Some("acme,globex"), false).is_err());
        let mapped = parse_tenants(Some("acme=c0ffee, globex"), true).unwrap();
        assert_eq!(mapped["acme"], "c0ffee");
        assert_eq!(mapped["globex"], "globex");
        assert!(parse_tenants(Some("acme=c0ffee"), false).is_err());
        assert!(parse_tenants(Some("acme,acme"), true).is_err());
        assert!(parse_tenants(Some("=x"), true).is_err());
        assert!(parse_tenants(Some("acme=x,globex=x"), true).is_err());
        assert!(parse_tenants(Some("acme,globex=acme"), true).is_err());
    }

    #[test]
    fn names_are_servicenow_identifiers() {
        assert!(check_name("T", "x_custom_project").is_ok());
        assert!(check_name("T", "pm_project/../sys_user").is_err());
        assert!(check_name("T", "").is_err());
    }
}
