//! What the tests that start processes and servers share: a free loopback port, and a time
//! limit for waiting on something another process does.

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A loopback port nothing listens on (free a moment ago).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// How long a wait may take, and how often it looks again.
pub struct Deadline {
    at: Instant,
    every: Duration,
}

impl Deadline {
    /// A wait of at most `within`, looking again every `every`.
    pub fn after(within: Duration, every: Duration) -> Self {
        Self {
            at: Instant::now() + within,
            every,
        }
    }

    /// Sleeps until the next look, or panics with `why()` once the time is up.
    pub async fn next(&self, why: impl FnOnce() -> String) {
        assert!(Instant::now() < self.at, "{}", why());
        tokio::time::sleep(self.every).await;
    }
}
