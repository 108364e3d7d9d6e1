//! Conformance cases of [`ApiKeys`], the tenants-and-keys half of every store.

use fluxgate::Error;
use fluxgate::auth::key;
use fluxgate::store::{ApiKeys, NewApiKey};
use fluxgate_tests::{DbKind, TestDb};
use sqlx::{Connection, MySqlConnection, PgConnection, SqliteConnection};

fn new_key(key_id: &str, tenant: &str, name: Option<&str>) -> NewApiKey {
    NewApiKey {
        key_id: key_id.to_owned(),
        tenant_id: tenant.to_owned(),
        name: name.map(str::to_owned),
        secret_sha256: key::hash_hex(&format!("secret of {key_id}")),
        created_at: fluxgate::now(),
    }
}

pub async fn tenants_and_keys_round_trip(db: &TestDb) {
    let keys: &dyn ApiKeys = db.store.as_ref();
    let now = fluxgate::now();
    assert!(keys.create_tenant("acme", now).await.expect("create"));
    assert!(
        !keys.create_tenant("acme", now).await.expect("again"),
        "second create is a no-op"
    );
    assert!(
        keys.create_tenant("Acme", now)
            .await
            .expect("ids are case-sensitive")
    );
    assert!(keys.create_tenant("globex", now).await.expect("create"));
    let tenants: Vec<String> = keys
        .list_tenants()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(tenants, ["Acme", "acme", "globex"]);

    let missing = keys
        .create_key(&new_key("000000000000", "nobody", None))
        .await
        .expect_err("unknown tenant");
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");

    let first = new_key("aaaaaaaaaaaa", "acme", Some("ci"));
    let second = new_key("bbbbbbbbbbbb", "acme", None);
    let other = new_key("cccccccccccc", "globex", None);
    for k in [&first, &second, &other] {
        keys.create_key(k).await.expect("create key");
    }
    assert!(keys.create_key(&first).await.is_err(), "key ids are unique");

    let all = keys.list_keys(None).await.expect("list all");
    assert_eq!(all.len(), 3);
    let acme = keys.list_keys(Some("acme")).await.expect("list acme");
    let ids: Vec<&str> = acme.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]);
    assert_eq!(acme[0].name.as_deref(), Some("ci"));
    assert_eq!(acme[0].created_at, first.created_at);
    assert_eq!(acme[0].revoked_at, None);

    let active = keys
        .find_active_key("aaaaaaaaaaaa")
        .await
        .expect("find")
        .expect("active");
    assert_eq!(active.tenant_id, "acme");
    assert_eq!(active.secret_sha256, first.secret_sha256);
    assert_eq!(
        keys.find_active_key("AAAAAAAAAAAA").await.expect("find"),
        None
    );
    assert_eq!(
        keys.find_active_key("dddddddddddd").await.expect("find"),
        None
    );

    let revoked_at = fluxgate::now();
    assert!(
        keys.revoke_key("aaaaaaaaaaaa", revoked_at)
            .await
            .expect("revoke")
    );
    assert!(
        !keys
            .revoke_key("aaaaaaaaaaaa", fluxgate::now())
            .await
            .expect("again")
    );
    let unknown = keys
        .revoke_key("dddddddddddd", revoked_at)
        .await
        .expect_err("unknown key");
    assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");
    assert_eq!(
        keys.find_active_key("aaaaaaaaaaaa").await.expect("find"),
        None
    );
    assert!(
        keys.find_active_key("bbbbbbbbbbbb")
            .await
            .expect("find")
            .is_some()
    );
    let listed = keys.list_keys(Some("acme")).await.expect("list");
    assert_eq!(
        listed[0].revoked_at,
        Some(revoked_at),
        "the first revocation time stays"
    );
    assert_eq!(listed[1].revoked_at, None);
}

/// The row of a new key holds its hash and nothing from which the key could be read back.
pub async fn a_key_is_stored_only_as_its_hash(db: &TestDb) {
    let keys: &dyn ApiKeys = db.store.as_ref();
    keys.create_tenant("acme", fluxgate::now())
        .await
        .expect("tenant");
    let issued = key::generate("acme", Some("ci"), fluxgate::now()).expect("random source");
    keys.create_key(&issued.record).await.expect("create");
    let full = issued.expose();
    let secret = &full[full.len() - 43..];

    // Every column of the row as text, read past the store.
    let row: String = match db.kind {
        DbKind::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.expect("connect");
            sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
                .fetch_one(&mut conn)
                .await
                .expect("row")
        }
        DbKind::MariaDb => {
            let url = db.url.replacen("mariadb://", "mysql://", 1);
            let mut conn = MySqlConnection::connect(&url).await.expect("connect");
            // Binary casts: the columns have different collations, which CONCAT_WS refuses.
            let bytes: Vec<u8> = sqlx::query_scalar(
                "SELECT CONCAT_WS('|', CAST(key_id AS BINARY), CAST(tenant_id AS BINARY), \
                 CAST(name AS BINARY), CAST(secret_sha256 AS BINARY), \
                 CAST(created_at AS BINARY), CAST(COALESCE(revoked_at, '') AS BINARY)) \
                 FROM api_keys",
            )
            .fetch_one(&mut conn)
            .await
            .expect("row");
            String::from_utf8(bytes).expect("utf-8 row")
        }
        DbKind::Sqlite => {
            let mut conn = SqliteConnection::connect(&db.url).await.expect("connect");
            sqlx::query_scalar(
                "SELECT key_id || '|' || tenant_id || '|' || name || '|' || secret_sha256 \
                 || '|' || created_at || '|' || COALESCE(revoked_at, '') FROM api_keys",
            )
            .fetch_one(&mut conn)
            .await
            .expect("row")
        }
    };
    assert!(row.contains(&issued.record.key_id), "{row}");
    assert!(
        row.contains(&key::hash_hex(full)),
        "the hash is stored: {row}"
    );
    assert!(!row.contains(secret), "the secret is not: {row}");
    assert!(!row.contains(full), "nor the key: {row}");
}
