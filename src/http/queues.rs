//! (being written) Queue admin routes.

use axum::Router;

use super::ApiState;
use crate::backend::Backend;

pub(super) fn routes<B: Backend>() -> Router<ApiState<B>> {
    Router::new()
}
