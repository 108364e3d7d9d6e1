//! `template.yaml` agrees with the code: `cfn-lint` (run by `scripts/test.sh`) checks it is a
//! valid template; these check that what it deploys is what the functions serve and read.
//! - every HTTP API route reaches a function that serves it, and every endpoint a function
//!   serves has a route (nothing unreachable on AWS);
//! - every environment variable it sets is one the code reads;
//! - each function is built as its own package, so it links only the clients it calls;
//! - SQS delivery settings hold together: partial batch failures reported, the visibility
//!   timeout at least six times the worker's timeout, one max receive count for the queue's
//!   redrive policy and the worker.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use fluxgate::api::{self, Api};
use fluxgate_tests::repository_root;
use serde_yaml_ng::Value;

fn template() -> Value {
    let path = repository_root().join("template.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).expect("template.yaml is YAML")
}

fn resources(template: &Value) -> BTreeMap<String, Value> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(name, body)| (name.as_str().expect("name").to_owned(), body.clone()))
        .collect()
}

/// The text under a CloudFormation tag (`!Sub x`, `!GetAtt x`), or the plain string.
fn text(value: &Value) -> String {
    match value {
        Value::Tagged(tagged) => text(&tagged.value),
        Value::String(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// Logical id of each function → the cargo binary it is built from.
fn function_binaries(resources: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(name, r)| {
            let binary = r["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} names no cargo-lambda Binary"));
            (name.clone(), binary.to_owned())
        })
        .collect()
}

/// `(METHOD, path)` routed to each binary by the HTTP API.
fn routes_by_binary(template: &Value) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let resources = resources(template);
    let binaries = function_binaries(&resources);
    let mut routes: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (name, resource) in &resources {
        if resource["Type"] != "AWS::ApiGatewayV2::Route" {
            continue;
        }
        let properties = &resource["Properties"];
        let key = properties["RouteKey"].as_str().expect("RouteKey");
        let (method, path) = key.split_once(' ').expect("METHOD /path");
        let target = text(&properties["Target"]);
        let integration = target
            .trim_start_matches("integrations/${")
            .trim_end_matches('}');
        let uri = text(&resources[integration]["Properties"]["IntegrationUri"]);
        let function = uri.trim_end_matches(".Arn");
        let binary = binaries
            .get(function)
            .unwrap_or_else(|| panic!("route {name} reaches {function}, not a function"));
        let fresh = routes
            .entry(binary.clone())
            .or_default()
            .insert((method.to_owned(), path.to_owned()));
        assert!(fresh, "{key} is routed twice");
    }
    routes
}

fn served(routes: BTreeSet<(String, String)>) -> BTreeSet<(String, String)> {
    routes.into_iter().chain(api::common_endpoints()).collect()
}

#[test]
fn every_route_reaches_a_function_that_serves_it_and_every_endpoint_has_a_route() {
    let routed = routes_by_binary(&template());
    let ingest = served(fluxgate_ingest::IngestState::endpoints());
    let replay = served(fluxgate_replay::ReplayState::endpoints());
    let metrics = served(fluxgate_metrics::MetricsState::endpoints());
    let serves: BTreeMap<&str, &BTreeSet<(String, String)>> = [
        ("fluxgate-ingest", &ingest),
        ("fluxgate-replay", &replay),
        ("fluxgate-metrics", &metrics),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        routed.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        serves.keys().copied().collect::<BTreeSet<_>>(),
        "the HTTP API fronts exactly the HTTP functions"
    );
    let mut all_routed = BTreeSet::new();
    for (binary, routes) in &routed {
        for route in routes {
            assert!(
                serves[binary.as_str()].contains(route),
                "{route:?} is routed to {binary}, which does not serve it"
            );
            all_routed.insert(route.clone());
        }
    }
    for (binary, endpoints) in &serves {
        for endpoint in *endpoints {
            assert!(
                all_routed.contains(endpoint),
                "{binary} serves {endpoint:?}, but no route of the HTTP API reaches it"
            );
        }
    }
}

/// Every `"UPPER_CASE"` literal in the functions' and the shared crate's sources: the names of
/// the settings the code reads (clap `env = "…"`, `std::env::var("…")`).
fn names_in_source() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = fs::read_to_string(&path).expect("read source");
                for piece in source.split('"').skip(1).step_by(2) {
                    if !piece.is_empty()
                        && piece
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    {
                        names.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(&repository_root().join("shared/src"), &mut names);
    walk(&repository_root().join("functions"), &mut names);
    names
}

#[test]
fn every_environment_variable_the_template_sets_is_one_the_code_reads() {
    let template = template();
    let known = names_in_source();
    // Read by the AWS SDK and by tracing-subscriber, not by fluxgate's own code.
    let platform: BTreeSet<&str> = ["RUST_LOG", "AWS_REGION", "AWS_ENDPOINT_URL"].into();
    let mut environments = vec![(
        "Globals".to_owned(),
        template["Globals"]["Function"]["Environment"]["Variables"].clone(),
    )];
    for (name, resource) in resources(&template) {
        if resource["Type"] == "AWS::Serverless::Function" {
            environments.push((
                name,
                resource["Properties"]["Environment"]["Variables"].clone(),
            ));
        }
    }
    let mut checked = 0;
    for (owner, variables) in environments {
        let Some(variables) = variables.as_mapping() else {
            continue;
        };
        for variable in variables.keys() {
            let variable = variable.as_str().expect("a variable name");
            assert!(
                known.contains(variable) || platform.contains(variable),
                "{owner} sets {variable}, which no code reads"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 10,
        "only {checked} variables found: is the template read right?"
    );
}

/// `cargo lambda build --bin X` in the workspace root would resolve the features of every
/// member together (the worker's BigQuery client would land in ingest); `--package X` resolves
/// only the function's own.
#[test]
fn each_function_is_built_as_its_own_package() {
    let resources = resources(&template());
    for (name, binary) in function_binaries(&resources) {
        let flags: Vec<&str> = resources[&name]["Metadata"]["BuildProperties"]["Flags"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} has no cargo-lambda Flags"))
            .iter()
            .map(|flag| flag.as_str().expect("a flag is a string"))
            .collect();
        assert_eq!(flags, ["--package", binary.as_str()], "{name}");
    }
}

#[test]
fn sqs_delivery_settings_hold_together() {
    let template = template();
    let resources = resources(&template);
    let mapping = resources
        .values()
        .find(|r| r["Type"] == "AWS::Lambda::EventSourceMapping")
        .expect("the worker's SQS event source mapping");
    let types = mapping["Properties"]["FunctionResponseTypes"]
        .as_sequence()
        .expect("FunctionResponseTypes");
    assert!(
        types.iter().any(|t| t == "ReportBatchItemFailures"),
        "the worker answers with partial batch failures"
    );

    // Visibility timeout per allowed worker timeout: at least six times it.
    let timeouts = template["Mappings"]["WorkerTimeouts"]
        .as_mapping()
        .expect("the WorkerTimeouts mapping");
    let allowed = template["Parameters"]["WorkerTimeoutSeconds"]["AllowedValues"]
        .as_sequence()
        .expect("WorkerTimeoutSeconds has allowed values");
    assert_eq!(allowed.len(), timeouts.len());
    for (seconds, row) in timeouts {
        let seconds: u64 = text(seconds).parse().expect("seconds");
        let visibility = row["VisibilityTimeout"]
            .as_u64()
            .expect("VisibilityTimeout");
        assert!(
            visibility >= 6 * seconds,
            "visibility {visibility}s for a {seconds}s worker"
        );
    }

    // One max receive count for the redrive policy and the worker's DEAD verdict.
    let queue = resources
        .values()
        .find(|r| r["Type"] == "AWS::SQS::Queue" && !r["Properties"]["RedrivePolicy"].is_null())
        .expect("a queue with a redrive policy");
    let redrive_count = text(&queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]);
    let worker_count = resources
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .find_map(|r| {
            let v = &r["Properties"]["Environment"]["Variables"]["FLUXGATE_MAX_RECEIVE_COUNT"];
            (!v.is_null()).then(|| text(v))
        })
        .expect("the worker sets FLUXGATE_MAX_RECEIVE_COUNT");
    assert_eq!(redrive_count, worker_count);
}
