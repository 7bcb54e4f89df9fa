//! API errors: every failure is JSON `{"error": code, "message": text}` with the right status,
//! and request bodies, paths and queries that do not parse say exactly what is wrong.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use hookspool_client::wire::ErrorBody;
use hookspool_client::wire::JsonObject;
use serde::de::DeserializeOwned;

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short stable code (`queue_not_found`, `invalid_json`, `unauthorized`, …).
    pub code: &'static str,
    /// A sentence saying what is wrong.
    pub message: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// An error's answer; a server error (5xx) is logged, since only the log tells an
    /// operator what went wrong.
    fn with_status(status: StatusCode, code: &'static str, e: &dyn std::error::Error) -> Self {
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Storage that is down, busy or needs a restart: come back later.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// `Retry-After` of every 503 answer, in seconds.
pub const RETRY_AFTER_SECS: &str = "5";

/// The one place where errors become HTTP statuses: the engine's errors, and the webhook
/// layer's (whose store errors are the engine's, with the same statuses).
fn engine_status(e: &hookspool::Error) -> StatusCode {
    use hookspool::Error as E;
    match e {
        E::QueueNotFound(_) | E::ItemNotFound { .. } => StatusCode::NOT_FOUND,
        E::QueueExists(_) | E::PhaseConflict { .. } | E::NotLeaseOwner { .. } => {
            StatusCode::CONFLICT
        }
        E::InvalidQueueId { .. } | E::InvalidPhase { .. } | E::InvalidInput(_) => {
            StatusCode::BAD_REQUEST
        }
        E::PayloadTooLarge { .. } | E::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::Locked { .. } | E::Unavailable { .. } | E::Poisoned { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a poisoned store answers: nothing is lost, but only a restart recovers.
pub(crate) fn poisoned_message(e: &hookspool::Error) -> String {
    format!(
        "{e}. Nothing stored before is lost, but this process accepts no more writes: restart \
         the daemon (it reopens the store from what is on disk); free disk space first if \
         the disk is full"
    )
}

impl From<hookspool::Error> for ApiError {
    fn from(e: hookspool::Error) -> Self {
        if matches!(e, hookspool::Error::Poisoned { .. }) {
            tracing::error!(error = %e, "request failed: the store needs a restart");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                poisoned_message(&e),
            );
        }
        ApiError::with_status(engine_status(&e), e.code(), &e)
    }
}

impl From<hookspool_webhooks::Error> for ApiError {
    fn from(e: hookspool_webhooks::Error) -> Self {
        use hookspool_webhooks::Error as E;
        if let E::Store(store) = e {
            return store.into();
        }
        let status = match &e {
            E::SubscriptionNotFound(_) | E::DeliveryNotFound(_) | E::ChannelNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            E::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            E::SubscriptionExists(_) => StatusCode::CONFLICT,
            E::InvalidUrl { .. }
            | E::InvalidSecret(_)
            | E::InvalidEvent { .. }
            | E::InvalidInput(_) => StatusCode::BAD_REQUEST,
            E::IdempotencyKeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::with_status(status, e.code(), &e)
    }
}

/// JSON body extractor whose rejections are [`ApiError`]s: malformed JSON, a wrong type or an
/// unknown field (types use `deny_unknown_fields`) gives 400 with serde's message naming it,
/// a missing or wrong content type gives 415, a body over the limit 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Only an object: serde's structs would take an array of their fields too.
        match Json::<JsonObject<T>>::from_request(req, state).await {
            Ok(Json(JsonObject(v))) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", r.body_text())
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", r.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `content-type: application/json`",
        ),
        _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is over the size limit",
        ),
        _ => ApiError::new(r.status(), "invalid_body", r.body_text()),
    }
}

/// Path extractor whose rejections are [`ApiError`]s (400 naming the bad segment).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(path_rejection(&r)),
        }
    }
}

fn path_rejection(r: &PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
}

/// Query extractor whose rejections are [`ApiError`]s (400 naming the bad parameter).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(query_rejection(&r)),
        }
    }
}

fn query_rejection(r: &QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
}
