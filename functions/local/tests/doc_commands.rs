//! Every local command of the README and of the docs, run as written against the real
//! `fluxgate-local`, in the order a reader meets them: README.md first (Try it makes the events
//! the reference examples use), then the pages of `docs/` in name order.
//!
//! A `sh` block is local when it talks to `127.0.0.1:8080`, reads `.fluxgate/` or runs a
//! subcommand of `scripts/dev.sh`; blocks that start the services themselves (`scripts/dev.sh` alone,
//! `scripts/test.sh`) are the ones this test stands in for, and the deploy guides' blocks talk
//! to a cloud. Two things differ from a reader's terminal, and only these: the port is a free
//! one instead of 8080 (tests run beside a developer's `scripts/dev.sh`), and `scripts/dev.sh`
//! runs the binary cargo built for this test instead of building it again.
//!
//! Each `curl` must answer, and with the status its comment names (`# 401 …`,
//! `# HTTP/1.1 202 Accepted`), or with a 2xx when its comment names none. Any other failing
//! command fails the test too (`set -euo pipefail`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Pages whose commands are for a local run. The deploy guides and the benchmarks are not:
/// their commands need a cloud account or take minutes.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            name.ends_with(".md") && !name.starts_with("DEPLOY-") && name != "BENCHMARKS.md"
        })
        .collect();
    docs.sort();
    let mut all = vec![root.join("README.md")];
    all.extend(docs);
    all
}

/// One fenced `sh` block: where it starts, and its lines.
struct Block {
    at: String,
    lines: Vec<String>,
}

fn sh_blocks(page: &Path, root: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(page).expect("page");
    let name = page
        .strip_prefix(root)
        .unwrap_or(page)
        .display()
        .to_string();
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (number, line) in text.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => {
                current = Some(Block {
                    at: format!("{name}:{}", number + 1),
                    lines: Vec::new(),
                });
            }
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => block.lines.push(line.to_owned()),
            (None, _) => {}
        }
    }
    blocks
}

fn is_local(block: &Block) -> bool {
    let starts_services = block.lines.iter().any(|l| {
        let command = l.split('#').next().unwrap_or_default().trim();
        command == "scripts/dev.sh" || command.starts_with("scripts/test.sh")
    });
    let local = block.lines.iter().any(|l| {
        l.contains("127.0.0.1:8080")
            || l.contains(".fluxgate/")
            || l.trim_start().starts_with("scripts/dev.sh ")
    });
    local && !starts_services
}

/// The HTTP status a comment names: the first three-digit number from 100 to 599 in it.
fn status_in(comment: &str) -> Option<u16> {
    comment
        .split(|c: char| !c.is_ascii_digit())
        .filter(|word| word.len() == 3)
        .filter_map(|word| word.parse::<u16>().ok())
        .find(|code| (100..600).contains(code))
}

/// The comment at the end of a line (` # …`), if any.
fn trailing_comment(line: &str) -> Option<&str> {
    line.find(" # ").map(|at| &line[at + 3..])
}

/// The block as the test runs it: each `curl` command told the status its comment expects.
fn prepared(block: &Block, port: u16) -> String {
    let lines = &block.lines;
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let first = i;
        // A command runs on while its lines end in a backslash.
        while lines[i].trim_end().ends_with('\\') && i + 1 < lines.len() {
            i += 1;
        }
        let last = i;
        let mut command: Vec<String> = lines[first..=last].to_vec();
        if command[0].trim_start().starts_with("curl ") {
            let output_comment = lines
                .get(last + 1)
                .filter(|l| l.trim_start().starts_with("# HTTP/"))
                .map(String::as_str);
            let expected = trailing_comment(&lines[last])
                .and_then(status_in)
                .or_else(|| output_comment.and_then(status_in));
            if let Some(code) = expected {
                command[0] = format!("FG_EXPECT={code} {}", command[0]);
            }
        }
        out.extend(command);
        i += 1;
    }
    out.join("\n")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
}

/// `curl` as the docs use it, checked: it must connect, and answer the expected status.
const PREAMBLE: &str = r#"
curl() {
  local out code want=${FG_EXPECT:-2xx}
  out=$(command curl -sS -w '\n%{http_code}' "$@") || {
    echo "FAILED: curl $* did not get an answer" >&2
    return 1
  }
  code=${out##*$'\n'}
  printf '%s\n' "${out%$'\n'*}"
  case $want in
    2xx) [[ $code == 2?? ]] ;;
    *) [[ $code == "$want" ]] ;;
  esac || {
    echo "FAILED: curl $* answered $code; the docs say $want" >&2
    return 1
  }
}
"#;

struct Local(Child);

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_local_command_of_the_readme_and_the_docs_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = env!("CARGO_BIN_EXE_fluxgate-local");
    let work = tempfile::tempdir().expect("temp dir");

    // `scripts/dev.sh` of the reader's checkout, minus the build: the binary under test.
    std::fs::create_dir_all(work.path().join("scripts")).expect("scripts/");
    let dev_sh = work.path().join("scripts/dev.sh");
    std::fs::write(&dev_sh, format!("#!/bin/sh\nexec '{binary}' \"$@\"\n")).expect("dev.sh");
    let chmod = Command::new("chmod").arg("+x").arg(&dev_sh).status();
    assert!(chmod.is_ok_and(|s| s.success()), "chmod scripts/dev.sh");

    let log = work.path().join("local.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut server = Local(
        Command::new(binary)
            .current_dir(work.path())
            // A free port, which the banner names.
            .env("PORT", "0")
            .env("FLUXGATE_LOG_FORMAT", "text")
            .env_remove("DATABASE_URL")
            .env_remove("FLUXGATE_DATA_DIR")
            .env_remove("FLUXGATE_AUTH")
            .env_remove("FLUXGATE_ADMIN_KEY")
            .env_remove("FLUXGATE_DEV_TENANT")
            .stdout(Stdio::from(log_file.try_clone().expect("log")))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start fluxgate-local"),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // The start-up banner says where everything is; the port is read from it.
    const UP: &str = "fluxgate local is up on http://127.0.0.1:";
    let deadline = Instant::now() + Duration::from_secs(30);
    let port: u16 = loop {
        let text = log_text();
        if let Some(at) = text.find(UP) {
            let digits: String = text[at + UP.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            break digits.parse().expect("the banner's port");
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("fluxgate-local exited at start ({status}):\n{text}");
        }
        assert!(Instant::now() < deadline, "no banner in 30 s:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let banner = log_text();
    for expected in [
        ".fluxgate/dev-api-key",
        ".fluxgate/admin-key",
        ".fluxgate/fail-warehouse",
        "data dir",
    ] {
        assert!(
            banner.contains(expected),
            "banner without {expected}:\n{banner}"
        );
    }

    let mut script = String::from("set -euo pipefail\n");
    script.push_str(PREAMBLE);
    let mut per_page = Vec::new();
    for page in pages(&root) {
        let blocks: Vec<Block> = sh_blocks(&page, &root)
            .into_iter()
            .filter(is_local)
            .collect();
        per_page.push((
            page.file_name().map(|n| n.to_string_lossy().into_owned()),
            blocks.len(),
        ));
        for block in blocks {
            script.push_str(&format!("\necho '>>> {}' >&2\n", block.at));
            script.push_str(&prepared(&block, port));
            script.push('\n');
        }
    }
    // The pages this test is for have their commands found: a renamed fence or a moved page
    // must not make it run nothing.
    let count = |name: &str| {
        per_page
            .iter()
            .find(|(page, _)| page.as_deref() == Some(name))
            .map_or(0, |(_, n)| *n)
    };
    assert!(count("README.md") >= 4, "README blocks found: {per_page:?}");
    assert!(
        count("API.md") >= 4,
        "docs/API.md blocks found: {per_page:?}"
    );

    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env_remove("FLUXGATE_DATA_DIR")
        .env_remove("DATABASE_URL")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "a documented command failed (the last `>>>` names its block):\n{stderr}\n--- output:\n{stdout}\n--- fluxgate-local:\n{}",
        log_text()
    );
    // What the README promises at the end of Try it: the failed event came back DONE.
    assert!(
        stdout.contains(r#""eventId":"order-1002""#) && stdout.contains(r#""status":"DONE""#),
        "{stdout}"
    );
    assert!(
        !work.path().join(".fluxgate/fail-warehouse").exists(),
        "Try it leaves the fault switch off"
    );
}

#[test]
fn expected_statuses_are_read_from_the_comments() {
    let block = Block {
        at: "x".into(),
        lines: [
            "curl -i http://127.0.0.1:8080/v1/events \\",
            "  -d '{}'",
            "# HTTP/1.1 202 Accepted   {\"status\":\"accepted\"}",
            "curl http://127.0.0.1:8080/v1/events/dev/x     # no key: 401 problem+json",
            "curl -H \"$KEY\" http://127.0.0.1:8080/v1/outbox/summary   # {\"done\":1}",
        ]
        .map(str::to_owned)
        .to_vec(),
    };
    let text = prepared(&block, 9999);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("FG_EXPECT=202 curl -i http://127.0.0.1:9999/"),
        "{text}"
    );
    assert!(lines[3].starts_with("FG_EXPECT=401 curl "), "{text}");
    assert!(lines[4].starts_with("curl "), "{text}");
}
