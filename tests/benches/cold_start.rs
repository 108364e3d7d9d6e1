//! Cold start of the Lambda function binaries: the time from spawning a release binary to its
//! first Lambda Runtime API request (`GET /2018-06-01/runtime/invocation/next`), which is when
//! Lambda can hand it the first event. Everything before that request is billed init time.
//! Baseline, in the same run: `curl` making the same request (a process start plus one HTTP
//! request, the floor for any function). Also the binaries' sizes.
//!
//!   scripts/bench.sh cold-start      # builds the release binaries first, then runs this
//!   (the harness itself runs in the test profile: it only spawns processes and waits)
//!
//! The functions start as on Lambda: `AWS_LAMBDA_RUNTIME_API` set (pointing at this bench), a
//! lazy database pool (no connection at init), SQS and BigQuery clients built, nothing sent.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fluxgate_tests::bench::{percentile, release_binary};

const RUNS: usize = 25;
const FUNCTIONS: &[&str] = &[
    "fluxgate-ingest",
    "fluxgate-outbox-drain",
    "fluxgate-worker",
    "fluxgate-replay",
    "fluxgate-metrics",
];

/// Spawns `command` and answers how long until its first request reaches `listener`.
fn time_to_first_request(listener: &TcpListener, mut command: Command) -> Duration {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (stream, _) = listener.accept().expect("accept");
    let mut request_line = String::new();
    BufReader::new(&stream)
        .read_line(&mut request_line)
        .expect("read the request line");
    let elapsed = started.elapsed();
    assert!(
        request_line.starts_with("GET /2018-06-01/runtime/invocation/next"),
        "unexpected first request {request_line:?}"
    );
    drop(stream);
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn function_command(binary: &Path, runtime_api: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        // Lazy on Lambda: the URL is parsed, nothing is connected.
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        .env("FLUXGATE_DB_MIGRATE", "false")
        .env("FLUXGATE_QUEUE", "sqs")
        .env(
            "FLUXGATE_SQS_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/fluxgate-events",
        )
        .env("FLUXGATE_SINK", "bigquery")
        .env("FLUXGATE_BIGQUERY_PROJECT", "bench")
        .env("FLUXGATE_BIGQUERY_ENDPOINT", "http://127.0.0.1:9")
        // The default mode's gRPC channel, made lazily (nothing is connected at start).
        .env("FLUXGATE_BIGQUERY_GRPC_ENDPOINT", "http://127.0.0.1:9")
        .env(
            "FLUXGATE_ADMIN_KEY",
            "bench-admin-key-0123456789abcdefghijklmnop",
        );
    command
}

fn measure(listener: &TcpListener, make: impl Fn() -> Command) -> (Duration, Duration) {
    // One unmeasured run warms the page cache, as a warm Lambda host would have it.
    time_to_first_request(listener, make());
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| time_to_first_request(listener, make()))
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.95))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let runtime_api = address.to_string();

    let next = format!("http://{address}/2018-06-01/runtime/invocation/next");
    let (base_p50, base_p95) = measure(&listener, || {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-m", "5", &next]);
        curl
    });

    println!(
        "\nCold start: process spawn to the first Runtime API request ({RUNS} runs each, release build)\n"
    );
    println!("| binary | size (MiB) | p50 ms | p95 ms | p50 / baseline |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| baseline: curl, same request | – | {:.1} | {:.1} | 1.00 |",
        ms(base_p50),
        ms(base_p95)
    );
    for name in FUNCTIONS {
        let binary = release_binary(name);
        let size = std::fs::metadata(&binary).expect("metadata").len() as f64 / 1_048_576.0;
        let (p50, p95) = measure(&listener, || function_command(&binary, &runtime_api));
        println!(
            "| {name} | {size:.1} | {:.1} | {:.1} | {:.2} |",
            ms(p50),
            ms(p95),
            ms(p50) / ms(base_p50)
        );
    }
}
