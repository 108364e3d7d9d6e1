//! The database URL from AWS Secrets Manager (moto, started by `scripts/test.sh`), proven by
//! connecting to the real test databases with what the secret resolves to.

use fluxgate::secrets::{SecretsManager, database_url_with};
use fluxgate::store;
use fluxgate::store::DatabaseConfig;
use fluxgate_tests::aws::{create_secret, moto_config};
use fluxgate_tests::{DbKind, MYSQL_URL_ENV, TestDb, database_config};
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection};

/// A password with every character that means something in a URL.
const AWKWARD_PASSWORD: &str = "p@ss:w/rd%#?&= +x";

async fn secrets() -> SecretsManager {
    SecretsManager::new(&moto_config().await)
}

/// The config of a function whose only database setting is the secret's id.
fn config_with_secret(secret_id: &str) -> DatabaseConfig {
    let mut config = database_config("unused://");
    config.database_url = None;
    config.database_secret_id = Some(secret_id.to_owned());
    config
}

/// The database name (last path segment) of a test database URL.
fn database_name(url: &str) -> &str {
    url.rsplit('/').next().expect("a database in the URL")
}

#[tokio::test]
async fn a_plain_url_secret_is_the_database_url() {
    let db = TestDb::postgres().await;
    let id = create_secret(&db.url).await;

    let url = database_url_with(&secrets().await, &config_with_secret(&id))
        .await
        .expect("resolve");
    assert_eq!(url.expose(), db.url);
    let store = store::connect(url.expose(), &database_config(url.expose()))
        .await
        .expect("connect with the secret's URL");
    store.ping().await.expect("ping");
    drop(store);
    db.cleanup().await;
}

#[tokio::test]
async fn an_rds_postgres_secret_connects_with_an_awkward_password() {
    let db = TestDb::postgres().await;
    let name = database_name(&db.url);
    let secret = serde_json::json!({
        "username": "postgres",
        "password": AWKWARD_PASSWORD,
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "dbname": name,
        "dbInstanceIdentifier": "fluxgate-test",
    });
    let id = create_secret(&secret.to_string()).await;

    let url = database_url_with(&secrets().await, &config_with_secret(&id))
        .await
        .expect("resolve");
    assert_eq!(
        url.expose(),
        format!("postgres://postgres:p%40ss%3Aw%2Frd%25%23%3F%26%3D%20%2Bx@127.0.0.1:5432/{name}")
    );
    // The test server trusts local connections, so this proves the URL parses to the right
    // user, host, port and database; the MariaDB test below checks the password itself.
    let store = store::connect(url.expose(), &database_config(url.expose()))
        .await
        .expect("connect with the resolved URL");
    assert_eq!(store.dialect(), DbKind::Postgres.dialect());
    drop(store);
    db.cleanup().await;
}

#[tokio::test]
async fn an_rds_mysql_secret_connects_as_a_user_with_an_awkward_password() {
    let db = TestDb::mariadb().await;
    let name = database_name(&db.url).to_owned();
    let user = format!(
        "fg_secret_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let admin_url = std::env::var(MYSQL_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".to_owned());
    let mut admin = MySqlConnection::connect(&admin_url)
        .await
        .expect("admin connection to the MariaDB test server");
    let quoted_password = AWKWARD_PASSWORD.replace('\'', "''");
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{quoted_password}'"
        )))
        .await
        .expect("create user");
    admin
        .execute(AssertSqlSafe(format!(
            "GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%'"
        )))
        .await
        .expect("grant");

    let secret = serde_json::json!({
        "username": user,
        "password": AWKWARD_PASSWORD,
        "engine": "mysql",
        "host": "127.0.0.1",
        "port": "3306",
        "dbname": name,
    });
    let id = create_secret(&secret.to_string()).await;
    let url = database_url_with(&secrets().await, &config_with_secret(&id))
        .await
        .expect("resolve");
    assert!(url.expose().starts_with(&format!("mysql://{user}:p%40ss")));
    let connected = store::connect(url.expose(), &database_config(url.expose())).await;

    // A wrong password must fail, or the success above proves nothing.
    let wrong = url.expose().replace("p%40ss", "nope");
    let refused = MySqlConnection::connect(&wrong).await;

    admin
        .execute(AssertSqlSafe(format!("DROP USER '{user}'@'%'")))
        .await
        .expect("drop user");
    let _ = admin.close().await;

    let store = connected.expect("connect as the secret's user with its password");
    store.ping().await.expect("ping");
    assert_eq!(store.dialect(), DbKind::MariaDb.dialect());
    assert!(refused.is_err(), "the server checks the password");
    drop(store);
    db.cleanup().await;
}

#[tokio::test]
async fn a_missing_secret_is_a_clear_error() {
    let id = fluxgate_tests::aws::unique_name("fluxgate-test/missing");
    let err = database_url_with(&secrets().await, &config_with_secret(&id))
        .await
        .expect_err("no such secret");
    let text = err.to_string();
    assert!(
        text.contains(&id) && text.contains("does not exist"),
        "names the secret: {text}"
    );
}

#[tokio::test]
async fn a_secret_that_is_no_database_url_is_refused_without_showing_it() {
    let id = create_secret("hunter2-not-a-url").await;
    let err = database_url_with(&secrets().await, &config_with_secret(&id))
        .await
        .expect_err("not a URL");
    let text = err.to_string();
    assert!(text.contains(&id), "{text}");
    assert!(!text.contains("hunter2"), "the value stays out: {text}");
}

#[tokio::test]
async fn without_a_secret_id_the_database_url_setting_is_used() {
    let config = database_config("sqlite:///tmp/fluxgate-never-opened.db");
    let url = database_url_with(&secrets().await, &config)
        .await
        .expect("resolve");
    assert_eq!(url.expose(), "sqlite:///tmp/fluxgate-never-opened.db");
    assert!(!format!("{url:?}").contains("sqlite"), "Debug hides it");
}

#[tokio::test]
async fn any_secret_string_can_be_read() {
    let key = r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nabc\n"}"#;
    let id = create_secret(key).await;
    let value = secrets().await.secret_string(&id).await.expect("read");
    assert_eq!(value.expose(), key);
}
