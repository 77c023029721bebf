//! Fast tests of the lifecycle workflow with fake activities (see `fakes/`): every path of a
//! lifecycle, and the answer to every command in every phase, against a real Temporal server
//! in seconds. With `CERTFLOW_RECORD_HISTORIES=<dir>`, each test also writes its histories
//! there; `tests/histories/v3/` holds such a recording, replayed by `replay.rs`.

mod fakes;

use certflow_common::status::{RenewRequest, RevokeRequest};
use certflow_common::{
    ApprovalGate, CertificateStatus, Decision, EventKind, LifecycleInput, Phase, RevocationReason,
};
use certflow_workflows::CertificateLifecycle;
use fakes::{Env, Order, request, unique, with_worker};
use std::time::Duration;
use temporalio_client::errors::WorkflowUpdateError;
use temporalio_client::{
    Client, WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowHandle,
    WorkflowSignalOptions,
};

type Handle = WorkflowHandle<Client, CertificateLifecycle>;

fn input(id: &str, validity: u64) -> LifecycleInput {
    LifecycleInput {
        request: request(id, validity),
        carried: None,
        approval: None,
        tenant: Some("default".into()),
        history_limit: None,
        client: Some("fake-api-client".into()),
        // As the API starts them.
        lean: true,
        grant: Some(fakes::grant("fake-api-client", false)),
    }
}

fn revoke_request(reason: RevocationReason, serial: Option<&str>) -> RevokeRequest {
    RevokeRequest {
        reason,
        serial: serial.map(str::to_string),
        requested_by: Some("tester".into()),
        client: Some("fake-api-client".into()),
    }
}

async fn revoke(h: &Handle, r: RevokeRequest) -> Result<CertificateStatus, String> {
    h.execute_update(
        CertificateLifecycle::revoke,
        r,
        WorkflowExecuteUpdateOptions::default(),
    )
    .await
    .map_err(update_message)
}

async fn renew(h: &Handle) -> Result<certflow_common::CertificateFacts, String> {
    h.execute_update(
        CertificateLifecycle::renew_now,
        RenewRequest {
            requested_by: Some("tester".into()),
            client: Some("fake-api-client".into()),
        },
        WorkflowExecuteUpdateOptions::default(),
    )
    .await
    .map_err(update_message)
}

async fn decide(
    h: &Handle,
    approve: bool,
    comment: Option<&str>,
) -> Result<CertificateStatus, String> {
    let decision = Decision {
        by: "approver".into(),
        comment: comment.map(str::to_string),
        client: Some("fake-approver-client".into()),
        proof: Some(fakes::proof(false)),
    };
    send_decision(h, approve, decision).await
}

async fn send_decision(
    h: &Handle,
    approve: bool,
    decision: Decision,
) -> Result<CertificateStatus, String> {
    let options = WorkflowExecuteUpdateOptions::default();
    let result = if approve {
        h.execute_update(CertificateLifecycle::approve, decision, options)
            .await
    } else {
        h.execute_update(CertificateLifecycle::reject, decision, options)
            .await
    };
    result.map_err(update_message)
}

fn update_message(e: WorkflowUpdateError) -> String {
    match e {
        WorkflowUpdateError::Failed(f) => f.message,
        other => other.to_string(),
    }
}

fn kinds(s: &CertificateStatus) -> Vec<EventKind> {
    s.events.iter().map(|e| e.kind).collect()
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn issue_renew_and_revoke_every_certificate_in_force() {
    with_worker("life", |env: Env| async move {
        let id = unique("life");
        // 30 s certificates renewing at a fifth of their life: a renewal within seconds.
        let mut i = input(&id, 30);
        i.request.renewal.renew_at_fraction = Some(0.2);
        let h = env.start(i).await;
        let first = env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        assert_eq!(first.cycle, 0);
        let renewed = env
            .wait_for(&h, MINUTE, |s| s.cycle == 1 && s.phase == Phase::Active)
            .await;
        assert!(kinds(&renewed).contains(&EventKind::RenewalDue));
        // Renewal events carry the cycle they are about, not the previous one.
        let due = renewed
            .events
            .iter()
            .find(|e| e.kind == EventKind::RenewalDue)
            .unwrap();
        assert_eq!(due.cycle, 1);
        let now = renew(&h).await.unwrap();
        let state = env.state(&h).await;
        assert_eq!(state.cycle, 2);
        assert_eq!(state.current.as_ref().unwrap().serial, now.serial);
        let in_force: Vec<String> = state.serials.iter().map(|s| s.serial.clone()).collect();
        assert!(in_force.len() >= 2, "{in_force:?}");

        let ended = revoke(&h, revoke_request(RevocationReason::Superseded, None))
            .await
            .unwrap();
        assert_eq!(ended.phase, Phase::Revoked);
        let revoked = env.fakes.read(&id, |s| s.revoked.clone());
        // The current certificate with the reason asked for, the others as superseded.
        assert_eq!(
            revoked[0],
            (now.serial.clone(), RevocationReason::Superseded)
        );
        for serial in &in_force {
            assert!(
                revoked.iter().any(|(s, _)| s == serial),
                "{serial} left valid: {revoked:?}"
            );
        }
        let outcome = h
            .get_result(WorkflowGetResultOptions::default())
            .await
            .unwrap();
        assert_eq!(outcome.phase, Phase::Revoked);
        assert_eq!(env.fakes.read(&id, |s| s.retired), 1);
        // One CA issuance per cycle.
        assert_eq!(env.fakes.read(&id, |s| s.issued.len()), 3);
        env.record(
            &certflow_common::workflow_id("default", &id),
            "issue-renew-revoke",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_older_certificate_keeps_the_lifecycle() {
    with_worker("older", |env: Env| async move {
        let id = unique("older");
        let h = env.start(input(&id, 3600)).await;
        let first = env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        let old = first.current.unwrap().serial;
        let new = renew(&h).await.unwrap().serial;
        let state = revoke(&h, revoke_request(RevocationReason::Superseded, Some(&old)))
            .await
            .unwrap();
        assert_eq!(state.phase, Phase::Active);
        assert_eq!(state.current.unwrap().serial, new);
        assert_eq!(
            env.fakes.read(&id, |s| s.revoked.clone()),
            [(old.clone(), RevocationReason::Superseded)]
        );
        // Revoking it again, or a serial the lifecycle never issued, is refused.
        let again = revoke(&h, revoke_request(RevocationReason::Superseded, Some(&old))).await;
        assert!(again.unwrap_err().contains("already revoked"));
        let stranger = revoke(
            &h,
            revoke_request(RevocationReason::Superseded, Some("01:02")),
        )
        .await;
        assert!(
            stranger
                .unwrap_err()
                .contains("not a certificate of this lifecycle")
        );
        // A key compromise of the old key still revokes everything in force.
        let all = revoke(
            &h,
            revoke_request(RevocationReason::KeyCompromise, Some(&old)),
        )
        .await;
        assert!(all.unwrap_err().contains("already revoked"));
        let ended = revoke(&h, revoke_request(RevocationReason::KeyCompromise, None))
            .await
            .unwrap();
        assert_eq!(ended.phase, Phase::Revoked);
        env.record(
            &certflow_common::workflow_id("default", &id),
            "revoke-older-serial",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_renewal_keeps_the_certificate_and_is_retried() {
    with_worker("refused", |env: Env| async move {
        let id = unique("refused");
        env.fakes.script(&id, |s| {
            s.orders = [Order::Issue, Order::Refuse, Order::Refuse].into();
        });
        let h = env.start(input(&id, 3600)).await;
        let first = env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        let serial = first.current.clone().unwrap().serial;
        let refused = renew(&h).await.unwrap_err();
        assert!(refused.contains("does not allow"), "{refused}");
        let state = env.state(&h).await;
        assert_eq!(state.phase, Phase::RenewalFailed);
        assert_eq!(
            state.current.as_ref().unwrap().serial,
            serial,
            "the certificate stays"
        );
        let failure = state.renewal_failure.clone().unwrap();
        assert_eq!((failure.cycle, failure.failures), (1, 1));
        assert!(failure.next_attempt_unix.is_some());
        // Still takes renew_now (another attempt, refused again) ...
        assert!(renew(&h).await.is_err());
        let state = env.state(&h).await;
        assert_eq!(state.renewal_failure.unwrap().failures, 2);
        // ... and succeeds once the CA issues again; attempts have their own ledger entries.
        let renewed = renew(&h).await.unwrap();
        let state = env.state(&h).await;
        assert_eq!((state.phase, state.cycle), (Phase::Active, 1));
        assert_eq!(state.current.unwrap().serial, renewed.serial);
        assert_eq!(
            env.fakes.read(&id, |s| s.ordered.clone()),
            [(0, 0), (1, 0), (1, 1), (1, 2)]
        );
        revoke(
            &h,
            revoke_request(RevocationReason::CessationOfOperation, None),
        )
        .await
        .unwrap();
        env.record(
            &certflow_common::workflow_id("default", &id),
            "failed-renewal",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_expiry_ends_a_failing_renewal_and_then_as_failed() {
    with_worker("expiry", |env: Env| async move {
        let id = unique("expiry");
        env.fakes.script(&id, |s| {
            s.orders = [Order::Issue].into();
            s.refuse_forever = true;
        });
        let mut i = input(&id, 30);
        i.request.renewal.renew_at_fraction = Some(0.2);
        let h = env.start(i).await;
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::RenewalFailed)
            .await;
        // Revocable all along; here we let it expire instead.
        let result = h.get_result(WorkflowGetResultOptions::default()).await;
        assert!(
            result.is_err(),
            "a lifecycle left with no valid certificate ends failed"
        );
        let state = env.state(&h).await;
        assert_eq!(state.phase, Phase::Failed);
        assert!(state.failure.unwrap().contains("expired"));
        // Retried on the slow schedule before giving up.
        assert!(env.fakes.read(&id, |s| s.ordered.len()) >= 3);
        env.record(
            &certflow_common::workflow_id("default", &id),
            "renewal-failed-until-expiry",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_cancels_a_renewal_held_at_the_ca_and_never_waits_for_it() {
    with_worker("held", |env: Env| async move {
        let id = unique("held");
        env.fakes.script(&id, |s| {
            s.orders = [Order::Issue].into();
            s.hold_forever = true;
        });
        let h = env.start(input(&id, 3600)).await;
        let first = env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        let serial = first.current.unwrap().serial;
        h.signal(
            CertificateLifecycle::request_renewal,
            RenewRequest::default(),
            WorkflowSignalOptions::default(),
        )
        .await
        .unwrap();
        env.wait_for(&h, MINUTE, |s| kinds(s).contains(&EventKind::PendingAtCa))
            .await;
        let started = std::time::Instant::now();
        let ended = revoke(&h, revoke_request(RevocationReason::KeyCompromise, None))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the revocation waited"
        );
        assert_eq!(
            env.fakes.read(&id, |s| s.revoked.clone()),
            [(serial, RevocationReason::KeyCompromise)]
        );
        let outcome = h
            .get_result(WorkflowGetResultOptions::default())
            .await
            .unwrap();
        assert_eq!(outcome.phase, Phase::Revoked);
        assert_eq!(
            ended.revocation_reason,
            Some(RevocationReason::KeyCompromise)
        );
        // The held request is withdrawn at the CA, and not checked on again.
        assert_eq!(env.fakes.read(&id, |s| s.withdrawn), 1);
        let orders = env.fakes.read(&id, |s| s.ordered.len());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(env.fakes.read(&id, |s| s.ordered.len()), orders);
        env.record(
            &certflow_common::workflow_id("default", &id),
            "revoke-during-held-renewal",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_held_at_the_ca_is_issued_or_withdrawn() {
    with_worker("pending", |env: Env| async move {
        let issued = unique("pending");
        env.fakes.script(&issued, |s| {
            s.orders = [Order::Pending, Order::Issue].into()
        });
        let h = env.start(input(&issued, 3600)).await;
        let state = env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        assert!(kinds(&state).contains(&EventKind::PendingAtCa));
        assert_eq!(
            env.fakes.read(&issued, |s| s.ordered.clone()),
            [(0, 0), (0, 0)]
        );
        revoke(&h, revoke_request(RevocationReason::Superseded, None))
            .await
            .unwrap();
        env.record(
            &certflow_common::workflow_id("default", &issued),
            "pending-at-ca",
        )
        .await;

        let withdrawn = unique("withdrawn");
        env.fakes.script(&withdrawn, |s| s.hold_forever = true);
        let h = env.start(input(&withdrawn, 3600)).await;
        env.wait_for(&h, MINUTE, |s| kinds(s).contains(&EventKind::PendingAtCa))
            .await;
        let state = revoke(
            &h,
            revoke_request(RevocationReason::CessationOfOperation, None),
        )
        .await
        .unwrap();
        let outcome = h
            .get_result(WorkflowGetResultOptions::default())
            .await
            .unwrap();
        assert_eq!(outcome.phase, Phase::Cancelled, "{state:?}");
        assert!(env.fakes.read(&withdrawn, |s| s.revoked.is_empty()));
        assert_eq!(env.fakes.read(&withdrawn, |s| s.withdrawn), 1);
        env.record(
            &certflow_common::workflow_id("default", &withdrawn),
            "withdrawn-while-pending",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_fails_verification_is_revoked() {
    with_worker("mismatch", |env: Env| async move {
        let id = unique("mismatch");
        env.fakes
            .script(&id, |s| s.orders = [Order::Mismatch].into());
        let h = env.start(input(&id, 3600)).await;
        assert!(
            h.get_result(WorkflowGetResultOptions::default())
                .await
                .is_err()
        );
        let state = env.state(&h).await;
        assert_eq!(state.phase, Phase::Failed);
        let issued = env.fakes.read(&id, |s| s.issued.clone());
        let revoked = env.fakes.read(&id, |s| s.revoked.clone());
        assert_eq!(
            revoked,
            [(issued[0].clone(), RevocationReason::Unspecified)]
        );
        assert!(env.fakes.read(&id, |s| s.installed.is_empty()));
        env.record(
            &certflow_common::workflow_id("default", &id),
            "mismatch-revoked",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn input_that_temporal_contradicts_is_refused_before_anything_is_done() {
    with_worker("forged", |env: Env| async move {
        let refused = |h: Handle| async move {
            let e = h
                .get_result(WorkflowGetResultOptions::default())
                .await
                .unwrap_err();
            format!("{e:?}")
        };
        // A "continuation" started by a client, carrying another lifecycle's names.
        let carried_id = unique("forged-carried");
        let mut forged = input(&carried_id, 3600);
        let victim = certflow_common::LifecycleNames::new("default", "fakes", "victim", "00ff");
        forged.carried = Some(certflow_common::CarriedState {
            lifecycle_id: "00ff".into(),
            names: Some(victim),
            ..Default::default()
        });
        let e = refused(env.start(forged).await).await;
        assert!(e.contains("not continued by the lifecycle itself"), "{e}");
        // A tenant other than the workflow id's; a workflow id of release 1, started anew.
        let tenant_id = unique("forged-tenant");
        let mut other = input(&tenant_id, 3600);
        other.tenant = Some("acme".into());
        other.grant = None;
        let e = refused(env.start(other).await).await;
        assert!(e.contains("not of tenant"), "{e}");
        let v1_id = unique("forged-v1");
        let legacy = certflow_common::names::legacy_workflow_id(&v1_id);
        let e = refused(env.start_as(&legacy, input(&v1_id, 3600)).await).await;
        assert!(e.contains("never started again"), "{e}");
        // None of them reached an activity.
        for id in [&carried_id, &tenant_id, &v1_id] {
            assert!(
                env.fakes
                    .read(id, |s| s.ordered.is_empty() && s.retired == 0)
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_approval_gate_in_all_three_outcomes() {
    with_worker("gate", |env: Env| async move {
        let gated = |id: &str, deadline: u64| {
            let mut i = input(id, 3600);
            i.approval = Some(ApprovalGate {
                deadline_seconds: deadline,
            });
            i
        };
        let approved = unique("approved");
        let h = env.start(gated(&approved, 600)).await;
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::AwaitingApproval)
            .await;
        // Nothing but a decision is taken at the gate; a NUL in the comment is refused.
        assert!(renew(&h).await.unwrap_err().contains("awaits approval"));
        assert!(
            revoke(&h, revoke_request(RevocationReason::Superseded, None))
                .await
                .unwrap_err()
                .contains("awaits approval")
        );
        assert!(
            decide(&h, true, Some("bad\0comment"))
                .await
                .unwrap_err()
                .contains("comment")
        );
        // Approvals sent around the API: unsigned, by the requesting client, or with a forged
        // signature. Each is refused and the gate stays shut.
        let approval =
            |client: &str, proof: Option<certflow_common::grant::DecisionProof>| Decision {
                by: "mallory".into(),
                comment: None,
                client: Some(client.into()),
                proof,
            };
        let unsigned = send_decision(&h, true, approval("fake-approver-client", None)).await;
        assert!(unsigned.unwrap_err().contains("not signed"));
        let own = approval("fake-api-client", Some(fakes::proof(false)));
        assert!(
            send_decision(&h, true, own)
                .await
                .unwrap_err()
                .contains("four eyes")
        );
        let mut forged = fakes::proof(false);
        forged.mac = "forged".into();
        let forged = approval("fake-approver-client", Some(forged));
        let refusal = send_decision(&h, true, forged).await.unwrap_err();
        assert!(refusal.contains("approval refused"), "{refusal}");
        let state = env.state(&h).await;
        assert_eq!(state.phase, Phase::AwaitingApproval);
        assert!(state.approval.is_none());
        let state = decide(&h, true, Some("fine")).await.unwrap();
        assert_ne!(state.phase, Phase::AwaitingApproval);
        assert!(
            decide(&h, false, None)
                .await
                .unwrap_err()
                .contains("not awaiting approval")
        );
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        revoke(&h, revoke_request(RevocationReason::Superseded, None))
            .await
            .unwrap();
        env.record(
            &certflow_common::workflow_id("default", &approved),
            "approval-approved",
        )
        .await;

        let rejected = unique("rejected");
        let h = env.start(gated(&rejected, 600)).await;
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::AwaitingApproval)
            .await;
        decide(&h, false, Some("no")).await.unwrap();
        assert_eq!(
            h.get_result(WorkflowGetResultOptions::default())
                .await
                .unwrap()
                .phase,
            Phase::Rejected
        );
        assert!(env.fakes.read(&rejected, |s| s.ordered.is_empty()));
        env.record(
            &certflow_common::workflow_id("default", &rejected),
            "approval-rejected",
        )
        .await;

        let expired = unique("expired");
        let h = env.start(gated(&expired, 10)).await;
        assert_eq!(
            h.get_result(WorkflowGetResultOptions::default())
                .await
                .unwrap()
                .phase,
            Phase::Expired
        );
        assert!(env.fakes.read(&expired, |s| s.ordered.is_empty()));
        env.record(
            &certflow_common::workflow_id("default", &expired),
            "approval-expired",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_lifecycles_continue_as_new_with_everything_they_know() {
    with_worker("can", |env: Env| async move {
        let id = unique("can");
        let mut i = input(&id, 3600);
        i.history_limit = Some(30);
        let h = env.start(i).await;
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        for _ in 0..3 {
            renew(&h).await.unwrap();
        }
        let state = env
            .wait_for(&h, MINUTE, |s| s.cycle == 3 && s.phase == Phase::Active)
            .await;
        assert_eq!(
            state.serials.len(),
            4,
            "superseded certificates stay revocable: {state:?}"
        );
        let runs = runs(&env, &id).await;
        assert!(runs >= 2, "expected a continued run, got {runs}");
        let ended = revoke(&h, revoke_request(RevocationReason::Superseded, None))
            .await
            .unwrap();
        assert_eq!(ended.phase, Phase::Revoked);
        assert_eq!(env.fakes.read(&id, |s| s.revoked.len()), 4);
        env.record(
            &certflow_common::workflow_id("default", &id),
            "continue-as-new",
        )
        .await;
    })
    .await;
}

/// This release's starts (`lean` input) record no patch marker, nor the search-attribute upsert
/// the SDK adds with one, in their first run or in the runs continued from it (a lifecycle of a
/// ServiceNow record would still record `servicenow-write-back-checked`). A start without
/// `lean` (an API of the release before) still records `lifecycle-v3` in its first run, and its
/// continued runs do not. Every run's history is read back from the server.
#[tokio::test(flavor = "multi_thread")]
async fn this_release_records_no_patch_marker_and_earlier_starts_still_do() {
    with_worker("mark", |env: Env| async move {
        for lean in [true, false] {
            let id = unique("mark");
            let mut i = input(&id, 3600);
            i.lean = lean;
            i.history_limit = Some(30);
            let h = env.start(i).await;
            env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
            for _ in 0..3 {
                renew(&h).await.unwrap();
            }
            let ended = revoke(&h, revoke_request(RevocationReason::Superseded, None))
                .await
                .unwrap();
            assert_eq!(ended.phase, Phase::Revoked);
            let histories = env
                .histories(&certflow_common::workflow_id("default", &id))
                .await;
            assert!(histories.len() >= 2, "expected a continued run");
            let marked: Vec<(bool, bool)> = histories
                .iter()
                .map(|h| {
                    let marker = h.contains(r#""marker_name":"core_patch""#);
                    (marker, h.contains("TemporalChangeVersion"))
                })
                .collect();
            let expected: Vec<(bool, bool)> = (0..histories.len())
                .map(|n| (!lean && n == 0, !lean && n == 0))
                .collect();
            assert_eq!(marked, expected, "lean input: {lean}");
        }
    })
    .await;
}

async fn runs(env: &Env, id: &str) -> usize {
    use futures::StreamExt;
    let query = format!(
        "WorkflowId = '{}'",
        certflow_common::workflow_id("default", id)
    );
    let list = env.client.list_workflows(
        &query,
        temporalio_client::WorkflowListOptions::builder().build(),
    );
    list.count().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_store_down_never_holds_up_a_revocation() {
    with_worker("audit", |env: Env| async move {
        let id = unique("audit");
        let h = env.start(input(&id, 3600)).await;
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        env.fakes.set_audit_down(true);
        let started = std::time::Instant::now();
        let state = revoke(&h, revoke_request(RevocationReason::KeyCompromise, None))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(state.phase, Phase::Revoked);
        assert_eq!(env.fakes.read(&id, |s| s.revoked.len()), 1);
        assert!(
            !env.fakes
                .audited(&id)
                .iter()
                .any(|e| e.kind == EventKind::Revoked)
        );
        // The lifecycle waits for the store before it ends; then every event is written once.
        env.fakes.set_audit_down(false);
        h.get_result(WorkflowGetResultOptions::default())
            .await
            .unwrap();
        let audited = env.fakes.audited(&id);
        assert!(audited.iter().any(|e| e.kind == EventKind::Revoked));
        assert_eq!(audited.last().unwrap().kind, EventKind::Retired);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_revocation_leaves_the_certificate_and_the_lifecycle() {
    with_worker("refusedrev", |env: Env| async move {
        let id = unique("refusedrev");
        let h = env.start(input(&id, 3600)).await;
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        env.fakes.script(&id, |s| s.refuse_revocations = true);
        let refused = revoke(&h, revoke_request(RevocationReason::CertificateHold, None)).await;
        assert!(refused.unwrap_err().contains("refuses"));
        let state = env.state(&h).await;
        assert_eq!(state.phase, Phase::Active);
        assert!(kinds(&state).contains(&EventKind::RevocationRefused));
        env.fakes.script(&id, |s| s.refuse_revocations = false);
        // Twice at once: one revocation, both callers answered.
        let (a, b) = futures::join!(
            revoke(&h, revoke_request(RevocationReason::Superseded, None)),
            revoke(&h, revoke_request(RevocationReason::Superseded, None))
        );
        assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
        assert_eq!(env.fakes.read(&id, |s| s.revoked.len()), 1);
        env.record(
            &certflow_common::workflow_id("default", &id),
            "revocation-refused",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_has_an_answer_in_every_phase_and_none_deadlocks() {
    with_worker("table", |env: Env| async move {
        // renew_now at the tail of a timer-driven renewal, over and over: every call answers.
        let id = unique("tail");
        let mut i = input(&id, 30);
        i.request.renewal.renew_at_fraction = Some(0.1);
        let h = env.start(i).await;
        env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await;
        for _ in 0..12 {
            let answer = tokio::time::timeout(Duration::from_secs(30), renew(&h)).await;
            let answer = answer.expect("renew_now never answered");
            if let Err(e) = answer {
                assert!(
                    e.contains("already in progress") || e.contains("too soon"),
                    "{e}"
                );
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let state = env.state(&h).await;
        assert!(
            state.cycle >= 5,
            "renewals stopped at cycle {}",
            state.cycle
        );
        // Signals in any order, then a revocation that still answers.
        for _ in 0..3 {
            h.signal(
                CertificateLifecycle::request_renewal,
                RenewRequest::default(),
                WorkflowSignalOptions::default(),
            )
            .await
            .unwrap();
        }
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            revoke(&h, revoke_request(RevocationReason::Superseded, None)),
        )
        .await
        .expect("revoke never answered")
        .unwrap();
        assert!(matches!(ended.phase, Phase::Revoked | Phase::Revoking));
        h.get_result(WorkflowGetResultOptions::default())
            .await
            .unwrap();
        // After the end: every command is answered, none is taken.
        assert!(renew(&h).await.is_err());
        assert!(
            revoke(&h, revoke_request(RevocationReason::Superseded, None))
                .await
                .is_err()
        );
        assert!(decide(&h, true, None).await.is_err());
        let issued = env.fakes.read(&id, |s| s.issued.clone());
        let revoked = env.fakes.read(&id, |s| s.revoked.clone());
        let state = env.state(&h).await;
        // Everything still in force at the end was revoked.
        for s in state
            .serials
            .iter()
            .filter(|s| s.not_after_unix > fakes_now())
        {
            assert!(
                revoked.iter().any(|(r, _)| *r == s.serial),
                "{} left valid",
                s.serial
            );
        }
        // One CA issuance per cycle, plus at most one for a renewal the revocation overtook,
        // which must have been revoked on arrival.
        let cycles = state.cycle as usize + 1;
        assert!(
            issued.len() == cycles || issued.len() == cycles + 1,
            "{} issuances for {cycles} cycles",
            issued.len()
        );
        if issued.len() == cycles + 1 {
            let overtaken = issued.last().unwrap();
            assert!(
                revoked.iter().any(|(r, _)| r == overtaken),
                "overtaken renewal {overtaken} left valid"
            );
        }
    })
    .await;
}

fn fakes_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
