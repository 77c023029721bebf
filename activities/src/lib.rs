//! Activities of the certificate lifecycle. Every call to Vault or a CA lives here; the workflow
//! only sees the contract in `certflow_common::activities`.
//!
//! Each activity is idempotent: running it again (a retry, or a replay after a worker crash)
//! never creates a second key version, issues a second certificate or writes a second record.

pub mod authority;
pub mod ca;
pub mod config;
pub mod csr_template;
mod failure;
pub mod ledger;
pub mod lifecycle;
pub mod metrics;
pub mod rest;
pub mod servicenow;
pub mod store;
pub mod vault;
pub mod verify;

pub use config::ActivitiesConfig;
pub use lifecycle::LifecycleActivities;
