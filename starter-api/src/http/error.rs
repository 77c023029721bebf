//! API errors: every failure is a JSON body with a message, and user mistakes are 4xx.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use certflow_common::{FieldError, ValidationErrors};
use serde::Serialize;
use temporalio_client::errors::WorkflowUpdateError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// Too many failed authentications from this source or for this user.
    #[error("too many failed authentications; try again later")]
    TooManyFailures(std::time::Duration),
    #[error("{0}")]
    Forbidden(String),
    /// A request outside the client's `allow` policy.
    #[error("outside this client's policy: {0}")]
    OutsidePolicy(certflow_common::policy::PolicyViolation),
    #[error("{0}")]
    BadJson(String, StatusCode),
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("no certificate with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Over one of the tenant's quotas (`quotas.rs`); how long to wait, when it is a rate.
    #[error("{0}")]
    Quota(String, Option<std::time::Duration>),
    /// Temporal or the audit database could not be reached, or answered with an error that is
    /// not the caller's fault. The detail is logged, never sent: it can name internal hosts,
    /// queries and versions.
    #[error("certflow cannot reach a service it depends on right now; try again later")]
    Unavailable(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::BadJson(r.body_text(), r.status())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooManyFailures(_) | ApiError::Quota(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) | ApiError::OutsidePolicy(_) => StatusCode::FORBIDDEN,
            ApiError::BadJson(_, status) => *status,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        match &self {
            ApiError::Unavailable(detail) => tracing::warn!(%detail, "request failed"),
            e if status.is_server_error() => tracing::warn!(error = %e, "request failed"),
            _ => {}
        }
        let fields = match &self {
            ApiError::Invalid(e) => e.0.clone(),
            ApiError::OutsidePolicy(v) => vec![FieldError {
                field: v.field.clone(),
                message: format!("{} (rule allow.{})", v.message, v.rule),
            }],
            _ => Vec::new(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
                fields,
            }),
        )
            .into_response();
        if let ApiError::TooManyFailures(wait) | ApiError::Quota(_, Some(wait)) = &self {
            let seconds = wait.as_secs() + 1;
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds.to_string()).expect("digits"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"certflow\", Bearer"),
            );
        }
        response
    }
}

/// A JSON body, with its rejection turned into a 4xx naming what is wrong.
pub type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A refused or failed update is the workflow's answer to the caller (409). Updates go to a
/// lifecycle the caller's lookup found, so "not found" means it has closed since: 409 too.
pub(crate) fn update_error(id: String, e: WorkflowUpdateError) -> ApiError {
    match e {
        WorkflowUpdateError::NotFound(_) => {
            ApiError::Conflict(format!("the lifecycle of {id:?} has already ended"))
        }
        WorkflowUpdateError::Failed(failure) => ApiError::Conflict(failure.message),
        e => ApiError::Unavailable(e.to_string()),
    }
}
