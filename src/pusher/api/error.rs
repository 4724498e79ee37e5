//! How the Pusher HTTP API answers a failure: the status Pusher uses (400 bad request,
//! 401 signature, 403 disabled app, 404 unknown app or route, 413 too large) and a body
//! `{"error": "<message>", "code": <status>}`, the shape Soketi answers and the server
//! SDKs show to their callers. Built from the native `ApiError`, so the native policy
//! checks that these handlers reuse keep their statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::ApiError;
use crate::broker::BrokerError;
use crate::pusher::signature::RequestAuthError;

/// A failed Pusher API request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct PusherApiError {
    pub status: StatusCode,
    pub message: String,
}

impl PusherApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PusherApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<ApiError> for PusherApiError {
    fn from(err: ApiError) -> Self {
        PusherApiError::new(err.status, err.message)
    }
}

impl From<BrokerError> for PusherApiError {
    fn from(err: BrokerError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<RequestAuthError> for PusherApiError {
    fn from(err: RequestAuthError) -> Self {
        PusherApiError::new(StatusCode::UNAUTHORIZED, err.to_string())
    }
}

impl IntoResponse for PusherApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "code": self.status.as_u16() });
        (self.status, Json(body)).into_response()
    }
}
