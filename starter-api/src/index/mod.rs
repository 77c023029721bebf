//! What the API knows of the fleet without asking each lifecycle: the visibility reader,
//! the running-certificate index behind `/metrics`, and the `Idempotency-Key` claims.

pub mod fleet;
pub mod key_claims;
pub mod visibility;
