//! How activity errors reach Temporal: typed errors that retrying cannot fix become
//! non-retryable application failures with a stable type name; everything else retries.

use crate::ca::CaError;
use crate::vault::VaultError;
use certflow_common::activities::error_types;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

pub(crate) fn non_retryable(type_name: &str, message: impl std::fmt::Display) -> ActivityError {
    let failure = ApplicationFailure::builder(message.to_string())
        .type_name(type_name.to_string())
        .non_retryable(true)
        .build();
    ActivityError::application(failure)
}

/// A Vault error during `step`. Vault refusing the request (400) means the request cannot be
/// served as asked; anything else is retried.
pub(crate) fn from_vault(step: &str, e: VaultError) -> ActivityError {
    match e {
        VaultError::Rejected(m) => {
            non_retryable(error_types::INVALID_REQUEST, format!("{step}: {m}"))
        }
        other => ActivityError::from(anyhow::Error::new(other).context(step.to_string())),
    }
}

pub(crate) fn from_ca(step: &str, e: CaError) -> ActivityError {
    match e {
        CaError::Rejected(m) => non_retryable(error_types::CA_REJECTED, format!("{step}: {m}")),
        CaError::Unavailable(e) => ActivityError::from(e.context(step.to_string())),
    }
}
