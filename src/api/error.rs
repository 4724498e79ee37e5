//! The HTTP API's one error type and its response:
//! `{"error": {"code": <int>, "message": "<text>"}}` with the matching status
//! (PROTOCOL.md section 8).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::BrokerError;
use crate::policy::Refusal;
use crate::protocol::ErrorCode;

/// An API request that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// `Retry-After` of a 429, in whole seconds (1 unless [`ApiError::retry_after`] says).
    retry_after_secs: u64,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: 1,
        }
    }

    /// Sets the `Retry-After` of a 429 to `wait`, rounded up to whole seconds (1 to 3600).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after_secs = wait.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn not_available(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotAvailable, message)
    }
}

impl From<Refusal> for ApiError {
    /// 413 for data over the limit, 400 for the rest, with the refusal's code.
    fn from(refusal: Refusal) -> Self {
        let status = match refusal {
            Refusal::DataTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::InvalidChannel { .. }
            | Refusal::UnknownNamespace { .. }
            | Refusal::Undeliverable { .. } => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, refusal.code(), refusal.to_string())
    }
}

impl From<BrokerError> for ApiError {
    fn from(err: BrokerError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            err.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code.as_u16(), "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(self.retry_after_secs),
            );
        }
        response
    }
}
