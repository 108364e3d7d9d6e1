#!/usr/bin/env bash
# Deploys fluxgate to Google Cloud: Cloud Run services (ingest, worker, replay, metrics), the
# outbox-drain Cloud Run job run by Cloud Scheduler, Pub/Sub with dead letters, the BigQuery
# table, one service account per function, the IAM bindings between them, and the first tenant
# with its API key.
#
# Who calls what: tenants call ingest with their API keys (ingest checks them itself:
# FLUXGATE_AUTH=keys), so ingest is public by default; operators call replay and metrics with
# their Google identity (FLUXGATE_ADMIN_AUTH=platform, roles/run.invoker), never public.
#
# Safe to run again: every resource is described first and created only when missing; settings
# that may change (push subscription, scheduler job, services, job) are updated in place.
set -euo pipefail

# Sets ROOT (the repository) and brings common.sh's helpers.
# shellcheck source=scripts/lib/deploy.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/deploy.sh"

usage() {
  cat <<'EOF'
Usage: PROJECT_ID=my-project REGION=europe-west1 DB_SECRET=fluxgate-database-url \
         scripts/deploy-gcp.sh

Required environment:
  PROJECT_ID           Google Cloud project to deploy into
  REGION               Cloud Run / Pub/Sub / Scheduler region, e.g. europe-west1
  DB_SECRET            Secret Manager secret whose latest version is the DATABASE_URL
                       (postgres://… or mysql://…). Created from DATABASE_URL if missing.

Optional environment:
  DATABASE_URL         used only to create DB_SECRET when it does not exist yet
  CLOUD_SQL_INSTANCE   Cloud SQL connection name PROJECT:REGION:INSTANCE; mounts the socket
                       /cloudsql/<name> in every function and grants roles/cloudsql.client
  IMAGE_TAG            image tag to build and deploy (default: git commit, "-dirty" if changed)
  BUILD                cloudbuild (default) | docker | skip (deploy IMAGE_TAG as already pushed)
  AR_REPOSITORY        Artifact Registry Docker repository (default: fluxgate)
  BIGQUERY_LOCATION    location of the BigQuery dataset (default: REGION)
  BIGQUERY_WRITE_MODE  storage-write (default) | load (the BigQuery sandbox's only way) | streaming
  INGEST_ACCESS        public (default): anyone may reach ingest, which takes only requests
                       with a tenant's API key. iam: callers also need roles/run.invoker and
                       send an identity token in Authorization, the API key in X-Api-Key.
  INGEST_INVOKERS      with INGEST_ACCESS=iam: comma-separated members allowed to call ingest,
                       e.g. user:me@example.com (default: the account running this script)
  FIRST_TENANT         the first tenant, made with an API key after the deploy (acme)
  TENANT_DATABASE_URL  the database as this machine reaches it, for making that tenant and
                       key with scripts/dev.sh (needs Rust). Default: DATABASE_URL unless it
                       uses a /cloudsql/ socket (then run cloud-sql-proxy and point this at it;
                       without one the commands are printed instead)
  cloudrun/pipeline.env settings (PUBSUB_TOPIC, MAX_DELIVERY_ATTEMPTS, DRAIN_SCHEDULE, …)

Needs gcloud (with bq) and envsubst (gettext), and an account that may create the resources
above (Owner, or the admin roles of Run, Pub/Sub, Scheduler, BigQuery, Secret Manager, IAM).
EOF
}

no_arguments "$@"
require_settings PROJECT_ID REGION DB_SECRET
for tool in gcloud bq envsubst; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (see docs/DEPLOY-GCP.md, Prerequisites)"
done

# shellcheck source=cloudrun/pipeline.env
. "$ROOT/cloudrun/pipeline.env"

CLOUD_SQL_INSTANCE=${CLOUD_SQL_INSTANCE:-}
BUILD=${BUILD:-cloudbuild}
AR_REPOSITORY=${AR_REPOSITORY:-fluxgate}
BIGQUERY_LOCATION=${BIGQUERY_LOCATION:-$REGION}
INGEST_ACCESS=${INGEST_ACCESS:-public}
case "$INGEST_ACCESS" in
  public | iam) ;;
  *) die "INGEST_ACCESS must be public or iam (got $INGEST_ACCESS)" ;;
esac
FIRST_TENANT=${FIRST_TENANT:-acme}
if [ -z "${TENANT_DATABASE_URL:-}" ] && [[ "${DATABASE_URL:-}" != *"/cloudsql/"* ]]; then
  TENANT_DATABASE_URL=${DATABASE_URL:-}
fi
if [ -z "${IMAGE_TAG:-}" ]; then
  IMAGE_TAG=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
  if ! git -C "$ROOT" diff --quiet HEAD 2>/dev/null; then
    IMAGE_TAG="$IMAGE_TAG-dirty-$(date -u +%Y%m%d%H%M%S)"
  fi
fi
IMAGE_REPO="$REGION-docker.pkg.dev/$PROJECT_ID/$AR_REPOSITORY"

# The placeholders the manifests in cloudrun/ may use; nothing else is substituted, so a `$`
# anywhere else stays as written. tests/cloudrun_manifests.rs checks the manifests against this.
# shellcheck disable=SC2016
MANIFEST_VARS='${PROJECT_ID} ${REGION} ${IMAGE_REPO} ${IMAGE_TAG} ${DB_SECRET} ${CLOUD_SQL_INSTANCE} ${PUBSUB_TOPIC} ${PUBSUB_DEAD_LETTER_SUBSCRIPTION} ${BIGQUERY_DATASET} ${BIGQUERY_TABLE} ${BIGQUERY_WRITE_MODE} ${MAX_DELIVERY_ATTEMPTS}'
export PROJECT_ID REGION IMAGE_REPO IMAGE_TAG DB_SECRET CLOUD_SQL_INSTANCE PUBSUB_TOPIC PUBSUB_DEAD_LETTER_SUBSCRIPTION \
  BIGQUERY_DATASET BIGQUERY_TABLE BIGQUERY_WRITE_MODE MAX_DELIVERY_ATTEMPTS

# Functions deployed as Cloud Run services, in deploy order: ingest first, it applies migrations.
SERVICES=(fluxgate-ingest fluxgate-worker fluxgate-replay fluxgate-metrics)
INGEST_SERVICE=fluxgate-ingest
WORKER_SERVICE=fluxgate-worker
DRAIN_JOB=fluxgate-outbox-drain
FUNCTIONS=("${SERVICES[@]}" "$DRAIN_JOB")

# One identity per function (least privilege), plus the two callers.
sa() { printf '%s@%s.iam.gserviceaccount.com' "$1" "$PROJECT_ID"; }
INGEST_SA=$(sa fluxgate-ingest)
WORKER_SA=$(sa fluxgate-worker)
REPLAY_SA=$(sa fluxgate-replay)
METRICS_SA=$(sa fluxgate-metrics)
DRAIN_SA=$(sa fluxgate-drain)
PUSH_SA=$(sa fluxgate-pubsub-push)
SCHEDULER_SA=$(sa fluxgate-scheduler)
FUNCTION_SAS=("$INGEST_SA" "$WORKER_SA" "$REPLAY_SA" "$METRICS_SA" "$DRAIN_SA")

RENDER_DIR=$(mktemp -d)
trap 'rm -rf "$RENDER_DIR"' EXIT

g() { gcloud --project "$PROJECT_ID" --quiet "$@"; }
quietly() { "$@" >/dev/null 2>&1; }

enable_apis() {
  section "APIs"
  local apis=(run.googleapis.com pubsub.googleapis.com cloudscheduler.googleapis.com
    bigquery.googleapis.com secretmanager.googleapis.com artifactregistry.googleapis.com
    iam.googleapis.com iamcredentials.googleapis.com)
  if [ "$BUILD" = cloudbuild ]; then apis+=(cloudbuild.googleapis.com); fi
  if [ -n "$CLOUD_SQL_INSTANCE" ]; then apis+=(sqladmin.googleapis.com); fi
  g services enable "${apis[@]}"
}

ensure_artifact_repository() {
  section "Artifact Registry $IMAGE_REPO"
  if quietly g artifacts repositories describe "$AR_REPOSITORY" --location "$REGION"; then
    info "exists"
  else
    g artifacts repositories create "$AR_REPOSITORY" --location "$REGION" \
      --repository-format docker --description "fluxgate function images"
  fi
}

build_images() {
  case "$BUILD" in
    skip)
      section "Images: not built (BUILD=skip), deploying tag $IMAGE_TAG"
      ;;
    docker)
      section "Images: docker build + push, tag $IMAGE_TAG"
      gcloud auth configure-docker "$REGION-docker.pkg.dev" --quiet
      local f
      for f in "${FUNCTIONS[@]}"; do
        docker build --build-arg FUNCTION="$f" -t "$IMAGE_REPO/$f:$IMAGE_TAG" "$ROOT"
        docker push "$IMAGE_REPO/$f:$IMAGE_TAG"
      done
      ;;
    cloudbuild)
      section "Images: Cloud Build, tag $IMAGE_TAG"
      # One build, one step per function on the same worker. Each function's dependency layer
      # is its own (its `gcp` features differ from the others'); the chef stage is shared.
      local config="$RENDER_DIR/cloudbuild.yaml" f
      {
        echo "steps:"
        for f in "${FUNCTIONS[@]}"; do
          printf -- "- name: gcr.io/cloud-builders/docker\n"
          printf "  args: [build, --build-arg, FUNCTION=%s, -t, '%s', .]\n" "$f" "$IMAGE_REPO/$f:$IMAGE_TAG"
        done
        echo "images:"
        for f in "${FUNCTIONS[@]}"; do
          printf -- "- '%s'\n" "$IMAGE_REPO/$f:$IMAGE_TAG"
        done
        echo "options: {machineType: E2_HIGHCPU_8}"
        echo "timeout: 3600s"
      } >"$config"
      g builds submit "$ROOT" --region "$REGION" --config "$config"
      ;;
    *) die "BUILD must be cloudbuild, docker or skip (got $BUILD)" ;;
  esac
}

ensure_service_account() {
  local email=$1 display=$2
  if quietly g iam service-accounts describe "$email"; then
    info "service account $email exists"
  else
    g iam service-accounts create "${email%%@*}" --display-name "$display"
  fi
}

ensure_service_accounts() {
  section "Service accounts"
  ensure_service_account "$INGEST_SA" "fluxgate ingest"
  ensure_service_account "$WORKER_SA" "fluxgate worker"
  ensure_service_account "$REPLAY_SA" "fluxgate replay"
  ensure_service_account "$METRICS_SA" "fluxgate metrics"
  ensure_service_account "$DRAIN_SA" "fluxgate outbox-drain"
  ensure_service_account "$PUSH_SA" "fluxgate Pub/Sub push to the worker"
  ensure_service_account "$SCHEDULER_SA" "fluxgate Cloud Scheduler to the drain job"
  if [ -n "$CLOUD_SQL_INSTANCE" ]; then
    # Cloud SQL grants connect rights per project only.
    local email
    for email in "${FUNCTION_SAS[@]}"; do
      g projects add-iam-policy-binding "$PROJECT_ID" --condition None \
        --member "serviceAccount:$email" --role roles/cloudsql.client >/dev/null
    done
    info "roles/cloudsql.client for the function service accounts"
  fi
}

ensure_database_secret() {
  section "Secret Manager secret $DB_SECRET"
  if quietly g secrets describe "$DB_SECRET"; then
    info "exists"
  elif [ -n "${DATABASE_URL:-}" ]; then
    g secrets create "$DB_SECRET" --replication-policy automatic
    printf '%s' "$DATABASE_URL" | g secrets versions add "$DB_SECRET" --data-file -
  else
    die "secret $DB_SECRET does not exist: create it, or set DATABASE_URL and run again"
  fi
  # Every function reads the database URL, and nothing else in Secret Manager.
  local email
  for email in "${FUNCTION_SAS[@]}"; do
    g secrets add-iam-policy-binding "$DB_SECRET" \
      --member "serviceAccount:$email" --role roles/secretmanager.secretAccessor >/dev/null
  done
  info "secretAccessor on $DB_SECRET for the function service accounts"
}

ensure_bigquery() {
  section "BigQuery $PROJECT_ID:$BIGQUERY_DATASET.$BIGQUERY_TABLE"
  local dataset="$PROJECT_ID:$BIGQUERY_DATASET" table="$PROJECT_ID:$BIGQUERY_DATASET.$BIGQUERY_TABLE"
  if quietly bq --project_id "$PROJECT_ID" show --dataset "$dataset"; then
    info "dataset exists"
  else
    bq --project_id "$PROJECT_ID" --location "$BIGQUERY_LOCATION" mk --dataset \
      --description "fluxgate events" "$dataset"
  fi
  if quietly bq --project_id "$PROJECT_ID" show --table "$table"; then
    info "table exists (its schema is not changed here)"
  else
    bq --project_id "$PROJECT_ID" mk --table \
      --time_partitioning_type DAY --time_partitioning_field event_date \
      --clustering_fields tenant_id,event_type \
      --description "fluxgate events, one row per (tenant_id, event_id)" \
      "$table" "$ROOT/infra/bigquery/events_schema.json"
  fi
  # The worker writes rows into this dataset only (BigQuery's SQL GRANT is idempotent).
  bq --project_id "$PROJECT_ID" --location "$BIGQUERY_LOCATION" query --nouse_legacy_sql --quiet \
    "GRANT \`roles/bigquery.dataEditor\` ON SCHEMA \`$PROJECT_ID.$BIGQUERY_DATASET\` TO \"serviceAccount:$WORKER_SA\"" >/dev/null
  info "roles/bigquery.dataEditor on the dataset for $WORKER_SA"
  # Jobs run in the project: load jobs (FLUXGATE_BIGQUERY_WRITE_MODE=load) and the one query
  # the worker makes for a redelivered batch (does the table hold it already?).
  g projects add-iam-policy-binding "$PROJECT_ID" --condition None \
    --member "serviceAccount:$WORKER_SA" --role roles/bigquery.jobUser >/dev/null
  info "roles/bigquery.jobUser in $PROJECT_ID for $WORKER_SA (load jobs, redelivery checks)"
}

ensure_topic() {
  if quietly g pubsub topics describe "$1"; then
    info "topic $1 exists"
  else
    g pubsub topics create "$1"
  fi
}

ensure_pubsub_topics() {
  section "Pub/Sub topics"
  ensure_topic "$PUBSUB_TOPIC"
  ensure_topic "$PUBSUB_DEAD_LETTER_TOPIC"
  # replay reads dead letters from here to redrive them.
  if quietly g pubsub subscriptions describe "$PUBSUB_DEAD_LETTER_SUBSCRIPTION"; then
    info "subscription $PUBSUB_DEAD_LETTER_SUBSCRIPTION exists"
  else
    g pubsub subscriptions create "$PUBSUB_DEAD_LETTER_SUBSCRIPTION" \
      --topic "$PUBSUB_DEAD_LETTER_TOPIC" --ack-deadline 60 \
      --message-retention-duration "$DEAD_LETTER_RETENTION" --expiration-period never
  fi
  # The drain publishes on its schedule; ingest publishes what it just stored (eager publish).
  local publisher
  for publisher in "$DRAIN_SA" "$INGEST_SA"; do
    g pubsub topics add-iam-policy-binding "$PUBSUB_TOPIC" \
      --member "serviceAccount:$publisher" --role roles/pubsub.publisher >/dev/null
    info "publisher on $PUBSUB_TOPIC for $publisher"
  done
  g pubsub subscriptions add-iam-policy-binding "$PUBSUB_DEAD_LETTER_SUBSCRIPTION" \
    --member "serviceAccount:$REPLAY_SA" --role roles/pubsub.subscriber >/dev/null
  info "subscriber on $PUBSUB_DEAD_LETTER_SUBSCRIPTION for $REPLAY_SA"
  # The redrive republishes dead letters to the main topic.
  g pubsub topics add-iam-policy-binding "$PUBSUB_TOPIC" \
    --member "serviceAccount:$REPLAY_SA" --role roles/pubsub.publisher >/dev/null
  info "publisher on $PUBSUB_TOPIC for $REPLAY_SA"
}

# Substitutes the placeholders of one manifest into $RENDER_DIR and prints the result's path.
render() {
  local source="$ROOT/cloudrun/$1" out="$RENDER_DIR/$1"
  envsubst "$MANIFEST_VARS" <"$source" >"$out"
  if [ -z "$CLOUD_SQL_INSTANCE" ]; then
    sed -i '/run\.googleapis\.com\/cloudsql-instances:/d' "$out"
  fi
  # shellcheck disable=SC2016 # a literal ${ left over is what we look for
  if grep -n '\${' "$out" >&2; then
    die "cloudrun/$1 has a placeholder that is not in MANIFEST_VARS"
  fi
  printf '%s' "$out"
}

service_url() {
  g run services describe "$1" --region "$REGION" --format 'value(status.url)'
}

deploy_services() {
  local service
  for service in "${SERVICES[@]}"; do
    section "Cloud Run service $service"
    g run services replace "$(render "${service#fluxgate-}.service.yaml")" --region "$REGION"
  done
  section "Who may call the services"
  g run services add-iam-policy-binding "$WORKER_SERVICE" --region "$REGION" \
    --member "serviceAccount:$PUSH_SA" --role roles/run.invoker >/dev/null
  info "$WORKER_SERVICE: only $PUSH_SA (Pub/Sub push)"
  if [ "$INGEST_ACCESS" = public ]; then
    # Tenants are not Google identities: ingest admits them by their API keys itself.
    g run services add-iam-policy-binding "$INGEST_SERVICE" --region "$REGION" --member allUsers --role roles/run.invoker >/dev/null
    info "$INGEST_SERVICE: public; every request needs a tenant's API key (FLUXGATE_AUTH=keys)"
  else
    # Going back from public to private on a re-run must take the public binding away.
    quietly g run services remove-iam-policy-binding "$INGEST_SERVICE" --region "$REGION" --member allUsers --role roles/run.invoker || true
    local member invokers members
    invokers=${INGEST_INVOKERS:-user:$(gcloud config get-value account 2>/dev/null)}
    IFS=, read -r -a members <<<"$invokers"
    for member in "${members[@]}"; do
      g run services add-iam-policy-binding "$INGEST_SERVICE" --region "$REGION" \
        --member "$member" --role roles/run.invoker >/dev/null
      info "$INGEST_SERVICE: $member"
    done
  fi
  info "fluxgate-replay, fluxgate-metrics: project Owners/Run Invokers only, as admins (FLUXGATE_ADMIN_AUTH=platform; grant roles/run.invoker to add others)"
}

ensure_push_subscription() {
  section "Pub/Sub push subscription $PUBSUB_PUSH_SUBSCRIPTION"
  local project_number agent worker_url
  project_number=$(g projects describe "$PROJECT_ID" --format 'value(projectNumber)')
  agent="service-$project_number@gcp-sa-pubsub.iam.gserviceaccount.com"
  worker_url=$(service_url "$WORKER_SERVICE")
  # Pub/Sub signs the OIDC token as the push account, moves dead letters, and acks the
  # original once dead-lettered: its service agent needs these three grants.
  g iam service-accounts add-iam-policy-binding "$PUSH_SA" \
    --member "serviceAccount:$agent" --role roles/iam.serviceAccountTokenCreator >/dev/null
  g pubsub topics add-iam-policy-binding "$PUBSUB_DEAD_LETTER_TOPIC" \
    --member "serviceAccount:$agent" --role roles/pubsub.publisher >/dev/null
  local settings=(
    --push-endpoint "$worker_url$PUBSUB_PUSH_PATH"
    --push-auth-service-account "$PUSH_SA"
    --push-auth-token-audience "$worker_url"
    --ack-deadline "$ACK_DEADLINE_SECONDS"
    --dead-letter-topic "$PUBSUB_DEAD_LETTER_TOPIC"
    --max-delivery-attempts "$MAX_DELIVERY_ATTEMPTS"
    --min-retry-delay "$MIN_RETRY_DELAY"
    --max-retry-delay "$MAX_RETRY_DELAY"
  )
  if quietly g pubsub subscriptions describe "$PUBSUB_PUSH_SUBSCRIPTION"; then
    g pubsub subscriptions update "$PUBSUB_PUSH_SUBSCRIPTION" "${settings[@]}"
  else
    g pubsub subscriptions create "$PUBSUB_PUSH_SUBSCRIPTION" --topic "$PUBSUB_TOPIC" \
      --expiration-period never "${settings[@]}"
  fi
  g pubsub subscriptions add-iam-policy-binding "$PUBSUB_PUSH_SUBSCRIPTION" \
    --member "serviceAccount:$agent" --role roles/pubsub.subscriber >/dev/null
  info "push to $worker_url$PUBSUB_PUSH_PATH as $PUSH_SA, dead letters after $MAX_DELIVERY_ATTEMPTS deliveries"
}

deploy_drain() {
  section "Cloud Run job $DRAIN_JOB"
  g run jobs replace "$(render outbox-drain.job.yaml)" --region "$REGION"
  g run jobs add-iam-policy-binding "$DRAIN_JOB" --region "$REGION" \
    --member "serviceAccount:$SCHEDULER_SA" --role roles/run.invoker >/dev/null
  info "$DRAIN_JOB: executed only by $SCHEDULER_SA"

  section "Cloud Scheduler job $SCHEDULER_JOB ($DRAIN_SCHEDULE, UTC)"
  # The Cloud Run Admin API's jobs.run, called with an OAuth access token of the scheduler
  # account (Google APIs take OAuth tokens; OIDC tokens are for calling Cloud Run URLs).
  local settings=(
    --location "$REGION"
    --schedule "$DRAIN_SCHEDULE"
    --time-zone Etc/UTC
    --uri "https://$REGION-run.googleapis.com/apis/run.googleapis.com/v1/namespaces/$PROJECT_ID/jobs/$DRAIN_JOB:run"
    --http-method POST
    --oauth-service-account-email "$SCHEDULER_SA"
    --oauth-token-scope https://www.googleapis.com/auth/cloud-platform
    # A missed tick is not retried: the next one comes within DRAIN_SCHEDULE anyway.
    --max-retry-attempts 0
  )
  if quietly g scheduler jobs describe "$SCHEDULER_JOB" --location "$REGION"; then
    g scheduler jobs update http "$SCHEDULER_JOB" "${settings[@]}"
  else
    g scheduler jobs create http "$SCHEDULER_JOB" "${settings[@]}"
  fi
}

print_deployed() {
  local ingest_url admin_url auth identity
  ingest_url=$(service_url "$INGEST_SERVICE")
  # shellcheck disable=SC2016 # printed for the user's shell to expand
  identity='-H "Authorization: Bearer $(gcloud auth print-identity-token)"'
  # shellcheck disable=SC2016
  auth='-H "Authorization: Bearer $KEY"'
  # shellcheck disable=SC2016
  [ "$INGEST_ACCESS" = public ] || auth="-H \"X-Api-Key: \$KEY\" $identity"
  admin_url=$(service_url fluxgate-metrics)
  section "Deployed"
  cat <<EOF
ingest:  $ingest_url  ($INGEST_ACCESS; tenants' API keys)
worker:  $(service_url "$WORKER_SERVICE")  (Pub/Sub push only)
replay:  $(service_url fluxgate-replay)  (operators: identity token, roles/run.invoker)
metrics: $admin_url  (operators: identity token, roles/run.invoker)
drain:   Cloud Run job $DRAIN_JOB, run by Cloud Scheduler job $SCHEDULER_JOB ($DRAIN_SCHEDULE)
EOF
  print_first_event "$ingest_url" "$FIRST_TENANT" "$auth"
  cat <<EOF

Run the drain now instead of waiting: gcloud run jobs execute $DRAIN_JOB --region $REGION --wait

The row in BigQuery, and the pipeline's figures (operators):

  bq query --nouse_legacy_sql 'SELECT * FROM \`$PROJECT_ID.$BIGQUERY_DATASET.$BIGQUERY_TABLE\` WHERE tenant_id = "$FIRST_TENANT"'
  curl "$admin_url/v1/outbox/summary?tenantId=$FIRST_TENANT" $identity
EOF
}

main() {
  info "project $PROJECT_ID, region $REGION, images $IMAGE_REPO/<function>:$IMAGE_TAG"
  enable_apis
  ensure_artifact_repository
  build_images
  ensure_service_accounts
  ensure_database_secret
  ensure_bigquery
  ensure_pubsub_topics
  deploy_services
  ensure_push_subscription
  deploy_drain
  # After the services: ingest applied the migrations when it started.
  ensure_first_tenant "${TENANT_DATABASE_URL:-}" "$FIRST_TENANT"
  print_deployed
}

main
