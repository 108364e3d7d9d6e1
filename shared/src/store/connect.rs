//! Opens the store named by a database URL.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Database, Executor};

use super::mysql::SESSION_SETUP;
use super::{DatabaseConfig, MySql, MySqlStore, Postgres, PostgresStore, Store};
use crate::error::{Error, Result};

/// Connects by the URL's scheme (`postgres://`, `postgresql://`, `mysql://`, `mariadb://`,
/// `sqlite:`) and applies the migrations when the config says so. A lazy pool (Lambda's
/// default) connects at its first query, unless migrations need it at once.
///
/// A database that cannot be reached here stops the start-up, so the error names the setting
/// to look at and the URL (without its password) it tried.
pub async fn connect(url: &str, config: &DatabaseConfig) -> Result<Arc<dyn Store>> {
    open(url, config).await.map_err(|e| match e {
        Error::Database(cause) => Error::setting_caused(
            "DATABASE_URL",
            format!(
                "cannot open the database at {}; check that it is running and that the URL \
                 (or FLUXGATE_DATABASE_SECRET_ID's secret) is right",
                redact(url)
            ),
            cause,
        ),
        other => other,
    })
}

/// A connection that sat idle in the pool at least this long is pinged before it is handed
/// out; one taken again sooner is used as it is.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// sqlx pings every idle connection before handing it out (`test_before_acquire`): a whole
/// round trip to the database per request, about a third of the socket calls of a
/// one-event ingest. A connection that was busy seconds ago is almost surely alive, so only
/// one idle for [`PING_IF_IDLE_FOR`] (a Lambda instance thawed after minutes, a quiet
/// service behind a proxy that drops idle connections) is checked. The price: a connection
/// broken within those seconds fails its one query with an error (503) instead of being
/// replaced silently, and the pool drops it; a client's retry is safe, as ingest is
/// idempotent.
fn ping_only_long_idle<DB: Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// A database URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn open(url: &str, config: &DatabaseConfig) -> Result<Arc<dyn Store>> {
    let scheme = url.split(':').next().unwrap_or_default();
    let acquire_timeout = Duration::from_secs(10);
    match scheme {
        "postgres" | "postgresql" => {
            let options = ping_only_long_idle(PgPoolOptions::new())
                .max_connections(config.max_connections())
                .acquire_timeout(acquire_timeout);
            let pool = if config.lazy() {
                options.connect_lazy(url)?
            } else {
                options.connect(url).await?
            };
            Ok(Arc::new(
                PostgresStore::new(pool, Postgres, config.db_migrate).await?,
            ))
        }
        "mysql" | "mariadb" => {
            let url = format!("mysql{}", &url[scheme.len()..]);
            // The columns are DATETIME in UTC and sqlx writes `DateTime<Utc>` as it is, so the
            // session zone must be UTC too (for anything the server itself converts); forced
            // here because a `?timezone=` in the URL would skew every timestamp.
            let options = MySqlConnectOptions::from_str(&url)?
                .timezone(Some("+00:00".to_owned()))
                .charset("utf8mb4");
            let pool_options = ping_only_long_idle(MySqlPoolOptions::new())
                .max_connections(config.max_connections())
                .acquire_timeout(acquire_timeout)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(SESSION_SETUP).await?;
                        Ok(())
                    })
                });
            let (pool, dialect) = if config.lazy() {
                let pool = pool_options.connect_lazy_with(options);
                (pool, MySql::deferred(config.mysql_claim_mode))
            } else {
                let pool = pool_options.connect_with(options).await?;
                let dialect = MySql::detect(&pool, config.mysql_claim_mode).await?;
                (pool, dialect)
            };
            Ok(Arc::new(
                MySqlStore::new(pool, dialect, config.db_migrate).await?,
            ))
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => open_sqlite(url, config, acquire_timeout).await,
        // The cloud functions are built without SQLite: each Lambda or Cloud Run instance would
        // have a file of its own, which the other functions never see.
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(Error::setting(
            "DATABASE_URL",
            "is a SQLite file, which this binary is built without: SQLite is for the \
             one-process fluxgate-local, where every function shares the file; functions \
             deployed on their own share a server database (postgres:// or mysql://)",
        )),
        other => Err(Error::setting(
            "DATABASE_URL",
            format!("scheme {other:?} is not supported (use postgres://, mysql:// or sqlite:)"),
        )),
    }
}

/// A SQLite file, for fluxgate-local (cargo feature `sqlite` of this crate).
#[cfg(feature = "sqlite")]
async fn open_sqlite(
    url: &str,
    config: &DatabaseConfig,
    acquire_timeout: Duration,
) -> Result<Arc<dyn Store>> {
    use super::{Sqlite, SqliteStore};
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    // WAL lets readers work beside the one writer; the busy timeout makes writers queue
    // instead of failing when the drain, worker and ingest write at once.
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true);
    // Always connected at once: the file is local, and creating it early reports a bad path
    // at start-up.
    let pool = SqlitePoolOptions::new()
        .max_connections(config.max_connections())
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await?;
    Ok(Arc::new(
        SqliteStore::new(pool, Sqlite, config.db_migrate).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact("sqlite://./.fluxgate/fluxgate.db"),
            "sqlite://./.fluxgate/fluxgate.db"
        );
    }
}
