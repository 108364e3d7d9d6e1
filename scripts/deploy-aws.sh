#!/usr/bin/env bash
# Deploys fluxgate to AWS with SAM (template.yaml): builds the five functions for Lambda
# (provided.al2023, arm64) with cargo-lambda, deploys the stack, applies the database migrations
# by invoking the outbox drain once, makes the first tenant and its API key (when this machine
# reaches the database), and prints the API URL and a first request.
#
# Safe to run again: `sam deploy` updates the stack in place (no change: nothing happens).
set -euo pipefail

# Sets ROOT (the repository) and brings common.sh's helpers.
# shellcheck source=scripts/lib/deploy.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/deploy.sh"

usage() {
  cat <<'EOF'
Usage: DB_SECRET_ARN=arn:aws:secretsmanager:… ADMIN_KEY_SECRET_ARN=arn:… \
       BIGQUERY_PROJECT=my-project BIGQUERY_CREDENTIALS_SECRET_ARN=arn:… \
         scripts/deploy-aws.sh

Which parameters `sam deploy` gets:
  - the variables below, when DB_SECRET_ARN is set (template.yaml's defaults for the rest);
  - otherwise samconfig.toml, when it exists (written by an earlier guided deploy);
  - otherwise `sam deploy --guided` asks for each parameter and saves samconfig.toml.

Environment (template parameter; default):
  STACK_NAME                       CloudFormation stack (fluxgate)
  AWS_REGION                       region (AWS_DEFAULT_REGION, else `aws configure get region`)
  DB_SECRET_ARN                    DatabaseSecretArn: secret with the database URL or an
                                   RDS-style JSON secret (required)
  ADMIN_AUTH                       AdminAuth: api-key | iam (api-key)
  ADMIN_KEY_SECRET_ARN             AdminKeySecretArn: secret with the admin key (required
                                   with ADMIN_AUTH=api-key)
  BIGQUERY_PROJECT                 BigQueryProject (required)
  BIGQUERY_CREDENTIALS_SECRET_ARN  BigQueryCredentialsSecretArn: secret with the service-account
                                   key JSON (required)
  BIGQUERY_DATASET                 BigQueryDataset (fluxgate)
  BIGQUERY_TABLE                   BigQueryTable (events)
  BIGQUERY_LOCATION                BigQueryLocation (BigQuery's default)
  BIGQUERY_WRITE_MODE              BigQueryWriteMode: storage-write (default) | load | streaming
  DRAIN_SCHEDULE                   DrainSchedule (rate(1 minute))
  DRAIN_TIMEOUT_SECONDS            DrainTimeoutSeconds (60)
  DRAIN_DEADLINE_MARGIN            DrainDeadlineMargin (5s)
  MAX_RECEIVE_COUNT                MaxReceiveCount (5)
  WORKER_TIMEOUT_SECONDS           WorkerTimeoutSeconds: 30 | 60 | 120 | 300 | 900 (60)
  WORKER_BATCH_SIZE                WorkerBatchSize (10)
  WORKER_BATCHING_WINDOW_SECONDS   WorkerBatchingWindowSeconds (1)
  WORKER_MAX_CONCURRENCY           WorkerMaxConcurrency (10)
  DB_MAX_CONNECTIONS               DbMaxConnections (2)
  FUNCTION_MEMORY_MB               FunctionMemoryMB (256)
  LOG_LEVEL                        LogLevel (info)
  SUBNET_IDS                       SubnetIds, comma-separated (none: no VPC)
  SECURITY_GROUP_IDS               SecurityGroupIds, comma-separated (with SUBNET_IDS)
  RDS_PROXY_TARGET                 RdsProxyTarget: RDS instance or cluster id (no proxy)
  RDS_PROXY_TARGET_TYPE            RdsProxyTargetType: instance | cluster (instance)
  RDS_PROXY_ENGINE_FAMILY          RdsProxyEngineFamily: POSTGRESQL | MYSQL (POSTGRESQL)
  ALARM_EMAIL                      AlarmEmail (no e-mail)
  ALARM_TOPIC_ARN                  AlarmTopicArn (no topic)
  OUTBOX_LAG_ALARM_SECONDS         OutboxLagAlarmSeconds (300)
  SKIP_BUILD=1                     deploy what .aws-sam/build holds, without building

After the deploy (not template parameters):
  FIRST_TENANT                     the first tenant, made with an API key (acme)
  TENANT_DATABASE_URL              the database as this machine reaches it, for making that
                                   tenant and key with scripts/dev.sh (none: the commands are
                                   printed instead)

Needs: the AWS CLI and the SAM CLI, logged in to an account that may create the stack's
resources (CloudFormation, Lambda, API Gateway, SQS, IAM roles, EventBridge, CloudWatch, SNS,
RDS Proxy when used); Rust (rustup) with cargo-lambda and zig for the arm64 build.
EOF
}

no_arguments "$@"

# scripts/test.sh's virtualenv has cargo-lambda and ziglang; use it when it is there.
FLUXGATE_VENV=${FLUXGATE_VENV:-$HOME/.cache/fluxgate/venv}
if [ -x "$FLUXGATE_VENV/bin/cargo-lambda" ]; then
  PATH="$FLUXGATE_VENV/bin:$PATH"
fi

# --- prerequisites ----------------------------------------------------------------------------
section "Prerequisites"
command -v aws >/dev/null 2>&1 ||
  die "the AWS CLI (aws) is not on PATH: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
command -v sam >/dev/null 2>&1 ||
  die "the SAM CLI (sam) is not on PATH: pip install aws-sam-cli, or brew install aws-sam-cli"
command -v cargo >/dev/null 2>&1 ||
  die "the Rust toolchain (cargo) is not on PATH: https://rustup.rs"
command -v cargo-lambda >/dev/null 2>&1 ||
  die "cargo-lambda is not on PATH: pip install cargo-lambda ziglang, or brew install cargo-lambda/tap/cargo-lambda"
# cargo-lambda cross-compiles to arm64 with zig: a zig binary, or Python's ziglang package.
if ! command -v zig >/dev/null 2>&1 && ! python3 -c 'import ziglang' >/dev/null 2>&1; then
  die "zig is not installed (cargo-lambda builds arm64 with it): pip install ziglang, or brew install zig"
fi
# The arm64 standard library: rustup's target, fetched once.
if command -v rustup >/dev/null 2>&1 &&
  ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  info "installing the Rust target aarch64-unknown-linux-gnu (rustup target add)"
  rustup target add aarch64-unknown-linux-gnu
fi
info "sam $(sam --version 2>/dev/null | awk '{print $NF}'), $(cargo lambda --version 2>/dev/null | head -n1)"

STACK_NAME=${STACK_NAME:-fluxgate}
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}
[ -n "$REGION" ] || die "no AWS region: set AWS_REGION (or run aws configure)"
export AWS_REGION=$REGION
info "stack $STACK_NAME in $REGION"

# --- build ------------------------------------------------------------------------------------
# SAM runs `cargo lambda build --release --arm64 --bin <binary>` in the workspace root and
# copies target/lambda/<binary>/bootstrap. Older SAM CLIs look only in the workspace's own
# target/, so the build does not use a CARGO_TARGET_DIR elsewhere. Building Rust with
# cargo-lambda is a SAM beta feature (--beta-features).
cd "$ROOT"
if [ "${SKIP_BUILD:-}" != 1 ]; then
  section "Build: sam build (cargo-lambda, arm64)"
  env -u CARGO_TARGET_DIR sam build --beta-features
fi

# --- deploy -----------------------------------------------------------------------------------
# "Key=value" for each variable that is set; template.yaml's default for the others.
OVERRIDES=()
override() {
  local parameter=$1 variable=$2
  if [ -n "${!variable:-}" ]; then
    OVERRIDES+=("$parameter=\"${!variable}\"")
  fi
}

DEPLOY=(sam deploy --stack-name "$STACK_NAME" --region "$REGION" --capabilities CAPABILITY_IAM)
if [ -n "${DB_SECRET_ARN:-}" ]; then
  missing=()
  for name in BIGQUERY_PROJECT BIGQUERY_CREDENTIALS_SECRET_ARN; do
    [ -n "${!name:-}" ] || missing+=("$name")
  done
  if [ "${ADMIN_AUTH:-api-key}" = api-key ] && [ -z "${ADMIN_KEY_SECRET_ARN:-}" ]; then
    missing+=("ADMIN_KEY_SECRET_ARN (or ADMIN_AUTH=iam)")
  fi
  [ "${#missing[@]}" -eq 0 ] || die "set ${missing[*]}"
  override DatabaseSecretArn DB_SECRET_ARN
  override AdminAuth ADMIN_AUTH
  override AdminKeySecretArn ADMIN_KEY_SECRET_ARN
  override BigQueryProject BIGQUERY_PROJECT
  override BigQueryCredentialsSecretArn BIGQUERY_CREDENTIALS_SECRET_ARN
  override BigQueryDataset BIGQUERY_DATASET
  override BigQueryWriteMode BIGQUERY_WRITE_MODE
  override BigQueryTable BIGQUERY_TABLE
  override BigQueryLocation BIGQUERY_LOCATION
  override DrainSchedule DRAIN_SCHEDULE
  override DrainTimeoutSeconds DRAIN_TIMEOUT_SECONDS
  override DrainDeadlineMargin DRAIN_DEADLINE_MARGIN
  override MaxReceiveCount MAX_RECEIVE_COUNT
  override WorkerTimeoutSeconds WORKER_TIMEOUT_SECONDS
  override WorkerBatchSize WORKER_BATCH_SIZE
  override WorkerBatchingWindowSeconds WORKER_BATCHING_WINDOW_SECONDS
  override WorkerMaxConcurrency WORKER_MAX_CONCURRENCY
  override DbMaxConnections DB_MAX_CONNECTIONS
  override FunctionMemoryMB FUNCTION_MEMORY_MB
  override LogLevel LOG_LEVEL
  override SubnetIds SUBNET_IDS
  override SecurityGroupIds SECURITY_GROUP_IDS
  override RdsProxyTarget RDS_PROXY_TARGET
  override RdsProxyTargetType RDS_PROXY_TARGET_TYPE
  override RdsProxyEngineFamily RDS_PROXY_ENGINE_FAMILY
  override AlarmEmail ALARM_EMAIL
  override AlarmTopicArn ALARM_TOPIC_ARN
  override OutboxLagAlarmSeconds OUTBOX_LAG_ALARM_SECONDS
  DEPLOY+=(--resolve-s3 --no-confirm-changeset --no-fail-on-empty-changeset
    --parameter-overrides "${OVERRIDES[@]}")
  section "Deploy: sam deploy (parameters from the environment)"
elif [ -f samconfig.toml ]; then
  DEPLOY+=(--no-fail-on-empty-changeset)
  section "Deploy: sam deploy (parameters from samconfig.toml)"
else
  DEPLOY=(sam deploy --guided --stack-name "$STACK_NAME" --region "$REGION" --capabilities CAPABILITY_IAM)
  section "Deploy: sam deploy --guided (no DB_SECRET_ARN, no samconfig.toml; answers are saved there)"
fi
"${DEPLOY[@]}"

# --- after the deploy -------------------------------------------------------------------------
output() {
  aws cloudformation describe-stacks --stack-name "$STACK_NAME" --region "$REGION" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
API_URL=$(output ApiUrl)
DRAIN_FUNCTION=$(output OutboxDrainFunctionName)

# The other functions never migrate (FLUXGATE_DB_MIGRATE=false): one drain run applies the
# migrations now, so the first event finds its tables. The payload is an EventBridge scheduled
# event, what the schedule sends.
section "Migrations: one run of $DRAIN_FUNCTION"
RESULT=$(mktemp)
trap 'rm -f "$RESULT"' EXIT
PAYLOAD=$(printf '{"version":"0","id":"deploy-aws","detail-type":"Scheduled Event","source":"aws.events","account":"","time":"%s","region":"%s","resources":[],"detail":{}}' \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$REGION")
FUNCTION_ERROR=$(aws lambda invoke --function-name "$DRAIN_FUNCTION" --region "$REGION" \
  --cli-binary-format raw-in-base64-out --payload "$PAYLOAD" \
  --query FunctionError --output text "$RESULT")
info "answer: $(cat "$RESULT")"
if [ -n "$FUNCTION_ERROR" ] && [ "$FUNCTION_ERROR" != None ]; then
  die "the drain failed ($FUNCTION_ERROR); its log: aws logs tail /aws/lambda/$DRAIN_FUNCTION --region $REGION"
fi

FIRST_TENANT=${FIRST_TENANT:-acme}
ensure_first_tenant "${TENANT_DATABASE_URL:-}" "$FIRST_TENANT"

section "Deployed"
echo "API: $API_URL"
# shellcheck disable=SC2016 # printed for the user's shell to expand
print_first_event "$API_URL" "$FIRST_TENANT" '-H "Authorization: Bearer $KEY"'
echo
echo "Logs: sam logs --stack-name $STACK_NAME --region $REGION --tail"
