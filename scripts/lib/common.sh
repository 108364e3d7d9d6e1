# Helpers shared by fluxgate's scripts. Source it; it defines functions only.
# shellcheck shell=bash

# A section header with the time since the script started, so slow steps show in CI logs.
section() {
  local elapsed=$((SECONDS - ${FLUXGATE_SCRIPT_START:-0}))
  if [ -t 1 ]; then
    printf '\n\033[1m==> %s\033[0m  (+%ss)\n' "$*" "$elapsed"
  else
    printf '\n==> %s  (+%ss)\n' "$*" "$elapsed"
  fi
}

info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "'$*' needs root, and there is no sudo"
  fi
}

# Installs Debian packages, running apt-get update once per script run.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "cannot install $*: no apt-get on this machine"
  if [ -z "${FLUXGATE_APT_UPDATED:-}" ]; then
    info "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    FLUXGATE_APT_UPDATED=1
  fi
  info "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# wait_until SECONDS WHAT COMMAND...: retries COMMAND every half second until it succeeds;
# fails naming WHAT after SECONDS.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "$what was not ready after ${timeout}s"
    fi
    sleep 0.5
  done
}

# url_host URL / url_port URL DEFAULT: the host and port of a database URL
# (scheme://[user[:password]@]host[:port][/db][?query]).
url_host() {
  local rest=${1#*://}
  rest=${rest%%[/?]*}
  rest=${rest##*@}
  printf '%s' "${rest%%:*}"
}

url_port() {
  local rest=${1#*://}
  rest=${rest%%[/?]*}
  rest=${rest##*@}
  case "$rest" in
    *:*) printf '%s' "${rest##*:}" ;;
    *) printf '%s' "$2" ;;
  esac
}

# True when a database URL points at this machine, so scripts may start the server themselves.
is_local_url() {
  case "$(url_host "$1")" in
    127.0.0.1 | localhost | '') return 0 ;;
    *) return 1 ;;
  esac
}
