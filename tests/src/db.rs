//! A fresh database per test, reached through `fluxgate::store::connect`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Command, FromArgMatches};
use fluxgate::event::EventKey;
use fluxgate::store::{self, DatabaseConfig, Store, StoredEvent};
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, PgConnection, SqliteConnection};
use tempfile::TempDir;

/// The admin URL of the PostgreSQL server the tests create their databases on.
pub const POSTGRES_URL_ENV: &str = "FLUXGATE_TEST_POSTGRES_URL";
/// The admin URL of the MariaDB (or MySQL) server the tests create their databases on.
pub const MYSQL_URL_ENV: &str = "FLUXGATE_TEST_MYSQL_URL";
/// Which database [`TestDb::from_env`] makes: `postgres`, `mariadb` (or `mysql`) or `sqlite`.
pub const TEST_DB_ENV: &str = "FLUXGATE_TEST_DB";
/// Every database a test creates is named with this prefix; `scripts/test.sh` drops leftovers.
pub const TEST_DB_PREFIX: &str = "fluxgate_t_";

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    MariaDb,
    Sqlite,
}

impl DbKind {
    /// The database a name means: `postgres` (or `postgresql`), `mariadb` (or `mysql`) or
    /// `sqlite`.
    pub fn named(name: &str) -> Option<DbKind> {
        match name {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mariadb" | "mysql" => Some(Self::MariaDb),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// What `Store::dialect` answers for this database.
    pub fn dialect(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MariaDb => "mysql",
            Self::Sqlite => "sqlite",
        }
    }

    fn server_name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::MariaDb => "MariaDB",
            Self::Sqlite => "SQLite",
        }
    }

    fn start_command(self) -> &'static str {
        match self {
            Self::Postgres => {
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            }
            Self::MariaDb => {
                "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
            }
            Self::Sqlite => "(nothing to start)",
        }
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.server_name())
    }
}

/// A database of its own for one test, migrated and connected. Dropped again by
/// [`TestDb::cleanup`], or by the drop guard when the `TestDb` is dropped without it — also
/// when the test panics, even with a session still holding a transaction open on it
/// (`tests/test_db.rs` proves it on each database); `scripts/test.sh` removes whatever a
/// killed test run left behind.
pub struct TestDb {
    /// The URL the store was opened with (give it to a function under test as `DATABASE_URL`).
    pub url: String,
    // Declared before `teardown`: the store's pool goes before its database does.
    pub store: Arc<dyn Store>,
    pub kind: DbKind,
    teardown: Teardown,
}

enum Teardown {
    /// A database on a server: dropped through the admin URL.
    Server(ServerDb),
    /// The SQLite file's directory: removed when dropped.
    Dir(TempDir),
}

/// A database this crate created on a server. Dropping the guard drops the database, so
/// nothing is left behind by a panic between `CREATE DATABASE` and the end of the test.
struct ServerDb {
    kind: DbKind,
    admin_url: String,
    name: String,
    dropped: bool,
}

impl ServerDb {
    async fn drop_now(mut self) {
        self.dropped = true;
        if let Err(err) = drop_database(self.kind, &self.admin_url, &self.name).await {
            eprintln!(
                "fluxgate-tests: could not drop {} database {}: {err}",
                self.kind, self.name
            );
        }
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        self.dropped = true;
        let (kind, admin_url, name) = (self.kind, self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // runtime on its own thread does the work.
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    if let Err(err) = runtime.block_on(drop_database(kind, &admin_url, &name)) {
                        eprintln!("fluxgate-tests: could not drop {kind} database {name}: {err}");
                    }
                }
                Err(err) => eprintln!("fluxgate-tests: no runtime to drop {name}: {err}"),
            }
        });
        let _ = worker.join();
    }
}

impl TestDb {
    /// A new database on the PostgreSQL server of `FLUXGATE_TEST_POSTGRES_URL`
    /// (default `postgres://postgres@127.0.0.1:5432/postgres`).
    pub async fn postgres() -> Self {
        Self::on_server(DbKind::Postgres).await
    }

    /// A new database on the MariaDB server of `FLUXGATE_TEST_MYSQL_URL`
    /// (default `mysql://root@127.0.0.1:3306/test`), created with the server's default
    /// character set and collation, as a deployment's database would be.
    pub async fn mariadb() -> Self {
        Self::on_server(DbKind::MariaDb).await
    }

    /// A new SQLite file in a temporary directory that lives as long as the `TestDb`.
    pub async fn sqlite() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fluxgate-test-")
            .tempdir()
            .expect("create a temporary directory for the SQLite test database");
        let url = format!("sqlite://{}", dir.path().join("fluxgate.db").display());
        let store = match store::connect(&url, &database_config(&url)).await {
            Ok(store) => store,
            Err(err) => panic!("fluxgate::store::connect({url}) failed: {err}"),
        };
        Self {
            url,
            store,
            kind: DbKind::Sqlite,
            teardown: Teardown::Dir(dir),
        }
    }

    /// The database `FLUXGATE_TEST_DB` names (`postgres`, `mariadb`/`mysql`, `sqlite`;
    /// default `sqlite`), for tests that run on whichever database a run chooses.
    pub async fn from_env() -> Self {
        let chosen = std::env::var(TEST_DB_ENV).unwrap_or_default();
        let chosen = chosen.trim().to_ascii_lowercase();
        if chosen.is_empty() {
            return Self::sqlite().await;
        }
        match DbKind::named(&chosen) {
            Some(kind) => Self::of(kind).await,
            None => panic!("{TEST_DB_ENV}={chosen:?}: expected postgres, mariadb, mysql or sqlite"),
        }
    }

    /// The database of `kind`.
    pub async fn of(kind: DbKind) -> Self {
        match kind {
            DbKind::Postgres => Self::postgres().await,
            DbKind::MariaDb => Self::mariadb().await,
            DbKind::Sqlite => Self::sqlite().await,
        }
    }

    /// Drops the database now (closing this handle's store first). Errors are reported on
    /// stderr, not raised: the test's verdict does not depend on the cleanup.
    pub async fn cleanup(self) {
        let TestDb {
            store, teardown, ..
        } = self;
        drop(store);
        match teardown {
            Teardown::Server(db) => db.drop_now().await,
            Teardown::Dir(dir) => {
                if let Err(err) = dir.close() {
                    eprintln!("fluxgate-tests: could not remove the SQLite test directory: {err}");
                }
            }
        }
    }

    /// The database's name on its server; for SQLite, the path of its file.
    pub fn database_name(&self) -> String {
        match &self.teardown {
            Teardown::Server(db) => db.name.clone(),
            Teardown::Dir(dir) => dir.path().join("fluxgate.db").display().to_string(),
        }
    }

    /// The stored event of `key` with its outbox row; panics when there is none.
    pub async fn stored(&self, key: &EventKey) -> StoredEvent {
        self.store
            .get_event(key)
            .await
            .unwrap_or_else(|err| panic!("get_event({key:?}): {err}"))
            .unwrap_or_else(|| panic!("{key:?} is not stored"))
    }

    /// How many rows of `table` (`"events"` or `"outbox"`) hold `key`, counted in SQL on a
    /// connection of its own, not through the `Store` under test.
    pub async fn count_rows(&self, table: &str, key: &EventKey) -> i64 {
        let (postgres, other) = match table {
            "events" => (
                "SELECT COUNT(*) FROM events WHERE tenant_id = $1 AND event_id = $2",
                "SELECT COUNT(*) FROM events WHERE tenant_id = ? AND event_id = ?",
            ),
            "outbox" => (
                "SELECT COUNT(*) FROM outbox WHERE tenant_id = $1 AND event_id = $2",
                "SELECT COUNT(*) FROM outbox WHERE tenant_id = ? AND event_id = ?",
            ),
            other => panic!("count_rows: no table {other:?} (events or outbox)"),
        };
        // One connection of the database's own type, one query, closed again.
        macro_rules! count {
            ($conn:ty, $sql:expr) => {{
                let mut conn = <$conn>::connect(&self.url)
                    .await
                    .unwrap_or_else(|e| panic!("connect to {}: {e}", redact(&self.url)));
                let n: i64 = sqlx::query_scalar($sql)
                    .bind(&key.tenant_id)
                    .bind(&key.event_id)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("count {table} rows on {}: {e}", self.kind));
                let _ = conn.close().await;
                n
            }};
        }
        match self.kind {
            DbKind::Postgres => count!(PgConnection, postgres),
            DbKind::MariaDb => count!(MySqlConnection, other),
            DbKind::Sqlite => count!(SqliteConnection, other),
        }
    }

    async fn on_server(kind: DbKind) -> Self {
        let (env, default) = match kind {
            DbKind::Postgres => (POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL),
            DbKind::MariaDb => (MYSQL_URL_ENV, DEFAULT_MYSQL_URL),
            DbKind::Sqlite => unreachable!("SQLite has no server"),
        };
        let admin_url = admin_url(env, default);
        let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple());

        let url = with_database(&admin_url, &name);
        let config = database_config(&url);

        let created = match kind {
            DbKind::Postgres => {
                let create = format!("CREATE DATABASE \"{name}\"");
                admin_execute::<PgConnection>(kind, env, &admin_url, create).await
            }
            DbKind::MariaDb => {
                let create = format!("CREATE DATABASE `{name}`");
                admin_execute::<MySqlConnection>(kind, env, &admin_url, create).await
            }
            DbKind::Sqlite => unreachable!("SQLite has no server"),
        };
        if let Err(err) = created {
            panic!(
                "could not create the test database {name} on {kind} at {}: {err}",
                redact(&admin_url)
            );
        }
        let guard = ServerDb {
            kind,
            admin_url,
            name,
            dropped: false,
        };

        match store::connect(&url, &config).await {
            Ok(store) => Self {
                url,
                store,
                kind,
                teardown: Teardown::Server(guard),
            },
            Err(err) => {
                // Leave nothing behind, then fail with the store's own error.
                guard.drop_now().await;
                panic!(
                    "fluxgate::store::connect({}) failed on {kind}: {err}",
                    redact(&url)
                );
            }
        }
    }
}

/// Whether the database `name` (a [`TestDb::database_name`]) exists: asked of the server
/// through its admin URL for PostgreSQL and MariaDB, looked up on disk for SQLite.
pub async fn database_exists(kind: DbKind, name: &str) -> bool {
    let (env, default) = match kind {
        DbKind::Postgres => (POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL),
        DbKind::MariaDb => (MYSQL_URL_ENV, DEFAULT_MYSQL_URL),
        DbKind::Sqlite => return std::path::Path::new(name).exists(),
    };
    let admin_url = admin_url(env, default);
    let found: Result<i64, sqlx::Error> = match kind {
        DbKind::Postgres => {
            let mut conn = admin_connection::<PgConnection>(kind, env, &admin_url).await;
            let found = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                .bind(name)
                .fetch_one(&mut conn)
                .await;
            let _ = conn.close().await;
            found
        }
        DbKind::MariaDb => {
            let mut conn = admin_connection::<MySqlConnection>(kind, env, &admin_url).await;
            let found = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            )
            .bind(name)
            .fetch_one(&mut conn)
            .await;
            let _ = conn.close().await;
            found
        }
        DbKind::Sqlite => unreachable!("answered above"),
    };
    match found {
        Ok(n) => n > 0,
        Err(err) => panic!("could not list the databases of {kind}: {err}"),
    }
}

fn admin_url(env: &str, default: &str) -> String {
    std::env::var(env)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The configuration `fluxgate::store::connect` gets for a test database: this URL, a pool of
/// 10, migrations on. Built through the config's own argument parser, so settings added to
/// `DatabaseConfig` later take their defaults (or their environment variables) here too.
pub fn database_config(url: &str) -> DatabaseConfig {
    let command = DatabaseConfig::augment_args(Command::new("fluxgate-tests").no_binary_name(true));
    let matches = command
        .try_get_matches_from([
            "--database-url",
            url,
            "--db-max-connections",
            "10",
            "--db-migrate",
            "true",
        ])
        .unwrap_or_else(|err| panic!("DatabaseConfig for the test database: {err}"));
    DatabaseConfig::from_arg_matches(&matches)
        .unwrap_or_else(|err| panic!("DatabaseConfig for the test database: {err}"))
}

/// An admin connection, or a panic that says which server is missing and how to start it.
async fn admin_connection<C: Connection>(kind: DbKind, env: &str, admin_url: &str) -> C {
    let attempt = tokio::time::timeout(ADMIN_TIMEOUT, C::connect(admin_url)).await;
    let err = match attempt {
        Ok(Ok(conn)) => return conn,
        Ok(Err(err)) => err.to_string(),
        Err(_) => format!("no answer within {ADMIN_TIMEOUT:?}"),
    };
    panic!(
        "cannot reach the {kind} test server at {url} ({env}): {err}\n\
         Tests that need {kind} never skip. `bash scripts/test.sh` starts it; or start it by hand:\n\
         \x20   {start}\n\
         (or point {env} at a running server's admin URL)",
        url = redact(admin_url),
        start = kind.start_command(),
    );
}

/// `statement` on an admin connection of its own, closed again.
async fn admin_execute<C>(
    kind: DbKind,
    env: &str,
    admin_url: &str,
    statement: String,
) -> Result<(), sqlx::Error>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    let mut conn = admin_connection::<C>(kind, env, admin_url).await;
    let done = conn.execute(AssertSqlSafe(statement)).await;
    let _ = conn.close().await;
    done.map(drop)
}

async fn drop_database(kind: DbKind, admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let attempt = tokio::time::timeout(ADMIN_TIMEOUT, async {
        match kind {
            DbKind::Postgres => {
                let mut conn = PgConnection::connect(admin_url).await?;
                // FORCE ends the store's idle pool connections instead of waiting for them.
                conn.execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .await?;
                conn.close().await
            }
            DbKind::MariaDb => {
                let mut conn = MySqlConnection::connect(admin_url).await?;
                // A panicked test may have left a transaction open on a pool connection whose
                // runtime is gone or blocked: end every session still using the database (as
                // PostgreSQL's FORCE does), and do not wait on a lock for long either way.
                let sessions: Vec<i64> = sqlx::query_scalar(
                    "SELECT ID FROM information_schema.PROCESSLIST \
                     WHERE DB = ? AND ID <> CONNECTION_ID()",
                )
                .bind(name)
                .fetch_all(&mut conn)
                .await?;
                for id in sessions {
                    // Already gone is fine.
                    let _ = conn
                        .execute(AssertSqlSafe(format!("KILL CONNECTION {id}")))
                        .await;
                }
                conn.execute("SET SESSION lock_wait_timeout = 10").await?;
                conn.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                    .await?;
                conn.close().await
            }
            DbKind::Sqlite => Ok(()),
        }
    })
    .await;
    attempt.unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
}

/// `admin_url` with its database (the URL path) replaced by `name`; the query string stays.
fn with_database(admin_url: &str, name: &str) -> String {
    let (scheme, rest) = admin_url.split_once("://").unwrap_or(("", admin_url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map(|at| &tail[at..]).unwrap_or("");
    if scheme.is_empty() {
        format!("{authority}/{name}{query}")
    } else {
        format!("{scheme}://{authority}/{name}{query}")
    }
}

/// The URL with its password, if any, replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/test", "x"),
            "mysql://root@127.0.0.1:3306/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1", "x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            with_database("mysql://root@h?ssl-mode=disabled", "x"),
            "mysql://root@h/x?ssl-mode=disabled"
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1:3306/test"),
            "mysql://root@127.0.0.1:3306/test"
        );
    }

    #[test]
    fn the_config_takes_the_url_and_applies_migrations() {
        let config = database_config("sqlite:///tmp/x.db");
        assert_eq!(config.database_url.as_deref(), Some("sqlite:///tmp/x.db"));
        assert_eq!(config.max_connections(), 10);
        assert!(!config.lazy(), "connects at start-up off Lambda");
        assert!(config.db_migrate);
    }
}
