//! A start-up that cannot go on ends with one plain sentence for the person who started it:
//! it names the setting (or the port) and says what to do, the exit status is not 0, and no
//! Rust debug formatting reaches the screen.

use std::process::{Command, Output};

/// Runs `fluxgate-local` in a fresh data folder with `env`, and waits for it to give up.
fn start_with(env: &[(&str, &str)]) -> Output {
    run_with(env, &[])
}

/// [`start_with`], with a subcommand's arguments.
fn run_with(env: &[(&str, &str)], args: &[&str]) -> Output {
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
    command.args(args);
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

/// Settings, what the sentence says, and a secret it must not show.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], Option<&'a str>);

/// Settings a person gets wrong, each with what its sentence must say and must not show.
#[test]
fn a_bad_setting_is_named_with_what_to_do() {
    // A folder setting under a plain file: the folder cannot be created.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let under_file = file.path().join("x").display().to_string();
    let cannot_create = format!("cannot create {under_file}: ");
    let cases: [Case; 4] = [
        (
            &[("FLUXGATE_DATA_DIR", &under_file), ("PORT", "0")],
            &[
                "FLUXGATE_DATA_DIR",
                &cannot_create,
                "set FLUXGATE_DATA_DIR (or --data-dir) to a writable folder",
            ],
            None,
        ),
        (
            &[("FLUXGATE_WAREHOUSE_DIR", &under_file), ("PORT", "0")],
            &[
                "FLUXGATE_WAREHOUSE_DIR",
                &cannot_create,
                "set FLUXGATE_WAREHOUSE_DIR to a writable folder",
            ],
            None,
        ),
        (
            &[("FLUXGATE_ADMIN_KEY", "short"), ("PORT", "0")],
            &["FLUXGATE_ADMIN_KEY", "openssl rand -base64 32"],
            None,
        ),
        (
            // Nothing listens on port 1.
            &[
                ("DATABASE_URL", "postgres://app:s3cret@127.0.0.1:1/fluxgate"),
                ("PORT", "0"),
            ],
            &["DATABASE_URL", "postgres://app:***@127.0.0.1:1/fluxgate"],
            Some("s3cret"),
        ),
    ];
    for (env, says, hidden) in cases {
        let line = sentence(&start_with(env));
        for part in says {
            assert!(line.contains(part), "{env:?}: {line}");
        }
        if let Some(secret) = hidden {
            assert!(!line.contains(secret), "{env:?}: {line}");
        }
    }
}

/// The subcommands make the data folder too (for the SQLite database), with the same sentence.
#[test]
fn a_subcommand_names_the_data_dir_it_cannot_create() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let under_file = file.path().join("x").display().to_string();
    let line = sentence(&run_with(
        &[("FLUXGATE_DATA_DIR", &under_file)],
        &["tenants", "list"],
    ));
    assert!(
        line.starts_with(&format!(
            "error: setting FLUXGATE_DATA_DIR: cannot create {under_file}: "
        )) && line.ends_with("; set FLUXGATE_DATA_DIR (or --data-dir) to a writable folder"),
        "{line}"
    );
}
