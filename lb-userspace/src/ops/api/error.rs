//! Every failed request gets a JSON body `{"error": "..."}` naming what is wrong, with a
//! 4xx status for the client's mistakes and 5xx for lbd's.
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use crate::ops::views::ErrorBody;
use crate::{model::desired::edit::EditError, ops::shared::ChangeError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
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
            | EditError::UnknownZone(..) => StatusCode::NOT_FOUND,
            EditError::DuplicateService(_) | EditError::DuplicateBackend { .. } => {
                StatusCode::CONFLICT
            }
            EditError::Invalid(_) | EditError::Document(_) => StatusCode::BAD_REQUEST,
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
            other => Self::internal(other.to_string()),
        }
    }
}
