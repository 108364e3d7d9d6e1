#!/usr/bin/env bash
# Runs the whole pipeline in one process on embedded defaults: SQLite, an in-process queue and a
# file warehouse under ./.fluxgate. No cloud account, no database server.
#   scripts/dev.sh                      # http://127.0.0.1:8080
#   PORT=9000 scripts/dev.sh            # another port
#   DATABASE_URL=postgres://… scripts/dev.sh   # PostgreSQL (or mysql://…) instead of SQLite
#   scripts/dev.sh keys list            # any argument goes to fluxgate-local (--help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "fluxgate needs the Rust toolchain: install it from https://rustup.rs, then run this again." >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fluxgate/target}"
export FLUXGATE_LOG_FORMAT="${FLUXGATE_LOG_FORMAT:-text}"
binary="$CARGO_TARGET_DIR/debug/fluxgate-local"

# The first build compiles every dependency: say so. Cargo shows its own progress, on stderr,
# so the output of subcommands such as `keys create` stays clean on stdout.
if [ ! -x "$binary" ]; then
  echo "fluxgate: first build of fluxgate-local into $CARGO_TARGET_DIR; this takes several minutes" \
    "(about 4-7 on 2 cores), later starts take seconds." >&2
fi
# Only fluxgate-local, with its own features. After scripts/test.sh this still compiles a few
# minutes once: the test build turns on features of tokio, tonic and regex (dev-dependencies,
# the test support crate) that this build does not, and cargo compiles a dependency once per
# feature set (docs/DEVELOPMENT.md, "Caches and disk space"). Matching the tests' features
# would mean building the test suite here, which a first run on a fresh clone should not pay.
cargo build -p fluxgate-local
exec "$binary" "$@"
