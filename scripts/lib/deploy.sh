# What scripts/deploy-aws.sh and scripts/deploy-gcp.sh share: their start (ROOT, the clock of
# their sections, common.sh), their command line, the first tenant and its API key, and the
# first event they print. Each deploy script sources it first and defines `usage`.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export FLUXGATE_SCRIPT_START=$SECONDS
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

# Settings are environment variables: --help prints the usage, any other argument is refused.
no_arguments() {
  case "${1:-}" in
    -h | --help)
      usage
      exit 0
      ;;
    "") ;;
    *)
      usage >&2
      die "unexpected argument: $1 (settings are environment variables)"
      ;;
  esac
}

# require_settings NAME...: stops, with the usage, when one of them is empty.
require_settings() {
  local name missing=()
  for name in "$@"; do
    [ -n "${!name:-}" ] || missing+=("$name")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    usage >&2
    die "set ${missing[*]}"
  fi
}

# The first tenant and its API key, made with the local binary (scripts/dev.sh) against the
# deployed database once its tables exist. URL must be reachable from this machine; without one
# the commands are printed instead. A tenant that already has an active key keeps it: a
# re-run makes no second key. Sets FIRST_KEY to the new key (empty when none was made here).
#   ensure_first_tenant URL TENANT
ensure_first_tenant() {
  local url=$1 tenant=$2
  FIRST_KEY=
  section "First tenant $tenant and its API key"
  if [ -z "$url" ]; then
    info "no database URL this machine can reach (TENANT_DATABASE_URL): make them yourself,"
    info "from a machine that reaches the database (the key is shown once):"
    info "  DATABASE_URL='…' scripts/dev.sh tenants create $tenant"
    info "  DATABASE_URL='…' scripts/dev.sh keys create --tenant $tenant --name first"
    return 0
  fi
  # The migrations are the deploy's job; this only adds rows.
  DATABASE_URL=$url FLUXGATE_DB_MIGRATE=false "$ROOT/scripts/dev.sh" tenants create "$tenant"
  if DATABASE_URL=$url FLUXGATE_DB_MIGRATE=false "$ROOT/scripts/dev.sh" keys list --tenant "$tenant" |
    grep -q $'\tactive$'; then
    info "tenant $tenant has an active key already (scripts/dev.sh keys list --tenant $tenant); none made"
    return 0
  fi
  FIRST_KEY=$(DATABASE_URL=$url FLUXGATE_DB_MIGRATE=false "$ROOT/scripts/dev.sh" \
    keys create --tenant "$tenant" --name first | tail -n 1)
  info "API key of $tenant (shown once, only its hash is stored): $FIRST_KEY"
}

# The first event and its status, for the person who deployed. AUTH is how a tenant's key is
# sent to ingest (a curl header argument, the key as \$KEY).
#   print_first_event INGEST_URL TENANT 'AUTH'
print_first_event() {
  local url=$1 tenant=$2 auth=$3
  cat <<EOF

The first event (KEY: the tenant's API key, fgk_…):

  KEY=${FIRST_KEY:-fgk_…}
  curl -i $url/v1/events $auth \\
    -H 'Content-Type: application/json' \\
    -d '{"eventId":"order-1001","eventType":"order.created","payload":{"orderId":1001}}'
  # 202 {"tenantId":"$tenant","eventId":"order-1001","status":"accepted"}
  curl $url/v1/events/$tenant/order-1001 $auth   # DONE within seconds (ingest published it)
EOF
}
