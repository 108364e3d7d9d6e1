//! A function binary running under a real Lambda Runtime API: `cargo lambda watch
//! --only-lambda-apis` (cargo-lambda, installed by `scripts/test.sh` into its Python venv)
//! serves the Runtime API and the Lambda Invoke API on a port of its own, and the binary, built
//! by cargo for this test, is started beside it with the environment Lambda gives a function.
//! Invocations go through cargo-lambda exactly as `cargo lambda invoke` sends them.
//!
//! cargo-lambda is not asked to build the binary itself: its build would take the cargo lock of
//! the test run and, on two cores, minutes out of the first invocation's deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Deadline, free_port};

/// Overrides where cargo-lambda is found (default: `cargo-lambda` on `PATH`, then the venv
/// `scripts/test.sh` makes).
pub const CARGO_LAMBDA_ENV: &str = "FLUXGATE_TEST_CARGO_LAMBDA";

/// The name every function is invoked by; one emulator serves one function.
pub const FUNCTION_NAME: &str = "_";

fn cargo_lambda() -> PathBuf {
    if let Some(path) = std::env::var_os(CARGO_LAMBDA_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("cargo-lambda"))
        .find(|candidate| candidate.is_file());
    let venv = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/fluxgate/venv/bin/cargo-lambda"));
    on_path.or(venv.filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!(
            "cargo-lambda is not installed; tests that need the Lambda Runtime API never skip.\n\
                 `bash scripts/test.sh` installs it (scripts/requirements-test.txt) into \
                 ~/.cache/fluxgate/venv; or `pip install cargo-lambda` and put it on PATH \
                 (or point {CARGO_LAMBDA_ENV} at it)"
        )
    })
}

/// The event EventBridge sends a function on a schedule (the drain's trigger).
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-22T05:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/fluxgate-drain"],
        "detail": {}
    })
}

/// One function binary under cargo-lambda's Runtime API. Both processes are killed on drop.
pub struct LambdaFunction {
    emulator: Child,
    function: Child,
    invoke_url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LambdaFunction {
    /// Starts the emulator, then `binary` with `env` (and the Lambda environment), and waits
    /// until the emulator answers.
    pub async fn start(binary: &Path, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("lambda.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let port = free_port();
        let mut emulator = Command::new(cargo_lambda())
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            // cargo-lambda reads the workspace's `Cargo.toml` (`cargo metadata`) at start.
            .current_dir(crate::repository_root())
            .stdout(Stdio::from(log_file.try_clone().expect("log")))
            .stderr(Stdio::from(log_file.try_clone().expect("log")))
            .spawn()
            .expect("start cargo lambda watch");
        wait_for_emulator(&mut emulator, port, &log).await;
        // Started only once the Runtime API listens: a function that cannot reach it exits.
        let runtime_api = format!("http://127.0.0.1:{port}/.rt");
        let mut command = Command::new(binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("FLUXGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log_file.try_clone().expect("log")))
            .stderr(Stdio::from(log_file));
        for (name, value) in env {
            command.env(name, value);
        }
        let function = command.spawn().expect("start the function binary");
        Self {
            emulator,
            function,
            invoke_url: format!(
                "http://127.0.0.1:{port}/2015-03-31/functions/{FUNCTION_NAME}/invocations"
            ),
            log,
            _dir: dir,
        }
    }

    /// Invokes the function with `event` and answers its response document. A function error
    /// (an `Err` of the handler) comes back as `Err` with the error document.
    pub async fn invoke(&mut self, event: &Value) -> Result<Value, Value> {
        let response = reqwest::Client::new()
            .post(&self.invoke_url)
            .timeout(Duration::from_secs(120))
            .json(event)
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoke through cargo-lambda: {e}\n{}", self.log_text()));
        let function_error = response.headers().contains_key("x-amz-function-error");
        let status = response.status();
        let text = response.text().await.expect("invoke response body");
        let document: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "invoke answered {status} with non-JSON {text:?}: {e}\n{}",
                self.log_text()
            )
        });
        if function_error || !status.is_success() {
            Err(document)
        } else {
            Ok(document)
        }
    }

    /// What the emulator and the function wrote so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn wait_for_emulator(emulator: &mut Child, port: u16, log: &Path) {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Deadline::after(Duration::from_secs(60), Duration::from_millis(100));
    loop {
        if let Some(status) = emulator.try_wait().expect("try_wait") {
            panic!("cargo lambda watch exited ({status}):\n{}", log_text());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        let why = || {
            format!(
                "cargo lambda watch did not listen on {port} in 60 s:\n{}",
                log_text()
            )
        };
        deadline.next(why).await;
    }
}

impl Drop for LambdaFunction {
    fn drop(&mut self) {
        let _ = self.function.kill();
        let _ = self.function.wait();
        let _ = self.emulator.kill();
        let _ = self.emulator.wait();
    }
}
