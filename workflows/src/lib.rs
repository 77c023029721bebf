//! Temporal workflows of certflow. Workflows here only orchestrate: every call to Vault, a CA or
//! ServiceNow is an activity defined in `certflow_common::activities`.

mod clock;
pub mod lifecycle;
pub mod reporter;
mod scoped;
pub mod versions;

pub use lifecycle::CertificateLifecycle;
pub use reporter::ServiceNowReporter;
