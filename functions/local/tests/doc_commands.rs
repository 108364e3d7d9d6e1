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
//!
//! In the README, whose Try it runs on a fresh folder, the comments are exact: what a command's
//! comment (at the end of its last line, or on the `#` lines right after it) shows of its output
//! must be in that output. That is each JSON member (`"done":1`, `"status":"DEAD"`), each line of
//! Prometheus text (`# fluxgate_events_dead 1.0`) and each `.fluxgate/…` path; `…` stands for
//! anything. The reference pages of `docs/` show figures of a bigger run, so there only the
//! statuses are checked.

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

/// One fenced `sh` block: its page, the line number of its fence, and its lines.
struct Block {
    page: String,
    fence: usize,
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
                    page: name.clone(),
                    fence: number + 1,
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

/// The quote a shell line leaves open, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
    /// `$'…'`: backslash escapes inside.
    AnsiC,
}

/// The quote open at the end of `line`, given the one open at its start. A `#` after blank
/// space outside quotes starts a comment.
fn quote_after(line: &str, mut quote: Quote) -> Quote {
    let mut chars = line.chars().peekable();
    let mut after_blank = true;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Quote::None, '\\') | (Quote::Double | Quote::AnsiC, '\\') => {
                chars.next();
            }
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::None, '$') if chars.peek() == Some(&'\'') => {
                chars.next();
                quote = Quote::AnsiC;
            }
            (Quote::None, '#') if after_blank => return quote,
            (Quote::Single | Quote::AnsiC, '\'') | (Quote::Double, '"') => quote = Quote::None,
            _ => {}
        }
        after_blank = c.is_whitespace();
    }
    quote
}

/// One command of a block: its first line's index, its lines (a command runs on while a line
/// ends in a backslash or leaves a quote open), and the comment lines right after it.
struct Step<'a> {
    first: usize,
    lines: &'a [String],
    shown: &'a [String],
}

/// The commands of a block, and the lines between them (blank, comments), in order.
fn steps(lines: &[String]) -> Vec<Result<Step<'_>, &String>> {
    let is_comment = |l: &String| l.trim_start().starts_with('#');
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() || is_comment(&lines[i]) {
            out.push(Err(&lines[i]));
            i += 1;
            continue;
        }
        let first = i;
        let mut quote = Quote::None;
        loop {
            quote = quote_after(&lines[i], quote);
            let goes_on = quote != Quote::None || lines[i].trim_end().ends_with('\\');
            if !(goes_on && i + 1 < lines.len()) {
                break;
            }
            i += 1;
        }
        let shown_end = (i + 1..lines.len())
            .find(|&j| !is_comment(&lines[j]))
            .unwrap_or(lines.len());
        out.push(Ok(Step {
            first,
            lines: &lines[first..=i],
            shown: &lines[i + 1..shown_end],
        }));
        i += 1;
    }
    out
}

/// Something a command's comment shows of its output.
#[derive(Debug, PartialEq, Eq)]
enum Promise {
    /// These pieces in this order (`…` between them); a number must not go on with more digits.
    Has { pieces: Vec<String>, number: bool },
    /// This whole line.
    Line(String),
}

impl Promise {
    fn has(text: &str, number: bool) -> Promise {
        Promise::Has {
            pieces: text.split('…').map(str::to_owned).collect(),
            number,
        }
    }

    /// A bash test of the output in `file`, which names the promise when it fails.
    fn check(&self, file: &str) -> String {
        let quoted = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
        let (test, says) = match self {
            Promise::Has { pieces, number } => {
                let pattern = pieces
                    .iter()
                    .map(|p| quoted(p))
                    .collect::<Vec<_>>()
                    .join("*");
                let test = if *number {
                    format!(
                        r#"[[ $(<"{file}") == *{pattern}[!0-9.]* || $(<"{file}") == *{pattern} ]]"#
                    )
                } else {
                    format!(r#"[[ $(<"{file}") == *{pattern}* ]]"#)
                };
                (test, pieces.join("…"))
            }
            Promise::Line(line) => (
                format!(r#"grep -qxF -- {} "{file}""#, quoted(line)),
                format!("the line {line}"),
            ),
        };
        format!("{test} || fg_broken {}", quoted(&says))
    }
}

/// The JSON members in a text (`"key":"value"`, `"key":12`), each with whether its value is a
/// number. Values that are objects or arrays are skipped (their members are found inside).
fn json_members(text: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '"' {
            let key_end = (i + 1..chars.len())
                .find(|&j| !word(chars[j]))
                .unwrap_or(chars.len());
            let value = key_end + 2;
            if key_end > i + 1 && chars.get(key_end..value) == Some(&['"', ':'][..]) {
                let end = if chars.get(value) == Some(&'"') {
                    (value + 1..chars.len())
                        .find(|&j| chars[j] == '"')
                        .map(|j| j + 1)
                } else {
                    (value..=chars.len())
                        .find(|&j| {
                            chars
                                .get(j)
                                .is_none_or(|&c| !(word(c) || matches!(c, '.' | '-' | '+')))
                        })
                        .filter(|&j| j > value)
                };
                if let Some(end) = end {
                    let member: String = chars[i..end].iter().collect();
                    let number = chars[value..end]
                        .iter()
                        .collect::<String>()
                        .parse::<f64>()
                        .is_ok();
                    found.push((member, number));
                    i = end;
                    continue;
                }
            }
        }
        i += 1;
    }
    found
}

/// A line of Prometheus text: a metric name, maybe labels, a number.
fn is_sample(line: &str) -> bool {
    let Some((name, value)) = line.rsplit_once(' ') else {
        return false;
    };
    let bare = name.split('{').next().unwrap_or_default();
    !bare.is_empty()
        && bare.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        && (name == bare || name.ends_with('}'))
        && value.parse::<f64>().is_ok()
}

/// What a command's comments show of its output (see the module's comment).
fn promises(step: &Step) -> Vec<Promise> {
    let trailing = step.lines.last().and_then(|l| trailing_comment(l));
    let shown: Vec<&str> = step
        .shown
        .iter()
        .map(|l| l.trim_start().trim_start_matches('#').trim())
        .collect();
    let mut found = Vec::new();
    for text in trailing.into_iter().chain(shown.iter().copied()) {
        for (member, number) in json_members(text) {
            found.push(Promise::has(&member, number));
        }
        for path in text
            .split_whitespace()
            .filter(|w| w.starts_with(".fluxgate/"))
        {
            found.push(Promise::has(path, false));
        }
    }
    for line in shown.into_iter().filter(|l| is_sample(l)) {
        found.push(Promise::Line(line.to_owned()));
    }
    found
}

/// A command as it ran: where the docs have it, its text, and the file its output went to.
struct Ran {
    at: String,
    text: String,
    output: PathBuf,
}

/// The block as the test runs it: each `curl` told the status its comment expects, each
/// command's output kept in a file of `outputs` (and printed), and, with `exact`, checked
/// against what its comments show.
fn prepared(block: &Block, port: u16, exact: bool, outputs: &Path, ran: &mut Vec<Ran>) -> String {
    let mut out = Vec::new();
    for step in steps(&block.lines) {
        let step = match step {
            Ok(step) => step,
            Err(line) => {
                out.push(line.clone());
                continue;
            }
        };
        let at = format!("{}:{}", block.page, block.fence + 1 + step.first);
        let mut command: Vec<String> = step.lines.to_vec();
        if command[0].trim_start().starts_with("curl ") {
            let output_comment = step
                .shown
                .first()
                .filter(|l| l.trim_start().starts_with("# HTTP/"))
                .map(String::as_str);
            let expected = step
                .lines
                .last()
                .and_then(|l| trailing_comment(l))
                .and_then(status_in)
                .or_else(|| output_comment.and_then(status_in));
            if let Some(code) = expected {
                command[0] = format!("FG_EXPECT={code} {}", command[0]);
            }
        }
        let file = outputs.join(format!("{}.out", ran.len()));
        let file_text = file.display().to_string();
        out.push(format!("echo '>>> {at}' >&2"));
        out.push("{".into());
        out.extend(command);
        out.push(format!(r#"}} > "{file_text}""#));
        out.push(format!(r#"cat "{file_text}""#));
        if exact {
            out.extend(promises(&step).iter().map(|p| p.check(&file_text)));
        }
        ran.push(Ran {
            at,
            text: step.lines.join("\n"),
            output: file,
        });
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
fg_broken() {
  echo "FAILED: the output above lacks what the docs' comment shows: $1" >&2
  return 1
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

    let outputs = work.path().join("outputs");
    std::fs::create_dir_all(&outputs).expect("outputs/");
    let mut ran = Vec::new();
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
        let exact = page.file_name().is_some_and(|n| n == "README.md");
        for block in blocks {
            script.push('\n');
            script.push_str(&prepared(&block, port, exact, &outputs, &mut ran));
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
        "a documented command failed (the last `>>>` names it):\n{stderr}\n--- output:\n{stdout}\n--- fluxgate-local:\n{}",
        log_text()
    );
    // What the README promises at the end of Try it, in its last command's own output: the
    // failed event came back DONE.
    let last = ran
        .iter()
        .rfind(|r| r.at.starts_with("README.md:"))
        .expect("README commands ran");
    let output = std::fs::read_to_string(&last.output).unwrap_or_default();
    assert!(
        last.text.contains("/v1/events/dev/order-1002")
            && output.contains(r#""eventId":"order-1002""#)
            && output.contains(r#""status":"DONE""#),
        "{}: {}\nprinted: {output}",
        last.at,
        last.text
    );
    assert!(
        !work.path().join(".fluxgate/fail-warehouse").exists(),
        "Try it leaves the fault switch off"
    );
}

#[test]
fn expected_statuses_and_outputs_are_read_from_the_comments() {
    let block = Block {
        page: "README.md".into(),
        fence: 10,
        lines: [
            "curl -i http://127.0.0.1:8080/v1/events \\",
            "  -d '{\"a\":1,",
            "       \"b\":2}'",
            "# HTTP/1.1 202 Accepted   {\"status\":\"accepted\"}",
            "curl http://127.0.0.1:8080/v1/events/dev/x     # no key: 401 problem+json",
            "curl -H \"$KEY\" http://127.0.0.1:8080/v1/outbox/summary   # {\"tenantId\":\"dev\",…,\"done\":1,…}",
            "curl -s http://127.0.0.1:8080/metrics | grep -E '^fluxgate_events_dead '",
            "# fluxgate_events_dead 1.0",
            "find .fluxgate/warehouse -name '*.jsonl'   # .fluxgate/warehouse/event_date=…/part-….jsonl",
        ]
        .map(str::to_owned)
        .to_vec(),
    };
    let mut ran = Vec::new();
    let text = prepared(&block, 9999, true, Path::new("/o"), &mut ran);
    let at: Vec<&str> = ran.iter().map(|r| r.at.as_str()).collect();
    // The quoted body over two lines is one command, with its output comment after it.
    assert_eq!(
        at,
        [
            "README.md:11",
            "README.md:15",
            "README.md:16",
            "README.md:17",
            "README.md:19"
        ]
    );
    assert!(
        text.contains("{\nFG_EXPECT=202 curl -i http://127.0.0.1:9999/v1/events \\\n  -d '{\"a\":1,\n       \"b\":2}'\n} > \"/o/0.out\""),
        "{text}"
    );
    assert!(text.contains("FG_EXPECT=401 curl "), "{text}");
    assert!(text.contains("\ncurl -H \"$KEY\" "), "{text}");
    for check in [
        r#"[[ $(<"/o/0.out") == *'"status":"accepted"'* ]] || fg_broken"#,
        r#"[[ $(<"/o/2.out") == *'"tenantId":"dev"'* ]]"#,
        r#"[[ $(<"/o/2.out") == *'"done":1'[!0-9.]* || $(<"/o/2.out") == *'"done":1' ]]"#,
        r#"grep -qxF -- 'fluxgate_events_dead 1.0' "/o/3.out" || fg_broken 'the line fluxgate_events_dead 1.0'"#,
        r#"[[ $(<"/o/4.out") == *'.fluxgate/warehouse/event_date='*'/part-'*'.jsonl'* ]]"#,
    ] {
        assert!(text.contains(check), "no {check} in:\n{text}");
    }
    // Prose and the `a`/`b` of the request body are not promises.
    assert!(!text.contains(r#"'"a":1'"#), "{text}");
    assert_eq!(text.matches("fg_broken").count(), 5, "{text}");
}

#[test]
fn a_string_value_with_an_ellipsis_is_a_pattern() {
    let members = json_members(r#"order-1002: "status":"DEAD","lastError":"refused by …""#);
    assert_eq!(
        members,
        [
            (r#""status":"DEAD""#.to_owned(), false),
            (r#""lastError":"refused by …""#.to_owned(), false),
        ]
    );
    assert_eq!(
        Promise::has(&members[1].0, false),
        Promise::Has {
            pieces: vec![r#""lastError":"refused by "#.into(), "\"".into()],
            number: false
        }
    );
}
