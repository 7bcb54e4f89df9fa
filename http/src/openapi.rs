//! `GET /openapi.json`: the API's OpenAPI 3.1 document, generated from the code.
//!
//! Every route is registered through [`ApiRoutes::route`], which takes the path and methods
//! from the handler's `#[utoipa::path]` attribute and records its operation at the same time,
//! so the router cannot serve a route the document lacks, nor the other way round. Request
//! and response bodies are the wire types of `hookspool_client::wire` (and the webhook types
//! it re-exports), with `ToSchema` derived: the same types the handlers serialize and the
//! client reads.

use std::sync::Arc;

use axum::extract::Extension;
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
use utoipa::__dev::SchemaReferences;
use utoipa::Path;
use utoipa::openapi::path::{HttpMethod, Operation, Paths};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr,
};

use hookspool_client::wire::ErrorBody;

/// Name of the bearer-token security scheme in the document.
pub(crate) const BEARER: &str = "bearer";

/// A router whose every route carries its OpenAPI operation.
pub(crate) struct ApiRoutes<S> {
    router: Router<S>,
    paths: Paths,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl<S: Clone + Send + Sync + 'static> ApiRoutes<S> {
    /// No routes.
    pub(crate) fn new() -> Self {
        ApiRoutes {
            router: Router::new(),
            paths: Paths::new(),
            schemas: Vec::new(),
        }
    }

    /// Serves `handler` at the path and methods of its `#[utoipa::path]` attribute `P` (the
    /// generated `__path_<handler>` type) and documents it with that attribute's operation.
    pub(crate) fn route<P, H, T>(mut self, handler: H) -> Self
    where
        P: Path + SchemaReferences,
        H: Handler<T, S>,
        T: 'static,
    {
        let path = P::path();
        let methods = P::methods();
        let filter = methods.iter().map(method_filter).reduce(MethodFilter::or);
        let endpoint = match filter {
            Some(filter) => MethodRouter::new().on(filter, handler),
            // `#[utoipa::path]` requires a method, so this arm is never taken.
            None => MethodRouter::new(),
        };
        // Two operations on one path (`GET` and `POST /queues`) merge into one axum route.
        self.router = self.router.route(&path, endpoint);
        P::schemas(&mut self.schemas);
        self.paths.add_path_operation(path, methods, P::operation());
        self
    }

    /// Both sets of routes.
    pub(crate) fn merge(mut self, other: Self) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.paths.extend(other.paths.paths);
        self.schemas.extend(other.schemas);
        self
    }

    /// Applies `f` to the router (layers); the document is unchanged.
    pub(crate) fn map_router(mut self, f: impl FnOnce(Router<S>) -> Router<S>) -> Self {
        self.router = f(self.router);
        self
    }

    /// Marks every operation so far as requiring the bearer token, with its 401 answer.
    pub(crate) fn bearer_protected(mut self) -> Self {
        for operation in operations(&mut self.paths) {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            operation.responses.responses.insert(
                "401".to_owned(),
                ResponseBuilder::new()
                    .description("No token, or not a valid one (`unauthorized`).")
                    .build()
                    .into(),
            );
        }
        self
    }

    /// The router and the document describing it.
    pub(crate) fn finish(mut self) -> (Router<S>, OpenApi) {
        for operation in operations(&mut self.paths) {
            complete_errors(operation);
        }
        let components = ComponentsBuilder::new()
            .schemas_from_iter(self.schemas)
            .schema_from::<ErrorBody>()
            .security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "`Authorization: Bearer <token>`, one of the tokens the server \
                             is configured with.",
                        ))
                        .build(),
                ),
            );
        let doc = OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title("hookspool")
                    .version(env!("CARGO_PKG_VERSION"))
                    .description(Some(
                        "Queue admin, REST Hooks subscriptions, publishing, the delivery log \
                         and inbound callbacks. Every error is JSON `{\"error\": code, \
                         \"message\": text}`; request bodies reject unknown fields.",
                    ))
                    .build(),
            )
            .paths(self.paths)
            .components(Some(components.build()))
            .build();
        (self.router, with_integer_ranges(doc))
    }
}

/// Gives every unsigned integer of the document its range. utoipa names their formats
/// (`u-int64`, `u-int32`, …: workspace feature `non_strict_integers`), which clients and
/// fuzzers may not know; without `maximum` they would send numbers no field can hold (and
/// with the signed `int64` they would take a key over 2^63 for invalid).
fn with_integer_ranges(mut doc: OpenApi) -> OpenApi {
    for operation in operations(&mut doc.paths) {
        for parameter in operation.parameters.iter_mut().flatten() {
            parameter.schema.iter_mut().for_each(add_range);
        }
        let bodies = operation
            .request_body
            .iter_mut()
            .flat_map(|b| b.content.values_mut());
        bodies.filter_map(|c| c.schema.as_mut()).for_each(add_range);
    }
    if let Some(components) = &mut doc.components {
        components.schemas.values_mut().for_each(add_range);
    }
    doc
}

/// [`with_integer_ranges`] on one schema and every schema inside it.
fn add_range(schema: &mut RefOr<Schema>) {
    use utoipa::openapi::schema::{ArrayItems, KnownFormat, SchemaFormat};
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(object) => {
            let max = match &object.format {
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt8)) => Some(u64::from(u8::MAX)),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt16)) => Some(u64::from(u16::MAX)),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)) => Some(u64::from(u32::MAX)),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)) => Some(u64::MAX),
                _ => None,
            };
            if let Some(max) = max.and_then(|m| usize::try_from(m).ok()) {
                object.minimum.get_or_insert(utoipa::Number::UInt(0));
                object.maximum.get_or_insert(utoipa::Number::UInt(max));
            }
            object.properties.values_mut().for_each(add_range);
            if let Some(additional) = object.additional_properties.as_deref_mut()
                && let utoipa::openapi::schema::AdditionalProperties::RefOr(inner) = additional
            {
                add_range(inner);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                add_range(items);
            }
        }
        Schema::OneOf(one) => one.items.iter_mut().for_each(add_range),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(add_range),
        Schema::AllOf(all) => all.items.iter_mut().for_each(add_range),
        _ => {}
    }
}

/// The axum filter of an OpenAPI method.
fn method_filter(method: &HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

/// Every operation of every path.
fn operations(paths: &mut Paths) -> impl Iterator<Item = &mut Operation> {
    paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.options.as_mut(),
            item.head.as_mut(),
            item.patch.as_mut(),
            item.trace.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// Adds the errors every operation of its kind can give (a JSON body's 400, 413 and 415; a
/// path's 400) and gives every 4xx/5xx answer the [`ErrorBody`] schema, so the attributes
/// need only name the errors particular to a route.
fn complete_errors(operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_owned()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .build()
                .into()
        });
    };
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    if json_body {
        add(
            "400",
            "Malformed JSON (`malformed_json`), a wrong type, a missing or an unknown field \
             (`invalid_json`, naming it), or an invalid value (`invalid_request`, …).",
        );
        add(
            "415",
            "The body is not `application/json` (`unsupported_media_type`).",
        );
    }
    if operation.request_body.is_some() {
        add("413", "The body is over the size limit (`body_too_large`).");
    }
    let has_path_params = operation.parameters.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
    });
    if has_path_params {
        add("400", "A path segment is not valid (`invalid_path`, …).");
    }
    add("500", "A storage error (`internal`, …).");
    for (status, response) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response)
            && response.content.is_empty()
        {
            let schema = RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"));
            response.content.insert(
                "application/json".to_owned(),
                ContentBuilder::new().schema(Some(schema)).build(),
            );
        }
    }
}

/// `GET /openapi.json`: this document. Public: it describes the API, it reveals no data.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI document.", content_type = "application/json"))
)]
pub(crate) async fn openapi_json(Extension(doc): Extension<Arc<OpenApi>>) -> Response {
    Json(doc.as_ref()).into_response()
}
