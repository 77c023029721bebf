//! RFC 5280 revocation reasons (section 5.3.1), as accepted by the API and the `revoke` update.

use serde::{Deserialize, Serialize};

/// CRLReason from RFC 5280. Code 7 is unused in the RFC and `removeFromCRL` (8) only applies to
/// delta CRLs, so neither can be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    /// Reasons that say a key (or the CA) can no longer be trusted: every certificate the
    /// lifecycle still has in force is revoked, not only the one named.
    pub fn is_compromise(self) -> bool {
        matches!(
            self,
            Self::KeyCompromise | Self::CaCompromise | Self::AaCompromise
        )
    }

    /// The numeric CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_rfc5280() {
        assert_eq!(RevocationReason::KeyCompromise.code(), 1);
        assert_eq!(RevocationReason::PrivilegeWithdrawn.code(), 9);
        assert_eq!(RevocationReason::AaCompromise.code(), 10);
        let parsed: RevocationReason = serde_json::from_str("\"cessation_of_operation\"").unwrap();
        assert_eq!(parsed.code(), 5);
        assert!(serde_json::from_str::<RevocationReason>("\"remove_from_crl\"").is_err());
    }
}
