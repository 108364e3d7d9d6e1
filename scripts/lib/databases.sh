# The test database servers: make sure PostgreSQL and MariaDB run and accept the test URLs,
# installing and starting them on this machine when needed. Source after common.sh.
# shellcheck shell=bash

: "${FLUXGATE_TEST_POSTGRES_URL:=postgres://postgres@127.0.0.1:5432/postgres}"
: "${FLUXGATE_TEST_MYSQL_URL:=mysql://root@127.0.0.1:3306/test}"
# Leftover test databases younger than this may belong to a test run still going on this
# machine (another checkout, a colleague's run), so only older ones are dropped.
: "${FLUXGATE_TEST_DB_MIN_AGE_MINUTES:=10}"
export FLUXGATE_TEST_POSTGRES_URL FLUXGATE_TEST_MYSQL_URL

# ---- PostgreSQL ---------------------------------------------------------------------------

pg_query() {
  psql "$FLUXGATE_TEST_POSTGRES_URL" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"
}

pg_ready() {
  command -v pg_isready >/dev/null 2>&1 && pg_isready -q -d "$FLUXGATE_TEST_POSTGRES_URL"
}

# The newest installed cluster version (Debian layout: /etc/postgresql/<version>/main).
pg_version() {
  local dir
  dir=$(find /etc/postgresql -mindepth 2 -maxdepth 2 -name main -type d 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && basename "$(dirname "$dir")"
}

# Debian asks for a password on 127.0.0.1 (scram-sha-256); the test server trusts local TCP.
pg_trust_local_tcp() {
  local version=$1
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  local trusted='^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust'
  [ -f "$hba" ] || return 0
  grep -Eq "$trusted" "$hba" && return 0
  info "pg_hba.conf: trust connections from 127.0.0.1 and ::1 (a test server only)"
  as_root sed -i -E \
    's#^([[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' \
    "$hba"
  if ! grep -Eq "$trusted" "$hba"; then
    # No such line at all: the first matching line wins, so put ours first.
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload >/dev/null 2>&1 || true
}

ensure_postgres() {
  section "PostgreSQL: $FLUXGATE_TEST_POSTGRES_URL"
  local version
  if pg_ready; then
    info "running"
  else
    is_local_url "$FLUXGATE_TEST_POSTGRES_URL" ||
      die "PostgreSQL at $FLUXGATE_TEST_POSTGRES_URL does not answer, and it is not on this machine to start"
    version=$(pg_version || true)
    if [ -z "$version" ]; then
      apt_install postgresql
      version=$(pg_version || true)
      [ -n "$version" ] || die "postgresql is installed but /etc/postgresql has no main cluster"
    fi
    pg_trust_local_tcp "$version"
    info "starting cluster $version/main"
    # Exit status 2 means it was already running; readiness is checked below either way.
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_until 60 "PostgreSQL at $FLUXGATE_TEST_POSTGRES_URL" pg_ready
  fi
  if ! pg_query 'SELECT 1' >/dev/null 2>&1; then
    # It answers but refuses the login: fix authentication on a local server.
    version=$(pg_version || true)
    if is_local_url "$FLUXGATE_TEST_POSTGRES_URL" && [ -n "$version" ]; then
      pg_trust_local_tcp "$version"
    fi
    pg_query 'SELECT 1' >/dev/null ||
      die "PostgreSQL answers but $FLUXGATE_TEST_POSTGRES_URL cannot log in"
  fi
  info "PostgreSQL $(pg_query 'SHOW server_version')"
}

# pgbench, the raw SQL client of `scripts/bench.sh drain`: on PATH, in a server's bin folder
# (Debian keeps it there), or from Debian's postgresql-client.
ensure_pgbench() {
  command -v pgbench >/dev/null 2>&1 && return 0
  local dir
  for dir in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r); do
    if [ -x "$dir/pgbench" ]; then
      export PATH="$PATH:$dir"
      return 0
    fi
  done
  apt_install postgresql-client
  command -v pgbench >/dev/null 2>&1 || die "postgresql-client is installed, but pgbench is not on PATH"
}

# ---- MariaDB ------------------------------------------------------------------------------

# user[:password] of the MySQL URL (no percent-decoding: test URLs are plain).
mysql_url_user() {
  local rest=${FLUXGATE_TEST_MYSQL_URL#*://}
  rest=${rest%%[/?]*}
  case "$rest" in
    *@*) rest=${rest%@*} ;;
    *) rest=root ;;
  esac
  printf '%s' "${rest%%:*}"
}

mysql_url_password() {
  local rest=${FLUXGATE_TEST_MYSQL_URL#*://}
  rest=${rest%%[/?]*}
  case "$rest" in
    *:*@*) rest=${rest%@*} && printf '%s' "${rest#*:}" ;;
    *) printf '' ;;
  esac
}

mysql_url_database() {
  local rest=${FLUXGATE_TEST_MYSQL_URL#*://}
  case "$rest" in
    */*) rest=${rest#*/} && printf '%s' "${rest%%\?*}" ;;
    *) printf '' ;;
  esac
}

# A statement over TCP as the URL's user: what the tests do.
my_query() {
  MYSQL_PWD="$(mysql_url_password)" mysql --protocol=TCP \
    -h "$(url_host "$FLUXGATE_TEST_MYSQL_URL")" -P "$(url_port "$FLUXGATE_TEST_MYSQL_URL" 3306)" \
    -u "$(mysql_url_user)" -N -B -e "$1"
}

# The server process answers (even if it refuses our login).
mariadb_alive() {
  command -v mysqladmin >/dev/null 2>&1 || return 1
  mysqladmin --protocol=TCP -h "$(url_host "$FLUXGATE_TEST_MYSQL_URL")" \
    -P "$(url_port "$FLUXGATE_TEST_MYSQL_URL" 3306)" --connect-timeout=2 ping >/dev/null 2>&1
}

# Debian's root@localhost logs in through the unix socket only; tests log in over TCP as root
# with an empty password. The OS root user can still use the socket to allow that.
mariadb_allow_root_tcp() {
  [ "$(mysql_url_user)" = root ] && [ -z "$(mysql_url_password)" ] || return 0
  info "allowing root with an empty password over TCP from 127.0.0.1 (a test server only)"
  as_root mysql -uroot -e "
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
    ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
    FLUSH PRIVILEGES;" || warn "could not change root's login through the socket"
}

ensure_mariadb() {
  section "MariaDB: $FLUXGATE_TEST_MYSQL_URL"
  if my_query 'SELECT 1' >/dev/null 2>&1; then
    info "running"
  else
    is_local_url "$FLUXGATE_TEST_MYSQL_URL" ||
      die "MariaDB at $FLUXGATE_TEST_MYSQL_URL does not answer, and it is not on this machine to start"
    if ! mariadb_alive; then
      if [ ! -x /usr/sbin/mariadbd ]; then
        apt_install mariadb-server mariadb-client
      fi
      if ! mariadb_alive; then
        info "starting /usr/sbin/mariadbd"
        as_root install -d -o mysql -g mysql /run/mysqld
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
        wait_until 60 "MariaDB at $FLUXGATE_TEST_MYSQL_URL" mariadb_alive
      fi
    fi
    if ! my_query 'SELECT 1' >/dev/null 2>&1; then
      mariadb_allow_root_tcp
    fi
    my_query 'SELECT 1' >/dev/null || die "MariaDB answers but $FLUXGATE_TEST_MYSQL_URL cannot log in"
  fi
  # The admin URL names a database to connect to; a fresh install has no `test` database.
  local database
  database=$(mysql_url_database)
  if [ -n "$database" ]; then
    my_query "CREATE DATABASE IF NOT EXISTS \`$database\`"
  fi
  info "MariaDB $(my_query 'SELECT VERSION()')"
}

# ---- Leftovers ----------------------------------------------------------------------------

# drop_listed_databases SERVER QUERY LIST_SQL DROP_SQL: drops each database LIST_SQL names,
# DROP_SQL being the statement with %s for the name, through QUERY (pg_query or my_query).
drop_listed_databases() {
  local server=$1 query=$2 list_sql=$3 drop_sql=$4 names name count=0
  if names=$("$query" "$list_sql" 2>&1); then
    for name in $names; do
      # shellcheck disable=SC2059 # DROP_SQL is the format: the name goes into it
      "$query" "$(printf "$drop_sql" "$name")" && count=$((count + 1))
    done
    info "$server: dropped $count"
  else
    warn "$server: could not list leftover databases: $names"
  fi
}

# Test databases (fluxgate_t_*) and SQLite directories that killed test runs left behind.
drop_leftover_test_databases() {
  section "Dropping leftover test databases (older than ${FLUXGATE_TEST_DB_MIN_AGE_MINUTES} min)"
  local age=$FLUXGATE_TEST_DB_MIN_AGE_MINUTES count

  # PG_VERSION is written when a database is created: its time is the database's age.
  drop_listed_databases PostgreSQL pg_query "SELECT datname FROM pg_database
                       WHERE datname LIKE 'fluxgate\_t\_%'
                         AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification
                             < now() - interval '$age minutes'" 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)'

  # A test database's tables are created by its migrations right after the database.
  drop_listed_databases MariaDB my_query "SELECT table_schema FROM information_schema.tables
                       WHERE table_schema LIKE 'fluxgate\\_t\\_%'
                       GROUP BY table_schema
                       HAVING MAX(create_time) < NOW() - INTERVAL $age MINUTE" 'DROP DATABASE IF EXISTS `%s`'

  count=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'fluxgate-test-*' -mmin "+$age" 2>/dev/null | wc -l)
  find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'fluxgate-test-*' -mmin "+$age" -exec rm -rf {} + 2>/dev/null || true
  info "SQLite: removed $count temporary directories"
}
