//! The OpenAPI document served at `/openapi.json`, generated from the handlers and types.

use crate::http::error::ErrorBody;
use crate::ops::health::{self, Health};
use crate::ops::{create, decide, renew, revoke, show};
use certflow_common::status::{RenewRequest, RevokeRequest};
use certflow_common::{CertificateFacts, CertificateRequest, CertificateStatus, Decision};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "certflow starter API", description = "Start, revoke, renew and query certificate lifecycles."),
    paths(
        create::create_certificate,
        crate::ops::list::list_certificates,
        show::get_certificate,
        decide::approve_certificate,
        crate::ops::audit::certificate_audit,
        crate::ops::audit::list_audit,
        decide::reject_certificate,
        revoke::revoke_certificate,
        renew::renew_certificate,
        health::healthz
    ),
    components(schemas(CertificateRequest, CertificateStatus, CertificateFacts, RevokeRequest, RenewRequest, Decision, create::Created, renew::RenewalPending, Health, ErrorBody,
        crate::ops::list::CertificatePage, crate::index::visibility::CertificateSummary,
        certflow_common::audit::AuditRecord, certflow_common::audit::AuditEvent)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// HTTP Basic and opaque bearer tokens, as ServiceNow outbound REST sends them.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}
