//! One API per function: each handler is routed at the method and path its `#[utoipa::path]`
//! names (utoipa-axum's `routes!`), so a path is written once and the router and the OpenAPI
//! document (`GET /openapi.json`) are built from the same list.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::OpenApi as Document;
use utoipa::{IntoResponses, OpenApi};
pub use utoipa_axum::router::OpenApiRouter;
pub use utoipa_axum::routes;

use crate::error::Problem;
use crate::http;
use crate::store::Readiness;

/// An HTTP function's API, implemented by its state (see [`http_api!`](crate::http_api)): its
/// operations, which build both the router and the OpenAPI document.
pub trait Api: Clone + Send + Sync + 'static {
    /// The document's title, e.g. "fluxgate metrics".
    const TITLE: &'static str;

    /// Every operation of the function, routed, with its OpenAPI description.
    fn routes() -> OpenApiRouter<Self>;

    /// The function's OpenAPI document, with the common endpoints.
    fn openapi() -> Document {
        document(Self::TITLE, Self::routes().into_openapi())
    }

    /// `(METHOD, path)` of every operation the function routes.
    fn endpoints() -> BTreeSet<(String, String)> {
        documented(&Self::routes().into_openapi())
    }

    /// The function's routes on this state, without health checks or middleware.
    fn into_router(self) -> Router {
        Self::routes().split_for_parts().0.with_state(self)
    }

    /// The function as a whole service: routes, health checks, `/openapi.json`, correlation
    /// ids, problem+json 404s.
    fn into_service(self, readiness: Arc<dyn Readiness>) -> Router {
        let (routes, own) = Self::routes().split_for_parts();
        service(
            routes.with_state(self),
            readiness,
            &document(Self::TITLE, own),
        )
    }
}

/// What [`http_api!`](crate::http_api) expands to names, so that the calling crate needs no
/// dependency of its own on them.
#[doc(hidden)]
pub mod __private {
    pub use axum;
    pub use utoipa;
}

/// Implements [`Api`] for a function's state: the document's title, the tag its operations
/// share (and what the document says of it), schemas to list beside the ones utoipa collects
/// from the handlers (it does not collect those an `IntoResponses` type names), and the
/// handlers, each routed where its `#[utoipa::path]` says.
///
/// ```ignore
/// fluxgate::http_api! {
///     MetricsState, "fluxgate metrics",
///     tag "metrics": "Outbox figures",
///     routes [summary, metrics],
/// }
/// ```
#[macro_export]
macro_rules! http_api {
    (
        $state:ty, $title:literal,
        tag $tag:literal: $description:literal,
        $(schemas [$($schema:path),+ $(,)?],)?
        routes [$($($handler:ident)::+),+ $(,)?] $(,)?
    ) => {
        impl $crate::api::Api for $state {
            const TITLE: &'static str = $title;

            fn routes() -> $crate::api::OpenApiRouter<Self> {
                // utoipa-axum's `routes!` and utoipa's derive name these two crates by name.
                use $crate::api::__private::{axum, utoipa};

                #[derive(utoipa::OpenApi)]
                #[openapi(
                    tags((name = $tag, description = $description))
                    $(, components(schemas($($schema),+)))?
                )]
                struct Operations;

                $crate::api::OpenApiRouter::with_openapi(
                    <Operations as utoipa::OpenApi>::openapi(),
                )
                // One handler per `routes!`: given several, it would route each at every path.
                $(.routes($crate::api::routes!($($handler)::+)))+
            }
        }
    };
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
