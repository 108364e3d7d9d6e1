//! One route table per function: the same list builds the axum router and names the endpoints,
//! so a test can hold the router's endpoints against the OpenAPI document generated from the
//! handlers' `#[utoipa::path]` attributes (`GET /openapi.json`).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;

use crate::http;
use crate::store::Readiness;

/// One endpoint: a method, a path in OpenAPI's spelling (`/v1/events/{tenantId}`, which axum
/// 0.8 reads the same way), and its handler.
pub struct Route<S> {
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<S>,
}

impl<S: Clone + Send + Sync + 'static> Route<S> {
    pub fn get<H: Handler<T, S>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self::on((Method::GET, MethodFilter::GET), path, handler)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self::on((Method::POST, MethodFilter::POST), path, handler)
    }

    /// A route for `method`, as the table names it and as axum routes it.
    fn on<H: Handler<T, S>, T: 'static>(
        (method, filter): (Method, MethodFilter),
        path: &'static str,
        handler: H,
    ) -> Self {
        Self {
            method,
            path,
            handler: on(filter, handler),
        }
    }
}

/// The router of a route table (routes of one path with different methods are merged).
pub fn router<S: Clone + Send + Sync + 'static>(routes: Vec<Route<S>>) -> Router<S> {
    routes.into_iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.handler)
    })
}

/// `(METHOD, path)` of every route of a table.
pub fn endpoints<S>(routes: &[Route<S>]) -> BTreeSet<(String, String)> {
    routes
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect()
}

/// `(METHOD, path)` of every operation an OpenAPI document describes.
pub fn documented(document: &Document) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut found = BTreeSet::new();
    let Ok(serde_json::Value::Object(json)) = serde_json::to_value(document) else {
        return found;
    };
    if let Some(serde_json::Value::Object(paths)) = json.get("paths") {
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    found.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
    }
    found
}

/// The endpoints every HTTP function serves besides its own: health checks and its document.
#[derive(OpenApi)]
#[openapi(paths(crate::http::healthz, crate::http::readyz, openapi_json))]
pub struct CommonApi;

/// The common document merged with a function's own, titled for the function.
pub fn document(title: &str, own: Document) -> Document {
    let mut document = CommonApi::openapi().merge_from(own);
    document.info.title = title.to_owned();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document.info.description =
        Some("fluxgate: events in over HTTP, a transactional outbox, a queue, a warehouse.".into());
    document
}

/// `GET /openapi.json`: the OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This API's OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json(document: axum::extract::State<Arc<String>>) -> Response {
    let mut response = document.as_str().to_owned().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The `GET /openapi.json` route serving `document` (rendered once).
pub fn openapi_route(document: &Document) -> Router {
    let json = document
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .with_state(Arc::new(json))
}

/// An API function as a whole service: [`http::service`] with `GET /openapi.json` serving
/// `document`.
pub fn service(routes: Router, readiness: Arc<dyn Readiness>, document: &Document) -> Router {
    http::service(routes.merge(openapi_route(document)), readiness)
}

/// The routes [`crate::http::health_routes`] and [`openapi_route`] add, as a table.
pub fn common_endpoints() -> BTreeSet<(String, String)> {
    [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect()
}
