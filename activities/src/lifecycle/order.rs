//! `order_certificate`: one issuance attempt, from key to verified certificate.
//!
//! Why one activity: the key version, the CSR, the CA submission and the check of what came
//! back belong together, and each step is idempotent on its own (the key version is created at
//! most once per cycle, the ledger submits at most once per attempt), so a retry after a crash
//! anywhere in between repeats nothing that has effects.

use super::{LifecycleActivities, now_unix, record};
use crate::authority::{Caller, refused};
use crate::ca::{CaError, IssueOrder, Submission};
use crate::failure::{from_ca, from_vault, non_retryable};
use crate::ledger::{self, SubmitError};
use crate::{csr_template, metrics, verify};
use certflow_common::IssuerPolicy;
use certflow_common::activities::{
    IssuedCertificate, OrderInput, OrderOutcome, OrderedCertificate, error_types,
};
use certflow_common::grant::Grant;
use certflow_common::names::{LifecycleNames, Owned};
use temporalio_sdk::activities::ActivityError;

/// `first_try`: the activity's first try, which writes its ledger entry without reading it
/// first (see `ledger::submit_once`).
pub(super) async fn run(
    acts: &LifecycleActivities,
    caller: &Caller,
    mut input: OrderInput,
    first_try: bool,
) -> Result<OrderOutcome, ActivityError> {
    let names = authorized(acts, caller, &mut input).await?;
    let request = &input.request;
    let ca = acts.checked(request)?;
    let issuer = acts.issuer(&request.issuer)?;
    let policy = IssuerPolicy {
        min_renewal_interval_seconds: issuer.limits().min_renewal_interval_seconds,
    };
    let (key_version, csr_pem) = key_and_csr(acts, &input, &names).await?;

    let order = IssueOrder {
        request,
        csr_pem: &csr_pem,
        idempotency_key: idempotency_key(&input),
    };
    let path = acts.kv_path(&names.ledger_entry(input.cycle, input.attempt));
    let counter = metrics::issuance_counter(input.cycle);
    let issuer_name = request.issuer.as_str();
    let answer = ledger::submit_once(
        &acts.vault,
        ca.as_ref(),
        &path,
        &order,
        now_unix(),
        first_try,
    )
    .await
    .map_err(|e| {
        let rejected = matches!(e, SubmitError::Ca(CaError::Rejected(_)));
        let outcome = if rejected { "rejected" } else { "error" };
        counter.with_label_values(&[issuer_name, outcome]).inc();
        match e {
            SubmitError::Ca(e) => from_ca("submitting the CSR", e),
            SubmitError::Vault(e) => from_vault("recording the issuance", e),
        }
    })?;
    let certificate = match answer {
        Submission::Issued(certificate) => certificate,
        Submission::Pending { reference, detail } => {
            counter.with_label_values(&[issuer_name, "pending"]).inc();
            tracing::info!(cycle = input.cycle, reference, "the CA holds the request");
            return Ok(OrderOutcome::Pending { detail });
        }
    };
    counter.with_label_values(&[issuer_name, "issued"]).inc();
    match verify::verify(request, &csr_pem, &certificate, now_unix()) {
        Ok(verified) => {
            tracing::info!(cycle = input.cycle, serial = %verified.serial, "certificate issued and verified");
            Ok(OrderOutcome::Issued(OrderedCertificate {
                key_version,
                certificate,
                verified,
                policy,
            }))
        }
        Err(mismatch) => {
            metrics::FAILURES
                .with_label_values(&[issuer_name, "verify"])
                .inc();
            tracing::error!(cycle = input.cycle, serial = %certificate.serial, error = %mismatch, "issued certificate rejected");
            Ok(OrderOutcome::Mismatch {
                certificate,
                reason: mismatch.to_string(),
            })
        }
    }
}

/// `withdraw_order`: the lifecycle ended while this order was out; a request the CA holds is
/// withdrawn, and a certificate issued for it anyway is returned to be revoked.
pub(super) async fn withdraw(
    acts: &LifecycleActivities,
    caller: &Caller,
    mut input: OrderInput,
) -> Result<Option<IssuedCertificate>, ActivityError> {
    let names = owned(acts, caller, &mut input)?.0.names;
    let ca = acts.ca(&input.request.issuer)?;
    let (_, csr_pem) = key_and_csr(acts, &input, &names).await?;
    let order = IssueOrder {
        request: &input.request,
        csr_pem: &csr_pem,
        idempotency_key: idempotency_key(&input),
    };
    let path = acts.kv_path(&names.ledger_entry(input.cycle, input.attempt));
    let issued = ledger::withdraw(&acts.vault, ca.as_ref(), &path, &order)
        .await
        .map_err(|e| match e {
            SubmitError::Ca(e) => from_ca("withdrawing the request", e),
            SubmitError::Vault(e) => from_vault("recording the withdrawal", e),
        })?;
    tracing::info!(
        cycle = input.cycle,
        issued = issued.is_some(),
        "order withdrawn"
    );
    Ok(issued)
}

/// The names this workflow owns and its grant, checked; the input's lifecycle id made the
/// owned one.
fn owned(
    acts: &LifecycleActivities,
    caller: &Caller,
    input: &mut OrderInput,
) -> Result<(Owned, Grant), ActivityError> {
    let authority = &acts.authority;
    let (request, tenant) = (&input.request, input.tenant.as_str());
    let owned = authority.owned(caller, tenant, request, &input.names)?;
    let lifecycle_id = authority.lifecycle_id(caller, &owned, &input.lifecycle_id)?;
    let grant = authority
        .grant(caller, input.grant.as_ref(), tenant, request)?
        .clone();
    input.lifecycle_id = lifecycle_id;
    Ok((owned, grant))
}

/// Everything an order needs to be allowed, checked before any CA or Vault call but the
/// record's: the names and grant ([`owned`]), the requesting client's current policy, the
/// approval of a first certificate, and the record's owner.
async fn authorized(
    acts: &LifecycleActivities,
    caller: &Caller,
    input: &mut OrderInput,
) -> Result<LifecycleNames, ActivityError> {
    let (owned, grant) = owned(acts, caller, input)?;
    let request = &input.request;
    acts.issuers_config
        .validate(request)
        .map_err(|e| non_retryable(error_types::INVALID_REQUEST, e))?;
    acts.authority.current_policy(&grant, request)?;
    if input.cycle == 0 {
        // Release 1 issued the first certificates of its lifecycles itself.
        if owned.lifecycle_id.is_none() {
            return Err(refused("release 1's lifecycles are never issued anew"));
        }
        check_approval(acts, caller, &grant, input)?;
    }
    record::locate(acts, &owned, &request.application).await?;
    Ok(owned.names)
}

/// The key version of the cycle (made once) and a CSR signed by it in Vault.
async fn key_and_csr(
    acts: &LifecycleActivities,
    input: &OrderInput,
    names: &LifecycleNames,
) -> Result<(u64, String), ActivityError> {
    let request = &input.request;
    let key = &names.transit_key;
    let key_version = acts
        .vault
        .ensure_key_version(
            key,
            request.key_type,
            request.key_delivery,
            u64::from(input.cycle) + 1,
        )
        .await
        .map_err(|e| from_vault("preparing the transit key", e))?;
    let template = csr_template::template_csr(request)
        .map_err(|e| non_retryable(error_types::INVALID_REQUEST, format!("{e:#}")))?;
    let csr_pem = acts
        .vault
        .key_csr(key, key_version, &template)
        .await
        .map_err(|e| from_vault("generating the CSR in transit", e))?;
    Ok((key_version, csr_pem))
}

/// Stable per lifecycle, cycle and attempt; CAs that take idempotency tokens get it.
fn idempotency_key(input: &OrderInput) -> String {
    format!("{}/{}/{}", input.lifecycle_id, input.cycle, input.attempt)
}

/// An issuer, a request or a grant that requires approval gets no first certificate without
/// the API's signed approval (from another client than the requester's, unless that one may
/// approve its own), whoever started or steered the workflow.
fn check_approval(
    acts: &LifecycleActivities,
    caller: &Caller,
    grant: &Grant,
    input: &OrderInput,
) -> Result<(), ActivityError> {
    let issuer = acts.issuer(&input.request.issuer)?;
    let required =
        issuer.approval().required || input.request.require_approval || grant.approval_required;
    if !required || grant.approved {
        return Ok(());
    }
    let Some(decision) = &input.approval else {
        return Err(non_retryable(
            error_types::INVALID_REQUEST,
            format!(
                "issuer {:?} requires approval and this request was not approved",
                input.request.issuer
            ),
        ));
    };
    acts.authority.approval(caller, decision, &grant.client)
}
