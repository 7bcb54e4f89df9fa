//! (being written) REST Hooks, publishing, delivery log and inbound callback routes.

use axum::Router;

use super::ApiState;
use crate::backend::Backend;

pub(super) fn routes<B: Backend>() -> Router<ApiState<B>> {
    Router::new()
}

pub(super) fn public_routes<B: Backend>() -> Router<ApiState<B>> {
    Router::new()
}
