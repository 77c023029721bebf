//! The OpenAPI document served at `/openapi.json`, generated from the handlers and types.

use crate::error::ErrorBody;
use crate::routes::{self, Created, Health};
use certflow_common::status::{RenewRequest, RevokeRequest};
use certflow_common::{CertificateFacts, CertificateRequest, CertificateStatus};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "certflow starter API", description = "Start, revoke, renew and query certificate lifecycles."),
    paths(
        routes::create_certificate,
        routes::get_certificate,
        routes::revoke_certificate,
        routes::renew_certificate,
        routes::healthz
    ),
    components(schemas(CertificateRequest, CertificateStatus, CertificateFacts, RevokeRequest, RenewRequest, Created, Health, ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
