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
use utoipa::openapi::OpenApi as Document;
use utoipa::{IntoResponses, OpenApi};

use crate::error::Problem;
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

/// An HTTP function's API, implemented by its state: the route table, which builds the router
/// and names the endpoints, and the OpenAPI document of the same operations.
pub trait Api: Clone + Send + Sync + 'static {
    /// The document's title, e.g. "fluxgate metrics".
    const TITLE: &'static str;

    /// The function's own operations: its `#[derive(OpenApi)]` type.
    type Operations: OpenApi;

    /// Every endpoint of the function, with its handler.
    fn routes() -> Vec<Route<Self>>;

    /// The function's OpenAPI document, with the common endpoints.
    fn openapi() -> Document {
        document(Self::TITLE, Self::Operations::openapi())
    }

    /// The function's routes on this state, without health checks or middleware.
    fn into_router(self) -> Router {
        router(Self::routes()).with_state(self)
    }

    /// The function as a whole service: routes, health checks, `/openapi.json`, correlation
    /// ids, problem+json 404s.
    fn into_service(self, readiness: Arc<dyn Readiness>) -> Router {
        service(self.into_router(), readiness, &Self::openapi())
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
#[openapi(
    paths(crate::http::healthz, crate::http::readyz, openapi_json),
    components(schemas(Problem))
)]
pub struct CommonApi;

/// What a read of one tenant's figures or events may answer besides its result.
#[derive(IntoResponses)]
pub enum ReadProblems {
    /// A tenant the caller may not read
    #[response(status = 404, content_type = "application/problem+json")]
    ForeignTenant(Problem),
    /// A bad parameter; `field` names it
    #[response(status = 422, content_type = "application/problem+json")]
    BadParameter(Problem),
}

/// What an admin-only operation may answer besides its result.
#[derive(IntoResponses)]
pub enum AdminProblems {
    /// Not an admin
    #[response(status = 403, content_type = "application/problem+json")]
    NotAdmin(Problem),
    /// A field is invalid; `field` names it
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidField(Problem),
}

/// The common document merged with a function's own, titled for the function. Every operation
/// of the function's own takes an API key (see [`with_api_keys`]).
pub fn document(title: &str, own: Document) -> Document {
    let mut document = CommonApi::openapi().merge_from(with_api_keys(own));
    document.info.title = title.to_owned();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document.info.description =
        Some("fluxgate: events in over HTTP, a transactional outbox, a queue, a warehouse.".into());
    document
}

/// The two ways a key is sent, as security schemes, required by every operation of `own`,
/// each of which may then answer 401. The health checks and the document itself (the common
/// endpoints) stay open.
fn with_api_keys(mut own: Document) -> Document {
    use utoipa::openapi::response::ResponseBuilder;
    use utoipa::openapi::security::{
        ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };

    const BEARER: &str = "bearerApiKey";
    const HEADER: &str = "headerApiKey";
    let components = own.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("fgk_<key id>_<secret>, or the admin key")
                .description(Some("A tenant's API key or the admin key"))
                .build(),
        ),
    );
    components.add_security_scheme(
        HEADER,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Api-Key",
            "A tenant's API key or the admin key",
        ))),
    );
    let unauthorized = ResponseBuilder::new()
        .description("No API key, or an unknown or revoked one (WWW-Authenticate: Bearer)")
        .content(
            "application/problem+json",
            utoipa::openapi::ContentBuilder::new().build(),
        )
        .build();
    for item in own.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![
                SecurityRequirement::new(BEARER, Vec::<String>::new()),
                SecurityRequirement::new(HEADER, Vec::<String>::new()),
            ]);
            operation
                .responses
                .responses
                .entry("401".to_owned())
                .or_insert_with(|| unauthorized.clone().into());
        }
    }
    own
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
