//! A start-up that cannot go on ends with one plain sentence for the person who started it:
//! it names the setting (or the port) and says what to do, the exit status is not 0, and no
//! Rust debug formatting reaches the screen.

use std::process::{Command, Output};

/// Runs `fluxgate-local` in a fresh data folder with `env`, and waits for it to give up.
fn start_with(env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxgate-local"));
    command
        .env("FLUXGATE_DATA_DIR", dir.path())
        .env("FLUXGATE_LOG_FORMAT", "text")
        .env_remove("DATABASE_URL")
        .env_remove("FLUXGATE_ADMIN_KEY")
        .env_remove("FLUXGATE_AUTH");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run fluxgate-local")
}

/// The one line a person reads: the last line on stderr, `error: …`, without Debug output.
fn sentence(output: &Output) -> String {
    assert!(!output.status.success(), "it must fail: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(line.starts_with("error: "), "stderr: {stderr}");
    for debug in ["Os {", "kind:", "Io(", "Config(", "Setting {", "Some("] {
        assert!(
            !stderr.contains(debug),
            "Debug output ({debug}) in: {stderr}"
        );
    }
    line
}

#[test]
fn a_port_in_use_names_the_port_and_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let line = sentence(&start_with(&[("PORT", &port)]));
    assert!(
        line.contains(&format!("port {port}")) && line.contains("set PORT"),
        "{line}"
    );
}

#[test]
fn a_short_admin_key_says_how_to_make_one() {
    let line = sentence(&start_with(&[
        ("FLUXGATE_ADMIN_KEY", "short"),
        ("PORT", "0"),
    ]));
    assert!(
        line.contains("FLUXGATE_ADMIN_KEY") && line.contains("openssl rand -base64 32"),
        "{line}"
    );
}

#[test]
fn an_unreachable_database_names_database_url_without_its_password() {
    // Nothing listens on port 1.
    let line = sentence(&start_with(&[
        ("DATABASE_URL", "postgres://app:s3cret@127.0.0.1:1/fluxgate"),
        ("PORT", "0"),
    ]));
    assert!(
        line.contains("DATABASE_URL") && line.contains("postgres://app:***@127.0.0.1:1/fluxgate"),
        "{line}"
    );
    assert!(!line.contains("s3cret"), "{line}");
}
