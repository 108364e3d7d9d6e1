//! gRPC failures as fluxgate reports them (Pub/Sub, the BigQuery Storage Write API).

/// A gRPC status as it is reported, `Code: message` (the status's own `Display` spells every
/// field out and appends its source), keeping the status's source as the cause.
#[derive(Debug)]
pub struct GrpcStatus(pub tonic::Status);

impl std::fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for GrpcStatus {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// A channel to `endpoint` that connects at its first call: TLS with the system's roots for
/// `https://` (Google's endpoints), plain HTTP/2 otherwise (an emulator, a test server). `bad`
/// turns a malformed endpoint into the error that names its setting.
pub fn lazy_channel(
    endpoint: &str,
    bad: impl Fn(tonic::transport::Error) -> crate::error::Error,
) -> crate::error::Result<tonic::transport::Channel> {
    use std::time::Duration;
    use tonic::transport::{ClientTlsConfig, Endpoint};

    let mut channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(&bad)?
        .connect_timeout(Duration::from_secs(10))
        // Idle connections between scheduled runs stay usable.
        .http2_keep_alive_interval(Duration::from_secs(30));
    if endpoint.starts_with("https://") {
        channel = channel
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(&bad)?;
    }
    Ok(channel.connect_lazy())
}
