//! Custom search attributes of certificate workflows, so operators and the API can find
//! certificates through Temporal visibility (`temporal workflow list --query ...`, the Web UI).
//! They must be registered on the namespace; scripts/lib.sh does it for the dev server.

use temporalio_common::search_attributes::{SearchAttributeKey, Timestamp};

pub const TENANT: SearchAttributeKey<String> = SearchAttributeKey::keyword("CertflowTenant");
pub const APPLICATION: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("CertflowApplication");
pub const ISSUER: SearchAttributeKey<String> = SearchAttributeKey::keyword("CertflowIssuer");
pub const COMMON_NAME: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("CertflowCommonName");
pub const SERVICENOW_RECORD: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("CertflowServiceNowRecord");
pub const IDEMPOTENCY_KEY: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("CertflowIdempotencyKey");
/// Upserted by the workflow as the certificate moves through its life.
pub const STATE: SearchAttributeKey<String> = SearchAttributeKey::keyword("CertflowState");
pub const SERIAL: SearchAttributeKey<String> = SearchAttributeKey::keyword("CertflowSerial");
pub const NOT_AFTER: SearchAttributeKey<Timestamp> =
    SearchAttributeKey::datetime("CertflowNotAfter");
/// When the workflow last changed what it lists (workflow time): the API's metrics index
/// reads only certificates changed since its last look.
pub const CHANGED_AT: SearchAttributeKey<Timestamp> =
    SearchAttributeKey::datetime("CertflowChangedAt");

/// Every attribute with its type, as `temporal operator search-attribute create` wants them.
pub const ALL: [(&str, &str); 10] = [
    ("CertflowTenant", "Keyword"),
    ("CertflowApplication", "Keyword"),
    ("CertflowIssuer", "Keyword"),
    ("CertflowCommonName", "Keyword"),
    ("CertflowServiceNowRecord", "Keyword"),
    ("CertflowIdempotencyKey", "Keyword"),
    ("CertflowState", "Keyword"),
    ("CertflowSerial", "Keyword"),
    ("CertflowNotAfter", "Datetime"),
    ("CertflowChangedAt", "Datetime"),
];

/// The attributes of `ALL` that `registered` (name to `IndexedValueType`, as the server's
/// `ListSearchAttributes` answers) lacks or holds with another type, as `name (Type)`.
/// Without them the server fails every workflow task that upserts one.
pub fn missing(registered: &std::collections::HashMap<String, i32>) -> Vec<String> {
    use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
    ALL.iter()
        .filter(|(name, kind)| {
            let wanted = match *kind {
                "Datetime" => IndexedValueType::Datetime,
                _ => IndexedValueType::Keyword,
            };
            registered.get(*name) != Some(&(wanted as i32))
        })
        .map(|(name, kind)| format!("{name} ({kind})"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_attribute_missing_or_of_another_type_is_named() {
        use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
        let mut registered: std::collections::HashMap<String, i32> = super::ALL
            .iter()
            .map(|(name, kind)| {
                let t = if *kind == "Datetime" {
                    IndexedValueType::Datetime
                } else {
                    IndexedValueType::Keyword
                };
                (name.to_string(), t as i32)
            })
            .collect();
        assert!(super::missing(&registered).is_empty());
        registered.insert("CertflowChangedAt".into(), IndexedValueType::Keyword as i32);
        registered.remove("CertflowTenant");
        assert_eq!(
            super::missing(&registered),
            ["CertflowTenant (Keyword)", "CertflowChangedAt (Datetime)"]
        );
    }

    #[test]
    fn the_local_setup_registers_every_attribute() {
        let script = include_str!("../../scripts/lib.sh");
        for (name, kind) in super::ALL {
            assert!(
                script.contains(&format!("{name}={kind}")),
                "scripts/lib.sh does not register {name}={kind}"
            );
        }
    }
}
