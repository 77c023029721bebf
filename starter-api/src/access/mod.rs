//! Who may do what: API clients and their policies, TLS identities and the client CA,
//! the authentication throttle, and each tenant's quotas. Nothing here knows the router.

pub mod clients;
pub mod guard;
pub mod identity;
pub mod own_issuers;
pub mod quotas;
pub mod tls;
