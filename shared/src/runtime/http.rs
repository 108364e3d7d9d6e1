//! HTTP functions: on Lambda, API Gateway (REST v1, HTTP API v2, Function URLs) and ALB events
//! through `lambda_http`; elsewhere `axum::serve` on `0.0.0.0:PORT` with a graceful shutdown.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};

use axum::Router;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

use super::lambda::runtime_failed;
use super::shutdown;

/// Serves `router` with the events of the Lambda Runtime API.
pub(super) async fn serve_lambda(router: Router) -> Result<()> {
    tracing::info!("serving HTTP events from the Lambda Runtime API");
    let service = tower::ServiceBuilder::new()
        .map_request(without_stage_prefix)
        .service(router);
    lambda_http::run(service).await.map_err(runtime_failed)
}

/// Serves `router` on `0.0.0.0:port` until SIGTERM or Ctrl-C, then lets requests in flight
/// finish (Cloud Run allows 10 s after SIGTERM).
pub async fn serve(router: Router, port: u16) -> Result<()> {
    let listener = listen(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).await?;
    tracing::info!(port = listener.local_addr()?.port(), "listening");
    let stop = shutdown();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(())
}

/// Binds the HTTP port. The address problems a person can fix themselves come back as the
/// setting to change (`PORT`, or `FLUXGATE_BIND` for the address of `fluxgate-local`).
pub async fn listen(address: IpAddr, port: u16) -> Result<TcpListener> {
    TcpListener::bind((address, port)).await.map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => Error::setting(
            "PORT",
            format!(
                "port {port} on {address} is already in use; stop what listens there \
                 (another fluxgate?) or set PORT to a free port"
            ),
        ),
        ErrorKind::PermissionDenied => Error::setting(
            "PORT",
            format!("port {port} needs privileges this process does not have; set PORT to 1024 or above"),
        ),
        ErrorKind::AddrNotAvailable => Error::setting(
            "FLUXGATE_BIND",
            format!("{address} is not an address of this machine; use 127.0.0.1 or 0.0.0.0"),
        ),
        _ => Error::Io(e),
    })
}

/// `lambda_http` puts a named API Gateway stage in front of the path (`/prod/v1/events`); the
/// routers know only `/v1/events`, so the stage is taken off again. The `$default` stage and
/// Function URLs have no prefix.
///
/// lambda_http's own `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is not enough: it only stops
/// lambda_http from adding the stage, while an HTTP API (payload 2.0) on a named stage already
/// sends `rawPath` with it (`/prod/v1/events`), which lambda_http 1.3 passes on unchanged.
fn without_stage_prefix(mut request: lambda_http::Request) -> lambda_http::Request {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        Some(RequestContext::ApiGatewayV1(context)) => context.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return request;
    };
    let prefix = format!("/{stage}");
    let uri = request.uri();
    let Some(rest) = uri.path().strip_prefix(&prefix) else {
        return request;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return request;
    }
    let path = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return request,
    }
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}
