//! `TestDb` is a drop guard: a test that panics leaves no database behind, on any of the three
//! databases, whether it panics in a spawned task (multi-thread runtime) or unwinds out of
//! `block_on` as a failing `#[tokio::test]` does (current-thread runtime) — even while a
//! connection of its own still holds a transaction open on the database.

use std::sync::mpsc;

use fluxgate_tests::{DbKind, TestDb, database_exists, event, per_database};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

/// What a failing test does before it panics: it makes its database, writes through the store,
/// leaks a connection with an open transaction that has written a row (PostgreSQL and MariaDB;
/// its locks are held until the server ends the session), reports the database's name, and
/// panics.
async fn fail_after_writing(kind: DbKind, name: mpsc::Sender<String>) {
    let db = TestDb::of(kind).await;
    db.store
        .insert_events(&[event("acme", "e-1")])
        .await
        .expect("insert");
    let insert = "INSERT INTO tenants (id, created_at) VALUES ('leaked', CURRENT_TIMESTAMP)";
    match kind {
        DbKind::Postgres => leak_open_transaction::<PgConnection>(&db.url, insert).await,
        DbKind::MariaDb => leak_open_transaction::<MySqlConnection>(&db.url, insert).await,
        DbKind::Sqlite => {}
    }
    name.send(db.database_name())
        .expect("the test is listening");
    panic!("a test fails while its TestDb is alive");
}

/// A session of its own that writes `insert` in a transaction and is never closed.
async fn leak_open_transaction<C>(url: &str, insert: &'static str)
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    let mut conn = C::connect(url).await.expect("connect");
    conn.execute("BEGIN").await.expect("begin");
    conn.execute(insert)
        .await
        .expect("insert in the open transaction");
    std::mem::forget(conn);
}

async fn assert_gone(kind: DbKind, name: &str) {
    assert!(
        !database_exists(kind, name).await,
        "the {kind} database {name} outlived the test that panicked"
    );
}

/// The panic in a task of the test's multi-thread runtime.
async fn a_panicking_task_leaves_no_database(kind: DbKind) {
    let (sender, names) = mpsc::channel();
    let failed = tokio::spawn(fail_after_writing(kind, sender))
        .await
        .expect_err("the task panicked");
    assert!(failed.is_panic());
    let name = names.recv().expect("the task named its database");
    assert_gone(kind, &name).await;
}

/// The panic unwinding out of `block_on` of a current-thread runtime, as in a failing
/// `#[tokio::test]`; caught with `catch_unwind`.
async fn a_panicking_test_leaves_no_database(kind: DbKind) {
    let (sender, names) = mpsc::channel();
    let caught = std::thread::spawn(move || {
        std::panic::catch_unwind(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(fail_after_writing(kind, sender));
        })
    })
    .join()
    .expect("the thread itself ends");
    assert!(caught.is_err(), "the test body panicked");
    let name = names.recv().expect("the test named its database");
    assert_gone(kind, &name).await;
}

per_database!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_panicking_task_leaves_no_database: postgres, mariadb, sqlite);
per_database!(#[tokio::test] a_panicking_test_leaves_no_database: postgres, mariadb, sqlite);

/// The control: a database the guard has not dropped yet is seen by `database_exists`, so
/// the checks above cannot pass by looking in the wrong place.
#[tokio::test]
async fn a_live_database_is_seen_and_cleanup_drops_it() {
    for kind in [DbKind::Postgres, DbKind::MariaDb, DbKind::Sqlite] {
        let db = TestDb::of(kind).await;
        let name = db.database_name();
        assert!(database_exists(kind, &name).await, "{kind} {name}");
        db.cleanup().await;
        assert_gone(kind, &name).await;
    }
}
