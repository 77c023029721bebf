//! One file per operation on a certificate; `routes` dispatches to them.

pub mod create;
pub mod decide;
pub mod renew;
pub mod revoke;
pub mod show;
