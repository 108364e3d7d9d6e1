//! The platform's request to stop: SIGTERM (Lambda, Cloud Run, Kubernetes) or Ctrl-C.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

/// Cancelled once the process is asked to stop. The same token for the whole process: the
/// HTTP server stops taking requests on it, a drain stops claiming new rounds on it. Call it
/// inside the tokio runtime (the first call starts listening for the signals).
pub fn shutdown() -> CancellationToken {
    static SHUTDOWN: OnceLock<CancellationToken> = OnceLock::new();
    SHUTDOWN
        .get_or_init(|| {
            let token = CancellationToken::new();
            let cancel = token.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                cancel.cancel();
            });
            token
        })
        .clone()
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
