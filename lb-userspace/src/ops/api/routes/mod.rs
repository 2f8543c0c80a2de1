//! Handlers, one file per resource.
pub mod backends;
pub mod explain;
pub mod info;
pub mod node;
pub mod services;
pub mod zones;

use axum::Json;

use super::{blocking, error::ApiError, DataPath, Shared};
use crate::{model::desired::edit::Edit, ops::views::ChangeResult};

/// Makes one change through the runtime and answers with what changed.
async fn change<D: DataPath>(rt: Shared<D>, edit: Edit) -> Result<Json<ChangeResult>, ApiError> {
    let result = blocking(move || rt.change(&edit)).await??;
    Ok(Json(result))
}
