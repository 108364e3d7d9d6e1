//! Runs a function where it was deployed: under the AWS Lambda Runtime API when
//! `AWS_LAMBDA_RUNTIME_API` is set, otherwise as an HTTP server on `PORT` with a graceful
//! shutdown (the Cloud Run and local shape). The same router serves both.

use axum::Router;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// Lambda sets this in every function's environment; nothing else does.
pub const LAMBDA_RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// Whether this process runs on AWS Lambda.
pub fn on_lambda() -> bool {
    std::env::var_os(LAMBDA_RUNTIME_API_ENV).is_some_and(|v| !v.is_empty())
}

/// Serves an HTTP function: on Lambda, API Gateway (REST v1, HTTP API v2, Function URLs) and ALB
/// events through `lambda_http`; elsewhere `axum::serve` on `0.0.0.0:port`.
pub async fn serve_http(router: Router, port: u16) -> Result<()> {
    if on_lambda() {
        tracing::info!("serving HTTP events from the Lambda Runtime API");
        let service = tower::ServiceBuilder::new()
            .map_request(without_stage_prefix)
            .service(router);
        return lambda_http::run(service).await.map_err(lambda_failed);
    }
    serve(router, port).await
}

/// Serves `router` on `0.0.0.0:port` until SIGTERM or Ctrl-C, then lets requests in flight
/// finish (Cloud Run allows 10 s after SIGTERM).
pub async fn serve(router: Router, port: u16) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port = listener.local_addr()?.port(), "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// The runtime's own failure (it cannot reach the Runtime API): the process ends and Lambda
/// starts a new one.
pub fn lambda_failed(error: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("Lambda runtime: {error}"))
}

/// `lambda_http` puts a named API Gateway stage in front of the path (`/prod/v1/events`); the
/// routers know only `/v1/events`, so the stage is taken off again. The `$default` stage and
/// Function URLs have no prefix.
pub fn without_stage_prefix(mut request: lambda_http::Request) -> lambda_http::Request {
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

/// Resolves on SIGTERM (platform shutdown) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
