//! Request bodies: size-limited by the router (`DefaultBodyLimit`), parsed as JSON with
//! the path of a bad field in the error (`backends[0].address: invalid IPv4 address
//! syntax`), unknown fields refused by the types themselves. axum's own `Json` answers
//! in plain text; this answers in the API's JSON error shape.
use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body accepted (a 4,096-backend `apply` fits easily).
pub const MAX_BODY: usize = 1 << 20;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("request body: {}", e.body_text())))?;
        parse(&bytes).map(JsonBody)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let syntax = matches!(
            e.inner().classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        if syntax || path == "." {
            ApiError::bad_request(format!("malformed JSON body: {}", e.inner()))
        } else {
            ApiError::bad_request(format!("{path}: {}", e.inner()))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(value)
}
