//! The Google Cloud deployment checked against the code, so the two cannot drift apart.
//!
//! Every manifest in `cloudrun/` is parsed and must: name a function binary that exists (the
//! `[[bin]]` names of `functions/*/Cargo.toml`), set only environment variables that the code
//! reads (the `env = "…"` attributes and `env::var("…")` calls under `shared/src` and the
//! function's own crate, found by reading the source now, so new settings count the day they
//! land) with values the code accepts (enum names, numbers, durations), take the database URL
//! from Secret Manager, probe the health routes the code serves, and never be public. The
//! settings in `cloudrun/pipeline.env` and `scripts/deploy-gcp.sh` are checked against them.
//!
//! No cloud is involved: this is about our files agreeing with our code. `gcloud run services
//! replace` itself validates the Knative schema when it deploys.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use fluxgate::config::{parse_duration, parse_schedule};
use fluxgate_tests::repository_root;
use serde_yaml_ng::Value;

/// Names fixed by the team's brief for work that other branches are landing (what, and the
/// branch that brings it). The manifests use them already; until that branch is merged the
/// source cannot show them, so they are accepted from here. Nothing else is: a typo still fails.
/// Once the source has one of them the source rules (per crate, value checks) apply and the
/// entry is only a leftover that the test names on stderr.
const AWAITED_BINS: &[(&str, &str)] = &[];
const AWAITED_ENV: &[(&str, &str)] = &[];
/// (variable, value, branch): enum values the brief names before their variant exists.
const AWAITED_VALUES: &[(&str, &str, &str)] = &[];
const AWAITED_ROUTES: &[(&str, &str)] = &[];

/// What runs on Cloud Run: these services, and the drain as a job.
const SERVICES: &[&str] = &[
    "fluxgate-ingest",
    "fluxgate-worker",
    "fluxgate-replay",
    "fluxgate-metrics",
];
const JOBS: &[&str] = &["fluxgate-outbox-drain"];

/// Set by Cloud Run itself; a manifest that sets them is rejected at deploy time.
const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// Example values for the deploy-time placeholders, to check the values that depend on them.
const SAMPLE_PLACEHOLDERS: &[(&str, &str)] = &[
    ("PROJECT_ID", "demo-project"),
    ("REGION", "europe-west1"),
    (
        "IMAGE_REPO",
        "europe-west1-docker.pkg.dev/demo-project/fluxgate",
    ),
    ("IMAGE_TAG", "0123456789ab"),
    ("DB_SECRET", "fluxgate-database-url"),
    ("CLOUD_SQL_INSTANCE", "demo-project:europe-west1:fluxgate"),
];

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// What the code reads and serves, found in the source.

/// Where a setting or route lives: the shared crate (every function) or one function's crate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Shared,
    Crate(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
enum ValueKind {
    Any,
    Integer,
    Bool,
    Duration,
    Schedule,
    OneOf(Vec<String>),
}

#[derive(Debug)]
struct EnvRead {
    name: String,
    kind: ValueKind,
    scope: Scope,
}

struct Code {
    /// `[[bin]]` name → the crate directory that builds it.
    bins: BTreeMap<String, PathBuf>,
    env: Vec<EnvRead>,
    routes: Vec<(String, Scope)>,
}

impl Code {
    fn scan() -> Code {
        let root = repository_root();
        let mut bins = BTreeMap::new();
        let mut sources = rust_files(&root.join("shared/src"))
            .into_iter()
            .map(|f| (f, Scope::Shared))
            .collect::<Vec<_>>();
        for entry in fs::read_dir(root.join("functions")).expect("functions/ exists") {
            let dir = entry.expect("functions/ entry").path();
            let manifest = dir.join("Cargo.toml");
            if !manifest.is_file() {
                continue;
            }
            let cargo: toml::Table = toml::from_str(&read(&manifest))
                .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
            for bin in cargo
                .get("bin")
                .and_then(|b| b.as_array())
                .into_iter()
                .flatten()
            {
                let name = bin.get("name").and_then(|n| n.as_str());
                let name = name
                    .unwrap_or_else(|| panic!("[[bin]] without a name in {}", manifest.display()));
                bins.insert(name.to_string(), dir.clone());
            }
            sources.extend(
                rust_files(&dir.join("src"))
                    .into_iter()
                    .map(|f| (f, Scope::Crate(dir.clone()))),
            );
        }
        let texts: Vec<(String, Scope)> = sources.into_iter().map(|(f, s)| (read(&f), s)).collect();
        let mut env = Vec::new();
        let mut routes = Vec::new();
        for (text, scope) in &texts {
            for (at, name) in assigned_literals(text, "env") {
                let kind = value_kind(text, at, &texts);
                env.push(EnvRead {
                    name,
                    kind,
                    scope: scope.clone(),
                });
            }
            for call in ["env::var(", "env::var_os("] {
                for (_, name) in literals_after(text, call) {
                    env.push(EnvRead {
                        name,
                        kind: ValueKind::Any,
                        scope: scope.clone(),
                    });
                }
            }
            for path in route_paths(text) {
                routes.push((path, scope.clone()));
            }
        }
        Code { bins, env, routes }
    }

    fn crate_of(&self, bin: &str) -> Option<&PathBuf> {
        self.bins.get(bin)
    }

    /// The places that read setting `name` where `bin` sees them: the shared crate and its own.
    fn env_for<'a>(&'a self, bin: &str, name: &str) -> Vec<&'a EnvRead> {
        let own = self.crate_of(bin).map(|d| Scope::Crate(d.clone()));
        self.env
            .iter()
            .filter(|r| {
                r.name == name && (r.scope == Scope::Shared || Some(&r.scope) == own.as_ref())
            })
            .collect()
    }

    fn serves(&self, bin: &str, path: &str) -> bool {
        let own = self.crate_of(bin).map(|d| Scope::Crate(d.clone()));
        self.routes
            .iter()
            .any(|(p, s)| p == path && (*s == Scope::Shared || Some(s) == own.as_ref()))
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The paths `text` serves: axum's `.route("/x", …)` (also with a `const X: &str = "/x"` of the
/// same file as the path), and the `path = "/x"` of each `#[utoipa::path(…)]`: the HTTP functions
/// route their handlers where those attributes say (`fluxgate::http_api!`).
fn route_paths(text: &str) -> Vec<String> {
    let mut paths: Vec<String> = literals_after(text, ".route(")
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    for (at, _) in text.match_indices("#[utoipa::path(") {
        let attribute = &text[at..text[at..].find(")]").map_or(text.len(), |end| at + end)];
        paths.extend(
            literals_after(attribute, "path = ")
                .into_iter()
                .map(|(_, p)| p),
        );
    }
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (at, _) in text.match_indices(".route(") {
        let rest = text[at + ".route(".len()..].trim_start();
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            continue;
        }
        if let Some((_, path)) = literals_after(text, &format!("const {name}: &str = ")).pop() {
            paths.push(path);
        }
    }
    paths
}

/// The string literal right after each `opener` (whitespace allowed): `.route("/x"` → `/x`.
fn literals_after(text: &str, opener: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(opener) {
        let start = from + found + opener.len();
        from = start;
        let rest = text[start..].trim_start();
        if let Some(body) = rest.strip_prefix('"')
            && let Some(end) = body.find('"')
        {
            out.push((start, body[..end].to_string()));
        }
    }
    out
}

/// Each `key = "literal"` in `text` (clap's `env = "NAME"`, `#[value(name = "x")]`), with the
/// position of the key. `key` must stand alone: `my_env = "…"` is not `env = "…"`.
fn assigned_literals(text: &str, key: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    text.match_indices(key)
        .filter(|(i, _)| *i == 0 || !is_ident(bytes[i - 1]))
        .filter_map(|(i, _)| {
            let rest = text[i + key.len()..]
                .trim_start()
                .strip_prefix('=')?
                .trim_start();
            let body = rest.strip_prefix('"')?;
            Some((i, body[..body.find('"')?].to_string()))
        })
        .collect()
}

/// How the code parses the setting whose `env = "…"` is at `at`: from the `#[arg(…)]` around it
/// and the type of the field it annotates.
fn value_kind(text: &str, at: usize, texts: &[(String, Scope)]) -> ValueKind {
    let (Some(open), Some(close)) = (text[..at].rfind("#["), text[at..].find(")]")) else {
        return ValueKind::Any;
    };
    let attribute = &text[open..at + close];
    let after = &text[at + close + 2..];
    let field = after
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["));
    let ty = field
        .and_then(|l| l.split_once(':'))
        .map(|(_, t)| t.trim().trim_end_matches(',').trim())
        .unwrap_or_default();
    let ty = ty
        .strip_prefix("Option<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(ty);
    if attribute.contains("value_enum") {
        let name = ty.rsplit("::").next().unwrap_or(ty);
        return ValueKind::OneOf(enum_values(name, texts));
    }
    if attribute.contains("parse_schedule") {
        return ValueKind::Schedule;
    }
    if attribute.contains("parse_duration") {
        return ValueKind::Duration;
    }
    match ty {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => ValueKind::Integer,
        "bool" => ValueKind::Bool,
        _ => ValueKind::Any,
    }
}

/// The command-line names of a clap `ValueEnum`: kebab-case variant names, or `#[value(name)]`.
fn enum_values(name: &str, texts: &[(String, Scope)]) -> Vec<String> {
    let header = format!("enum {name} {{");
    let Some(text) = texts.iter().map(|(t, _)| t).find(|t| t.contains(&header)) else {
        panic!("enum {name} (a value_enum setting's type) is not in the source");
    };
    let body_start = text.find(&header).expect("just found") + header.len();
    let body = &text[body_start..body_start + text[body_start..].find("\n}").expect("enum closes")];
    let mut values = Vec::new();
    let mut renamed = None;
    let mut skip = false;
    for line in body.lines().map(str::trim) {
        if line.starts_with("#[value(") {
            skip |= line.contains("skip");
            if let Some((_, name)) = assigned_literals(line, "name").into_iter().next() {
                renamed = Some(name);
            }
            continue;
        }
        if line.is_empty() || line.starts_with("//") || line.starts_with("#[") {
            continue;
        }
        let ident: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            continue;
        }
        if !std::mem::take(&mut skip) {
            values.push(renamed.take().unwrap_or_else(|| kebab_case(&ident)));
        }
        renamed = None;
    }
    values
}

/// clap's default `ValueEnum` naming: `LocalFiles` → `local-files`, `SQSQueue` → `sqs-queue`.
fn kebab_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('-');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The deployment's own files.

/// `cloudrun/pipeline.env`: `NAME=${NAME:-default}` per line → name → default.
fn pipeline_settings() -> BTreeMap<String, String> {
    let path = repository_root().join("cloudrun/pipeline.env");
    let mut settings = BTreeMap::new();
    for line in read(&path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("pipeline.env: {line:?}"));
        let default = rest
            .strip_prefix(&format!("${{{name}:-"))
            .and_then(|r| r.strip_suffix('}'))
            .unwrap_or_else(|| panic!("pipeline.env: {line:?} is not NAME=${{NAME:-default}}"));
        settings.insert(name.to_string(), default.to_string());
    }
    settings
}

struct DeployScript {
    text: String,
    /// The placeholders it substitutes into the manifests (`MANIFEST_VARS`).
    manifest_vars: BTreeSet<String>,
}

impl DeployScript {
    fn read() -> DeployScript {
        let text = read(&repository_root().join("scripts/deploy-gcp.sh"));
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("MANIFEST_VARS='"))
            .expect("deploy-gcp.sh sets MANIFEST_VARS='${A} ${B} …'");
        let manifest_vars = placeholders(line.trim_end_matches('\''));
        DeployScript {
            text,
            manifest_vars,
        }
    }

    /// The value of a plain `NAME=value` or `NAME=(a b c)` assignment.
    fn assignment(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}=");
        let value = self
            .text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("deploy-gcp.sh assigns {name}"));
        let value = value.trim_start_matches('(').trim_end_matches(')');
        value
            .split_whitespace()
            .map(|w| w.trim_matches('"').to_string())
            .collect()
    }
}

/// The `${NAME}` placeholders in `text`.
fn placeholders(text: &str) -> BTreeSet<String> {
    text.match_indices("${")
        .filter_map(|(i, _)| {
            text[i + 2..]
                .find('}')
                .map(|end| text[i + 2..i + 2 + end].to_string())
        })
        .collect()
}

fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (name, value) in values {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

struct Manifest {
    file: String,
    /// The raw text, placeholders and all.
    text: String,
    doc: Value,
}

impl Manifest {
    fn parse(file: String, text: String) -> Manifest {
        let doc = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("cloudrun/{file} is not YAML: {e}"));
        Manifest { file, text, doc }
    }
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }
    /// The pod spec: a Service's revision template, or a Job's task template.
    fn pod(&self) -> &Value {
        match self.kind() {
            "Job" => &self.doc["spec"]["template"]["spec"]["template"]["spec"],
            _ => &self.doc["spec"]["template"]["spec"],
        }
    }
    fn container(&self) -> &Value {
        &self.pod()["containers"][0]
    }
    fn env(&self) -> Vec<&Value> {
        self.container()["env"]
            .as_sequence()
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }
    fn env_value(&self, name: &str) -> Option<&str> {
        self.env()
            .into_iter()
            .find(|e| e["name"].as_str() == Some(name))?["value"]
            .as_str()
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        self.doc["metadata"]["annotations"][key].as_str()
    }
}

fn manifests() -> Vec<Manifest> {
    let dir = repository_root().join("cloudrun");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("cloudrun/ exists")
        .map(|e| e.expect("cloudrun/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            Manifest::parse(file, read(&path))
        })
        .collect()
}

/// Problems found, reported together so one run shows all of them.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }
    fn assert_none(self, what: &str) {
        assert!(self.0.is_empty(), "{what}:\n  - {}", self.0.join("\n  - "));
    }

    /// `check` run on each manifest of cloudrun/, with the problems it finds.
    fn of_each_manifest(mut check: impl FnMut(&Manifest, &mut Findings)) -> Findings {
        let mut findings = Findings::default();
        for m in manifests() {
            check(&m, &mut findings);
        }
        findings
    }
}

fn awaited<'a>(list: &'a [(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, branch)| *branch)
}

fn value_fits(kind: &ValueKind, value: &str) -> Result<(), String> {
    match kind {
        ValueKind::Any => Ok(()),
        ValueKind::Integer => value.parse::<i64>().map(drop).map_err(|e| e.to_string()),
        ValueKind::Bool => match value {
            "true" | "false" => Ok(()),
            _ => Err("not true or false".into()),
        },
        ValueKind::Duration => parse_duration(value).map(drop),
        ValueKind::Schedule => parse_schedule(value).map(drop),
        ValueKind::OneOf(values) if values.iter().any(|v| v == value) => Ok(()),
        ValueKind::OneOf(values) => Err(format!("not one of {values:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

#[test]
fn the_source_scan_sees_what_the_code_reads() {
    // Guards the scanner itself: settings, enum values and routes that exist today.
    let code = Code::scan();
    assert!(
        code.bins.contains_key("fluxgate-ingest"),
        "bins: {:?}",
        code.bins.keys()
    );
    let queue = code
        .env
        .iter()
        .find(|r| r.name == "FLUXGATE_QUEUE")
        .expect("FLUXGATE_QUEUE is read");
    assert!(
        matches!(&queue.kind, ValueKind::OneOf(v) if v.iter().any(|v| v == "memory")),
        "FLUXGATE_QUEUE parses as {:?}",
        queue.kind
    );
    let lease = code
        .env
        .iter()
        .find(|r| r.name == "FLUXGATE_DRAIN_LEASE_TTL")
        .expect("lease TTL is read");
    assert_eq!(lease.kind, ValueKind::Duration);
    assert!(
        code.env.iter().any(|r| r.name == "FLUXGATE_LOG_FORMAT"),
        "env::var reads count too"
    );
    assert!(
        code.serves("fluxgate-ingest", "/healthz") && code.serves("fluxgate-ingest", "/v1/events")
    );
    assert!(
        !code.serves("fluxgate-ingest", "/v1/drain"),
        "routes are per crate"
    );
    assert!(
        code.serves("fluxgate-worker", "/v1/pubsub/push"),
        "a route whose path is a const counts"
    );
    assert_eq!(kebab_case("LocalFiles"), "local-files");
    assert_eq!(kebab_case("SQSQueue"), "sqs-queue");
}

/// tests/admin_api.rs checks that the worker really serves its routes and nothing else, from a
/// list of its own (the worker has no OpenAPI document); this keeps that list complete.
#[test]
fn the_worker_declares_exactly_the_routes_the_route_check_lists() {
    let code = Code::scan();
    let worker = Scope::Crate(
        code.crate_of("fluxgate-worker")
            .expect("the worker binary")
            .clone(),
    );
    let declared: BTreeSet<&str> = code
        .routes
        .iter()
        .filter(|(_, scope)| *scope == worker)
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(
        declared,
        BTreeSet::from(["/v1/messages", "/v1/pubsub/push"]),
        "the worker's routes changed: update the worker's list in \
         tests/admin_api.rs (every_route_is_in_the_openapi_document_and_nothing_else) and here"
    );
}

#[test]
fn every_function_on_cloud_run_has_one_manifest_of_the_right_kind() {
    let mut findings = Findings::default();
    let manifests = manifests();
    let mut seen = BTreeSet::new();
    for m in &manifests {
        let expected = match m.kind() {
            "Service" => ("serving.knative.dev/v1", SERVICES),
            "Job" => ("run.googleapis.com/v1", JOBS),
            other => {
                findings.0.push(format!(
                    "{}: kind {other:?} is neither Service nor Job",
                    m.file
                ));
                continue;
            }
        };
        findings.check(m.doc["apiVersion"].as_str() == Some(expected.0), || {
            format!("{}: apiVersion must be {}", m.file, expected.0)
        });
        findings.check(expected.1.contains(&m.name()), || {
            format!(
                "{}: {} {:?} is not one of {:?}",
                m.file,
                m.kind(),
                m.name(),
                expected.1
            )
        });
        findings.check(seen.insert(m.name().to_string()), || {
            format!("{}: {} deployed twice", m.file, m.name())
        });
    }
    for name in SERVICES.iter().chain(JOBS) {
        findings.check(seen.contains(*name), || {
            format!("no manifest in cloudrun/ deploys {name}")
        });
    }
    // The deploy script builds and deploys exactly these.
    let script = DeployScript::read();
    let mut deployed = script.assignment("SERVICES");
    deployed.extend(script.assignment("DRAIN_JOB"));
    let expected: Vec<String> = SERVICES.iter().chain(JOBS).map(|s| s.to_string()).collect();
    findings.check(deployed == expected, || {
        format!("deploy-gcp.sh deploys {deployed:?}, cloudrun/ has {expected:?}")
    });
    findings.assert_none("cloudrun/ manifests");
}

#[test]
fn each_manifest_runs_an_existing_function_binary() {
    let code = Code::scan();
    Findings::of_each_manifest(|m, findings| {
        let name = m.name();
        match (code.bins.contains_key(name), awaited(AWAITED_BINS, name)) {
            (true, Some(branch)) => {
                eprintln!("note: {name} exists now; drop it from AWAITED_BINS ({branch})")
            }
            (true, None) | (false, Some(_)) => {}
            (false, None) => findings.0.push(format!(
                "{}: {name} is not a [[bin]] of functions/*/Cargo.toml ({:?})",
                m.file,
                code.bins.keys()
            )),
        }
        let containers = m.pod()["containers"]
            .as_sequence()
            .map(Vec::len)
            .unwrap_or(0);
        findings.check(containers == 1, || {
            format!("{}: {containers} containers, expected one", m.file)
        });
        // One image per function, built by the Dockerfile with FUNCTION=<name>.
        let image = m.container()["image"].as_str().unwrap_or_default();
        let expected = format!("${{IMAGE_REPO}}/{name}:${{IMAGE_TAG}}");
        findings.check(image == expected, || {
            format!("{}: image {image:?}, expected {expected:?}", m.file)
        });
    })
    .assert_none("function binaries");
}

#[test]
fn every_environment_variable_is_one_the_function_reads_with_a_value_it_accepts() {
    let code = Code::scan();
    let mut values: BTreeMap<String, String> = pipeline_settings();
    values.extend(
        SAMPLE_PLACEHOLDERS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Findings::of_each_manifest(|m, findings| {
        let bin = m.name();
        for var in m.env() {
            let name = var["name"].as_str().unwrap_or_default();
            let at = format!("{}: {name}", m.file);
            findings.check(!RESERVED_ENV.contains(&name), || {
                format!("{at} is set by Cloud Run itself")
            });
            let reads = code.env_for(bin, name);
            if reads.is_empty() {
                match awaited(AWAITED_ENV, name) {
                    Some(_) if code.env.iter().any(|r| r.name == name) => findings.0.push(format!(
                        "{at}: read by the code, but not by {bin} (nor the shared crate)"
                    )),
                    Some(_) => {}
                    None => findings.0.push(format!(
                        "{at} is not read by {bin}: no env = \"{name}\" or env::var(\"{name}\") in shared/src or its crate"
                    )),
                }
            } else if let Some(branch) = awaited(AWAITED_ENV, name) {
                eprintln!("note: {name} is read now; drop it from AWAITED_ENV ({branch})");
            }
            if name == "DATABASE_URL" {
                let secret = &var["valueFrom"]["secretKeyRef"];
                findings.check(
                    var.get("value").is_none()
                        && secret["name"].as_str() == Some("${DB_SECRET}")
                        && secret["key"].is_string(),
                    || format!("{at} must come from Secret Manager (valueFrom.secretKeyRef ${{DB_SECRET}})"),
                );
                continue;
            }
            let Some(raw) = var["value"].as_str() else {
                findings.0.push(format!(
                    "{at}: a plain value is expected (strings are quoted in YAML)"
                ));
                continue;
            };
            let value = substitute(raw, &values);
            for read in reads {
                if let Err(why) = value_fits(&read.kind, &value) {
                    let promised = AWAITED_VALUES
                        .iter()
                        .any(|(n, v, _)| *n == name && *v == value);
                    findings.check(promised, || {
                        format!("{at}={value:?} is refused by the code: {why}")
                    });
                }
            }
        }
    })
    .assert_none("environment variables");
}

#[test]
fn placeholders_are_the_ones_the_deploy_script_substitutes() {
    let script = DeployScript::read();
    let mut findings = Findings::of_each_manifest(|m, findings| {
        for name in placeholders(&m.text) {
            findings.check(script.manifest_vars.contains(&name), || {
                format!(
                    "{}: ${{{name}}} is not in deploy-gcp.sh MANIFEST_VARS {:?}",
                    m.file, script.manifest_vars
                )
            });
        }
    });
    // Each deploy-time placeholder has an example here, each pipeline setting a default.
    let pipeline = pipeline_settings();
    for name in &script.manifest_vars {
        findings.check(
            SAMPLE_PLACEHOLDERS.iter().any(|(n, _)| n == name) || pipeline.contains_key(name),
            || {
                format!(
                    "MANIFEST_VARS has ${{{name}}}, which neither pipeline.env nor this test knows"
                )
            },
        );
    }
    findings.assert_none("placeholders");
}

#[test]
fn services_probe_the_health_routes_and_jobs_have_limits() {
    let code = Code::scan();
    Findings::of_each_manifest(|m, findings| {
        let bin = m.name();
        let c = m.container();
        for limit in ["cpu", "memory"] {
            findings.check(c["resources"]["limits"][limit].is_string(), || {
                format!(
                    "{}: resources.limits.{limit} is missing (or not a string)",
                    m.file
                )
            });
        }
        let timeout = m.pod()["timeoutSeconds"].as_u64().unwrap_or(0);
        if m.kind() == "Job" {
            findings.check((1..=86_400).contains(&timeout), || {
                format!("{}: task timeoutSeconds {timeout}", m.file)
            });
            findings.check(m.pod()["maxRetries"].is_u64(), || {
                format!("{}: maxRetries is missing", m.file)
            });
            findings.check(
                c.get("startupProbe").is_none() && c.get("livenessProbe").is_none(),
                || format!("{}: Cloud Run jobs take no probes", m.file),
            );
            return;
        }
        findings.check((1..=3600).contains(&timeout), || {
            format!("{}: timeoutSeconds {timeout}", m.file)
        });
        let concurrency = m.pod()["containerConcurrency"].as_u64().unwrap_or(0);
        findings.check((1..=1000).contains(&concurrency), || {
            format!("{}: containerConcurrency {concurrency}", m.file)
        });
        let port = c["ports"][0]["containerPort"].as_u64();
        let needs_db = m
            .env()
            .iter()
            .any(|e| e["name"].as_str() == Some("DATABASE_URL"));
        for (probe, expected) in [
            // Ready when the database answers; alive as long as the process answers, so a
            // database outage does not restart every instance.
            (
                "startupProbe",
                if needs_db { "/readyz" } else { "/healthz" },
            ),
            ("livenessProbe", "/healthz"),
        ] {
            let get = &c[probe]["httpGet"];
            let path = get["path"].as_str().unwrap_or_default();
            findings.check(path == expected, || {
                format!("{}: {probe} path {path:?}, expected {expected}", m.file)
            });
            findings.check(
                code.serves(bin, path) || awaited(AWAITED_BINS, bin).is_some(),
                || {
                    format!(
                        "{}: {probe} path {path:?} is not a route {bin} serves",
                        m.file
                    )
                },
            );
            findings.check(get["port"].as_u64() == port, || {
                format!(
                    "{}: {probe} port differs from containerPort {port:?}",
                    m.file
                )
            });
        }
    })
    .assert_none("probes and limits");
}

#[test]
fn nothing_but_ingest_can_be_made_public() {
    let mut findings = Findings::of_each_manifest(|m, findings| {
        if m.kind() != "Service" {
            return;
        }
        findings.check(
            m.annotation("run.googleapis.com/invoker-iam-disabled") != Some("true"),
            || format!("{}: invoker IAM check disabled makes it public", m.file),
        );
        let ingress = m
            .annotation("run.googleapis.com/ingress")
            .unwrap_or_default();
        findings.check(
            ["all", "internal", "internal-and-cloud-load-balancing"].contains(&ingress),
            || format!("{}: ingress annotation {ingress:?}", m.file),
        );
        if m.name() == "fluxgate-worker" {
            // Pub/Sub push from the project counts as internal; nothing else needs to reach it.
            findings.check(ingress == "internal", || {
                format!("{}: the worker's ingress must be internal", m.file)
            });
        }
    });
    // The only public binding the deploy script can make is ingest's (INGEST_ACCESS=public).
    let script = DeployScript::read();
    findings.check(
        script.assignment("INGEST_SERVICE") == ["fluxgate-ingest"],
        || "deploy-gcp.sh: INGEST_SERVICE must be fluxgate-ingest".into(),
    );
    for line in script
        .text
        .lines()
        // Commands pass members with --member; the usage text may mention them too.
        .filter(|l| l.contains("--member"))
    {
        if line.contains("allUsers") || line.contains("allAuthenticatedUsers") {
            findings.check(line.contains("\"$INGEST_SERVICE\""), || {
                format!(
                    "deploy-gcp.sh makes something other than ingest public: {}",
                    line.trim()
                )
            });
        }
    }
    findings.assert_none("public access");
}

#[test]
fn each_function_runs_as_its_own_service_account() {
    let mut accounts = BTreeSet::new();
    Findings::of_each_manifest(|m, findings| {
        let account = m.pod()["serviceAccountName"].as_str().unwrap_or_default();
        findings.check(
            account.starts_with("fluxgate-")
                && account.ends_with("@${PROJECT_ID}.iam.gserviceaccount.com"),
            || {
                format!(
                    "{}: serviceAccountName {account:?} is not a fluxgate-… account of the project",
                    m.file
                )
            },
        );
        findings.check(accounts.insert(account.to_string()), || {
            format!("{}: {account} is shared", m.file)
        });
    })
    .assert_none("service accounts");
}

#[test]
fn pubsub_and_scheduler_settings_agree_with_the_functions() {
    let code = Code::scan();
    let pipeline = pipeline_settings();
    let manifests = manifests();
    let by_name = |n: &str| {
        manifests
            .iter()
            .find(|m| m.name() == n)
            .unwrap_or_else(|| panic!("{n} manifest"))
    };
    let number = |k: &str| {
        pipeline[k]
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("pipeline.env {k}: {e}"))
    };
    let seconds = |text: &str| {
        parse_duration(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .num_seconds() as u64
    };
    let mut findings = Findings::default();

    let worker = by_name("fluxgate-worker");
    let attempts = number("MAX_DELIVERY_ATTEMPTS");
    findings.check((5..=100).contains(&attempts), || {
        format!("MAX_DELIVERY_ATTEMPTS {attempts}: Pub/Sub allows 5..=100")
    });
    findings.check(worker.env_value("FLUXGATE_MAX_RECEIVE_COUNT") == Some("${MAX_DELIVERY_ATTEMPTS}"), || {
        "worker: FLUXGATE_MAX_RECEIVE_COUNT must be ${MAX_DELIVERY_ATTEMPTS}, so DEAD matches dead-lettering".into()
    });
    let ack = number("ACK_DEADLINE_SECONDS");
    findings.check((10..=600).contains(&ack), || {
        format!("ACK_DEADLINE_SECONDS {ack}: Pub/Sub allows 10..=600")
    });
    let worker_timeout = worker.pod()["timeoutSeconds"].as_u64().unwrap_or(u64::MAX);
    findings.check(worker_timeout <= ack, || {
        format!("worker timeoutSeconds {worker_timeout} > ACK_DEADLINE_SECONDS {ack}: pushes retried while running")
    });
    let (min, max) = (
        seconds(&pipeline["MIN_RETRY_DELAY"]),
        seconds(&pipeline["MAX_RETRY_DELAY"]),
    );
    findings.check(min <= max && max <= 600, || {
        format!("retry delays {min}s..{max}s: Pub/Sub allows 0..=600s")
    });
    let push = &pipeline["PUBSUB_PUSH_PATH"];
    findings.check(
        code.serves("fluxgate-worker", push) || awaited(AWAITED_ROUTES, push).is_some(),
        || format!("PUBSUB_PUSH_PATH {push} is not a route of the worker"),
    );

    let drain = by_name("fluxgate-outbox-drain");
    findings.check(
        drain.env_value("FLUXGATE_PUBSUB_TOPIC")
            == Some("projects/${PROJECT_ID}/topics/${PUBSUB_TOPIC}"),
        || {
            "drain: FLUXGATE_PUBSUB_TOPIC must be projects/${PROJECT_ID}/topics/${PUBSUB_TOPIC}"
                .into()
        },
    );
    let budget = seconds(
        drain
            .env_value("FLUXGATE_DRAIN_TIME_BUDGET")
            .unwrap_or("50s"),
    );
    let lease = seconds(drain.env_value("FLUXGATE_DRAIN_LEASE_TTL").unwrap_or("2m"));
    let task_timeout = drain.pod()["timeoutSeconds"].as_u64().unwrap_or(0);
    findings.check(budget < task_timeout, || {
        format!("drain: time budget {budget}s must end before the task timeout {task_timeout}s")
    });
    findings.check(budget < lease, || {
        format!("drain: lease {lease}s must outlast a run ({budget}s)")
    });
    findings.check(
        pipeline["DRAIN_SCHEDULE"].split_whitespace().count() == 5,
        || {
            format!(
                "DRAIN_SCHEDULE {:?} is not a five-field cron line",
                pipeline["DRAIN_SCHEDULE"]
            )
        },
    );
    findings.assert_none("Pub/Sub and Scheduler settings");
}

// ---------------------------------------------------------------------------------------------
// Who authenticates how (docs/DEPLOY-GCP.md, "Who may call what"): tenants reach a public
// ingest with their API keys, operators reach replay and metrics through Cloud Run's IAM.

/// The texts the rules read: the manifests, the deploy script with the helpers it sources,
/// and the guide.
#[derive(Clone)]
struct AuthSetup {
    manifests: Vec<(String, String)>,
    script: String,
    helpers: String,
    guide: String,
}

impl AuthSetup {
    fn read() -> AuthSetup {
        AuthSetup {
            manifests: manifests().into_iter().map(|m| (m.file, m.text)).collect(),
            script: read(&repository_root().join("scripts/deploy-gcp.sh")),
            helpers: read(&repository_root().join("scripts/lib/deploy.sh")),
            guide: read(&repository_root().join("docs/DEPLOY-GCP.md")),
        }
    }

    /// The same setup with `from` replaced by `to` in one text (`file`: a manifest's file name,
    /// `script`, `helpers` or `guide`); the replacement must apply.
    fn with(&self, file: &str, from: &str, to: &str) -> AuthSetup {
        let mut changed = self.clone();
        let text = match file {
            "script" => &mut changed.script,
            "helpers" => &mut changed.helpers,
            "guide" => &mut changed.guide,
            manifest => {
                &mut changed
                    .manifests
                    .iter_mut()
                    .find(|(f, _)| f == manifest)
                    .unwrap_or_else(|| panic!("no cloudrun/{manifest}"))
                    .1
            }
        };
        assert!(text.contains(from), "{file} has no {from:?} to change");
        *text = text.replacen(from, to, 1);
        changed
    }

    fn findings(&self) -> Vec<String> {
        let mut findings = Findings::default();
        let manifests: Vec<Manifest> = self
            .manifests
            .iter()
            .map(|(f, t)| Manifest::parse(f.clone(), t.clone()))
            .collect();
        let named = |name: &str| manifests.iter().find(|m| m.name() == name);
        for m in &manifests {
            findings.check(m.env_value("FLUXGATE_AUTH") != Some("off"), || {
                format!("{}: FLUXGATE_AUTH=off opens every endpoint", m.file)
            });
        }
        match named("fluxgate-ingest") {
            Some(ingest) => {
                findings.check(ingest.env_value("FLUXGATE_AUTH") == Some("keys"), || {
                    format!(
                        "{}: ingest is public and must set FLUXGATE_AUTH=keys",
                        ingest.file
                    )
                });
                findings.check(
                    ingest.env_value("FLUXGATE_ADMIN_AUTH") != Some("platform"),
                    || {
                        format!(
                            "{}: FLUXGATE_ADMIN_AUTH=platform on ingest makes every caller an admin",
                            ingest.file
                        )
                    },
                );
            }
            None => findings.check(false, || "no manifest of fluxgate-ingest".into()),
        }
        for name in ["fluxgate-replay", "fluxgate-metrics"] {
            match named(name) {
                Some(m) => findings.check(
                    m.env_value("FLUXGATE_ADMIN_AUTH") == Some("platform"),
                    || {
                        format!(
                            "{}: {name} is for operators behind Cloud Run's IAM and must set \
                             FLUXGATE_ADMIN_AUTH=platform",
                            m.file
                        )
                    },
                ),
                None => findings.check(false, || format!("no manifest of {name}")),
            }
        }

        // The deploy: ingest public by default, the first tenant and key made, the first event
        // sent with the key.
        let code = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        let script = code(&self.script);
        let helpers = code(&self.helpers);
        findings.check(
            script
                .iter()
                .any(|l| l == "INGEST_ACCESS=${INGEST_ACCESS:-public}"),
            || "deploy-gcp.sh: ingest must be public by default (INGEST_ACCESS=public)".into(),
        );
        // Public means Cloud Run lets anyone through to ingest's own key check: the allUsers
        // invoker binding, made in the `public` branch (and only on ingest, see
        // nothing_but_ingest_can_be_made_public).
        let commands = joined_continuations(&script);
        let public_branch: Vec<&String> = commands
            .iter()
            .skip_while(|l| *l != "if [ \"$INGEST_ACCESS\" = public ]; then")
            .skip(1)
            .take_while(|l| !matches!(l.as_str(), "else" | "fi") && !l.starts_with("elif "))
            .collect();
        findings.check(
            public_branch.iter().any(|l| {
                l.contains("add-iam-policy-binding \"$INGEST_SERVICE\"")
                    && l.contains("--member allUsers")
                    && l.contains("--role roles/run.invoker")
            }),
            || {
                "deploy-gcp.sh: with INGEST_ACCESS=public, ingest needs the allUsers \
                 roles/run.invoker binding (add-iam-policy-binding \"$INGEST_SERVICE\")"
                    .into()
            },
        );
        findings.check(
            script.iter().any(|l| l.starts_with("ensure_first_tenant ")),
            || "deploy-gcp.sh does not make the first tenant and key (ensure_first_tenant)".into(),
        );
        // Run, not only printed as advice (`info …`).
        for command in [
            "tenants create \"$tenant\"",
            "keys create --tenant \"$tenant\"",
        ] {
            findings.check(
                helpers
                    .iter()
                    .any(|l| l.contains(command) && !l.starts_with("info ")),
                || format!("scripts/lib/deploy.sh does not run `{command}`"),
            );
        }
        let ingest_auth: Vec<&String> = script
            .iter()
            .filter(|l| l.starts_with("auth=") || l.contains("|| auth="))
            .collect();
        findings.check(!ingest_auth.is_empty(), || {
            "deploy-gcp.sh: no `auth=` for the first event's ingest requests".into()
        });
        for line in ingest_auth {
            findings.check(line.contains("$KEY"), || {
                format!("deploy-gcp.sh: ingest requests must carry the tenant's key: {line}")
            });
        }

        // The guide: ingest requests carry the key, operators' requests an identity token.
        findings.check(
            !self.guide.contains("Until tenant API keys are enforced"),
            || "DEPLOY-GCP.md still says ingest does not check keys".into(),
        );
        for line in self
            .guide
            .lines()
            .filter(|l| l.trim_start().starts_with("curl "))
        {
            let to_ingest = line.contains("\"$URL/");
            let to_operators = line.contains("\"$METRICS/") || line.contains("\"$REPLAY/");
            if to_ingest {
                findings.check(line.contains("$KEY"), || {
                    format!("DEPLOY-GCP.md: an ingest request without the tenant's key: {line}")
                });
            }
            if to_operators {
                findings.check(line.contains("print-identity-token"), || {
                    format!("DEPLOY-GCP.md: an operator request without an identity token: {line}")
                });
            }
        }
        for setting in ["FLUXGATE_AUTH=keys", "FLUXGATE_ADMIN_AUTH=platform"] {
            findings.check(self.guide.contains(setting), || {
                format!("DEPLOY-GCP.md does not say {setting}")
            });
        }
        findings.0
    }
}

/// Shell lines with their `\` continuations joined into one command each (trimmed lines in).
fn joined_continuations(lines: &[String]) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in lines {
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        commands.push(current);
    }
    commands
}

#[test]
fn tenants_use_their_keys_on_ingest_and_operators_their_identity_on_replay_and_metrics() {
    let findings = AuthSetup::read().findings();
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

/// Each mistake the rules are there for, made on purpose, is caught.
#[test]
fn the_authentication_rules_catch_each_mistake() {
    let setup = AuthSetup::read();
    let ingest_keys = "- name: FLUXGATE_AUTH\n              value: keys";
    let platform = "- name: FLUXGATE_ADMIN_AUTH\n              value: platform";
    let mistakes = [
        (
            "ingest without FLUXGATE_AUTH",
            setup.with("ingest.service.yaml", ingest_keys, "- name: FLUXGATE_LOG_LEVEL_UNUSED\n              value: keys"),
        ),
        (
            "ingest with FLUXGATE_AUTH=off",
            setup.with("ingest.service.yaml", ingest_keys, "- name: FLUXGATE_AUTH\n              value: \"off\""),
        ),
        (
            "ingest with platform admin auth",
            setup.with(
                "ingest.service.yaml",
                ingest_keys,
                &format!("{ingest_keys}\n            {platform}"),
            ),
        ),
        (
            "replay without platform admin auth",
            setup.with("replay.service.yaml", platform, "- name: FLUXGATE_ADMIN_AUTH\n              value: key"),
        ),
        (
            "metrics without platform admin auth",
            setup.with("metrics.service.yaml", platform, "- name: FLUXGATE_ADMIN_AUTH\n              value: key"),
        ),
        (
            "ingest private by default",
            setup.with("script", "INGEST_ACCESS=${INGEST_ACCESS:-public}", "INGEST_ACCESS=${INGEST_ACCESS:-iam}"),
        ),
        (
            "public ingest without the allUsers invoker binding",
            setup.with(
                "script",
                "    g run services add-iam-policy-binding \"$INGEST_SERVICE\" --region \"$REGION\" --member allUsers --role roles/run.invoker >/dev/null\n",
                "",
            ),
        ),
        (
            "the allUsers binding in the iam branch instead",
            setup.with("script", "if [ \"$INGEST_ACCESS\" = public ]; then", "if [ \"$INGEST_ACCESS\" != public ]; then"),
        ),
        (
            "no first tenant",
            setup.with("script", "  ensure_first_tenant ", "  # ensure_first_tenant "),
        ),
        (
            "no key made",
            setup.with("helpers", "keys create --tenant \"$tenant\"", "keys list --tenant \"$tenant\""),
        ),
        (
            "first event with an identity token only",
            setup.with("script", "auth='-H \"Authorization: Bearer $KEY\"'", "auth=\"$identity\""),
        ),
        (
            "guide sends no key to ingest",
            setup.with("guide", "curl -i \"$URL/v1/events\" -H \"Authorization: Bearer $KEY\"", "curl -i \"$URL/v1/events\" -H \"Authorization: Bearer $(gcloud auth print-identity-token)\""),
        ),
        (
            "guide calls metrics without identity",
            setup.with("guide", "curl \"$METRICS/metrics\" -H \"Authorization: Bearer $(gcloud auth print-identity-token)\"", "curl \"$METRICS/metrics\" -H \"Authorization: Bearer $KEY\""),
        ),
    ];
    for (mistake, changed) in mistakes {
        assert!(
            !changed.findings().is_empty(),
            "the rules miss a mistake: {mistake}"
        );
    }
}
