//! Every failed request gets a JSON body `{"error": "..."}` naming what is wrong, with a
//! 4xx status for the client's mistakes and 5xx for lbd's. A change the data path has no
//! room for is 507 Insufficient Storage with `"reason": "table_full"`: a valid request
//! that a limit the operator set (`limits.*`) refuses, not a fault (500).
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use crate::ops::views::{ErrorBody, REASON_TABLE_FULL};
use crate::{model::desired::edit::EditError, ops::shared::ChangeError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// [`ErrorBody::reason`].
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            reason: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
                reason: self.reason.map(str::to_string),
            }),
        )
            .into_response()
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        let status = match &e {
            EditError::UnknownService(_)
            | EditError::UnknownBackend { .. }
            | EditError::UnknownZone(..)
            | EditError::UnknownRule(..) => StatusCode::NOT_FOUND,
            EditError::DuplicateService(_) | EditError::DuplicateBackend { .. } => {
                StatusCode::CONFLICT
            }
            EditError::Invalid(_) | EditError::Document(_) => StatusCode::BAD_REQUEST,
            // Valid, but only with the flag that says the operator means it.
            EditError::WouldOpen(..) => StatusCode::PRECONDITION_FAILED,
        };
        // Validation can report several fields; one line each reads badly in a one-line
        // CLI error, so they are joined with "; ".
        Self::new(status, e.to_string().replace('\n', "; "))
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Refused(e) => e.into(),
            full @ ChangeError::TableFull(_) => Self {
                reason: Some(REASON_TABLE_FULL),
                ..Self::new(StatusCode::INSUFFICIENT_STORAGE, full.to_string())
            },
            other => Self::internal(other.to_string()),
        }
    }
}
