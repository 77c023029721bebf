//! The commands a lifecycle takes (approve, reject, renew now, revoke) and, for each phase,
//! whether it takes them: every command has a defined answer in every phase. The API checks
//! the arguments the same way before it calls the workflow, and the workflow's update
//! validators check both again.

use crate::request::{FieldError, ValidationErrors, validate_requested_by};
use crate::status::{Decision, Phase};

/// How `renew_now` answers when the CA holds the renewal request: the API turns it into 202.
pub const PENDING_AT_CA: &str = "pending at the CA: ";

/// Longest approval comment accepted.
pub const MAX_COMMENT_CHARS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Approve,
    Reject,
    RenewNow,
    Revoke,
}

/// Why `command` is refused in `phase`, or `None` if the phase takes it. The workflow adds the
/// checks that need more than the phase (a renewal too soon, an unknown serial).
pub fn refusal(phase: Phase, command: Command) -> Option<String> {
    use Command::*;
    use Phase::*;
    let ended = |p: Phase| format!("the lifecycle has ended ({})", p.as_str());
    match (phase, command) {
        (AwaitingApproval, Approve | Reject) => None,
        (_, Approve | Reject) => Some("the request is not awaiting approval".into()),
        (AwaitingApproval, RenewNow | Revoke) => {
            Some("the request awaits approval: approve or reject it first".into())
        }
        (Issuing, RenewNow) => Some("the first certificate is still being issued".into()),
        (Renewing, RenewNow) => Some("a renewal is already in progress".into()),
        (Revoking, _) => Some("the certificate is being revoked".into()),
        (Issuing | Active | Renewing | RenewalFailed, Revoke) => None,
        (Active | RenewalFailed, RenewNow) => None,
        (p, _) if p.is_final() => Some(ended(p)),
        (p, _) => Some(format!("not accepted in phase {}", p.as_str())),
    }
}

/// Checks an approve or reject decision: who decided is required and printable; the comment
/// is printable (newlines and tabs allowed) and at most 1000 characters. A NUL or other control
/// character would be refused by the audit store (PostgreSQL) and wedge the lifecycle.
pub fn check_decision(decision: &Decision) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    if decision.by.trim().is_empty() {
        errors.push(FieldError {
            field: "by".into(),
            message: "is required".into(),
        });
    } else if let Err(mut e) = validate_requested_by(Some(&decision.by)) {
        e.field = "by".into();
        errors.push(e);
    }
    if let Some(comment) = &decision.comment {
        if comment.chars().count() > MAX_COMMENT_CHARS {
            errors.push(FieldError {
                field: "comment".into(),
                message: format!("must be at most {MAX_COMMENT_CHARS} characters"),
            });
        } else if comment
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            errors.push(FieldError {
                field: "comment".into(),
                message: "must not contain control characters".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Checks a serial named by a revocation: colon-separated lower-case hex bytes.
pub fn check_serial(serial: &str) -> Result<(), FieldError> {
    let ok = !serial.is_empty()
        && serial.len() <= 128
        && serial
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(FieldError {
            field: "serial".into(),
            message: "must be colon-separated hex bytes, e.g. 3a:0f:…".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_an_answer_in_every_phase() {
        for phase in Phase::ALL {
            for command in [
                Command::Approve,
                Command::Reject,
                Command::RenewNow,
                Command::Revoke,
            ] {
                let answer = refusal(phase, command);
                if phase.is_final() {
                    assert!(answer.is_some(), "{phase:?} takes {command:?}");
                }
            }
        }
        assert_eq!(refusal(Phase::RenewalFailed, Command::RenewNow), None);
        assert_eq!(refusal(Phase::Renewing, Command::Revoke), None);
        assert!(refusal(Phase::Renewing, Command::RenewNow).is_some());
        assert!(
            refusal(Phase::Revoked, Command::Revoke)
                .unwrap()
                .contains("ended")
        );
    }

    #[test]
    fn decisions_refuse_control_characters() {
        let mut d = Decision {
            by: "jane".into(),
            comment: Some("ok\nfine".into()),
            client: None,
            proof: None,
        };
        assert!(check_decision(&d).is_ok());
        d.comment = Some("nul\0here".into());
        assert_eq!(check_decision(&d).unwrap_err().0[0].field, "comment");
        d.comment = Some("é".repeat(1000));
        assert!(check_decision(&d).is_ok());
        d.by = " ".into();
        assert_eq!(check_decision(&d).unwrap_err().0[0].field, "by");
    }

    #[test]
    fn serials_are_hex_bytes() {
        assert!(check_serial("3a:0f:ff").is_ok());
        for bad in ["", "3a:0", "zz:00", "3a::0f", "3a 0f"] {
            assert!(check_serial(bad).is_err(), "{bad}");
        }
    }
}
