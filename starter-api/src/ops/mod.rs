//! One file per operation; `http/router.rs` dispatches to them. `lookup` finds the caller's
//! certificate for the per-certificate operations.

pub mod audit;
pub mod create;
pub mod decide;
pub mod health;
pub mod list;
pub(crate) mod lookup;
pub mod metrics;
pub mod renew;
pub mod revoke;
pub mod show;
