//! Secrets from AWS Secrets Manager: the database URL (`FLUXGATE_DATABASE_SECRET_ID`) and any
//! other secret string a function needs at start-up (the BigQuery service-account key). The
//! client is the cargo feature `secrets-manager` (the functions' `aws` builds); without it a
//! secret id in the settings stops the start with an error that says so.
//!
//! A secret is fetched once per cold start, by the function's `main`, and kept in a
//! [`SecretString`], whose `Debug` and `Display` never show the value. Logs and errors name the
//! secret's id, never its content.

use std::fmt;
use std::future::Future;

#[cfg(feature = "secrets-manager")]
use aws_sdk_secretsmanager::Client;
#[cfg(feature = "secrets-manager")]
use aws_sdk_secretsmanager::error::SdkError;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::DatabaseConfig;

/// A secret value. Read it with [`SecretString::expose`] where it is used, and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Secrets Manager client. Build one per cold start and fetch what the process needs.
#[cfg(feature = "secrets-manager")]
#[derive(Clone, Debug)]
pub struct SecretsManager {
    client: Client,
}

#[cfg(feature = "secrets-manager")]
impl SecretsManager {
    /// A client on the caller's SDK configuration (tests give one pointed at moto).
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(sdk),
        }
    }

    /// A client from the SDK's standard configuration: region, credentials and
    /// `AWS_ENDPOINT_URL` from the environment.
    pub async fn from_env() -> Self {
        let sdk = crate::aws::load_config().await;
        Self::new(&sdk)
    }

    /// The current string value of the secret `secret_id` (a name or an ARN).
    pub async fn secret_string(&self, secret_id: &str) -> Result<SecretString> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|err| {
                let not_found = matches!(
                    &err,
                    SdkError::ServiceError(service) if service.err().is_resource_not_found_exception()
                );
                if not_found {
                    Error::dependency(format!(
                        "secret {secret_id:?} does not exist in Secrets Manager (or this role may not read it)"
                    ))
                } else {
                    Error::dependency_caused(
                        format!("reading secret {secret_id:?} from Secrets Manager"),
                        err,
                    )
                }
            })?;
        match output.secret_string {
            Some(value) => {
                tracing::info!(secret_id, "read secret from Secrets Manager");
                Ok(SecretString(value))
            }
            None => Err(Error::dependency(format!(
                "secret {secret_id:?} holds binary data; fluxgate reads secret strings"
            ))),
        }
    }
}

/// One secret string, fetched with a client from the SDK's standard configuration. For a
/// setting such as `FLUXGATE_BIGQUERY_CREDENTIALS_SECRET_ID` (`setting`, named in the error of
/// a build without Secrets Manager), read once at start-up.
pub async fn fetch_secret_string(setting: &'static str, secret_id: &str) -> Result<SecretString> {
    #[cfg(feature = "secrets-manager")]
    {
        let _ = setting;
        SecretsManager::from_env()
            .await
            .secret_string(secret_id)
            .await
    }
    #[cfg(not(feature = "secrets-manager"))]
    {
        let _ = secret_id;
        Err(Error::not_built(
            setting,
            "the AWS Secrets Manager client",
            "aws",
        ))
    }
}

/// The database URL a function connects with: from the secret `FLUXGATE_DATABASE_SECRET_ID`
/// when it is set (it wins over `DATABASE_URL`), else `DATABASE_URL`. The functions' `main`s
/// call this once.
pub async fn database_url(config: &DatabaseConfig) -> Result<SecretString> {
    database_url_from(config, |id| {
        fetch_secret_string("FLUXGATE_DATABASE_SECRET_ID", id)
    })
    .await
}

/// [`database_url`] with the caller's client.
#[cfg(feature = "secrets-manager")]
pub async fn database_url_with(
    secrets: &SecretsManager,
    config: &DatabaseConfig,
) -> Result<SecretString> {
    database_url_from(config, |id| secrets.secret_string(id)).await
}

/// [`database_url`], the secret's string read by `fetch`: one rule for the functions (a client
/// from the environment) and for the tests (a client pointed at moto).
async fn database_url_from<'a, F, Fetched>(
    config: &'a DatabaseConfig,
    fetch: F,
) -> Result<SecretString>
where
    F: FnOnce(&'a str) -> Fetched,
    Fetched: Future<Output = Result<SecretString>>,
{
    let url = match secret_id(config) {
        Some(id) => database_url_from_secret(id, &fetch(id).await?)?,
        None => SecretString::new(config.required_url()?),
    };
    with_host_override(url, config.database_host.as_deref())
}

/// `url` with its host replaced by `host` (`FLUXGATE_DATABASE_HOST`), when one is given.
pub fn with_host_override(url: SecretString, host: Option<&str>) -> Result<SecretString> {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(url);
    };
    // Errors never show the URL: it may hold a password.
    let mut parsed = url::Url::parse(url.expose())
        .map_err(|e| Error::setting_caused("DATABASE_URL", "cannot be read as a URL", e))?;
    if parsed.scheme().starts_with("sqlite") {
        return Err(Error::setting(
            "FLUXGATE_DATABASE_HOST",
            "does not apply to SQLite",
        ));
    }
    parsed.set_host(Some(host)).map_err(|e| {
        Error::setting_caused("FLUXGATE_DATABASE_HOST", format!("{host:?} is no host"), e)
    })?;
    Ok(SecretString::new(parsed.as_str()))
}

/// The setting a database secret's errors name: the secret is wrong, or the wrong one.
const SECRET_SETTING: &str = "FLUXGATE_DATABASE_SECRET_ID";

fn secret_id(config: &DatabaseConfig) -> Option<&str> {
    config
        .database_secret_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// Characters kept as they are in the user, password and database name of a URL: the
/// unreserved ones of RFC 3986. Everything else (`@`, `:`, `/`, `%`, `#`, `?`, spaces, …) is
/// percent-encoded, so any password survives the trip through the URL.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Reads a database secret: either a URL (`postgres://…`, `mysql://…`, `mariadb://…`,
/// `sqlite:…`), or the JSON object RDS and its rotation functions keep:
/// `{"username", "password", "host", "port"?, "dbname"?, "engine"?}`.
///
/// `engine` picks the scheme: `postgres` (the default; also `postgresql`,
/// `aurora-postgresql`), `mysql` (also `aurora-mysql`, `aurora`) or `mariadb`. `port`
/// defaults to the engine's (5432 or 3306) and may be a number or a string. Without `dbname`
/// the URL has no database and the driver's default applies. Errors name the secret and the
/// field, never a value.
pub fn database_url_from_secret(secret_id: &str, value: &SecretString) -> Result<SecretString> {
    let text = value.expose().trim();
    if !text.starts_with('{') {
        if text.contains("://") || text.starts_with("sqlite:") {
            return Ok(SecretString::new(text));
        }
        return Err(Error::setting(
            SECRET_SETTING,
            format!("secret {secret_id:?} is neither a database URL nor an RDS-style JSON object"),
        ));
    }
    let fields: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        // serde_json's syntax errors give a position, not the text around it.
        Error::setting(
            SECRET_SETTING,
            format!(
                "secret {secret_id:?} is not a valid JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let field = |name: &str| -> Result<Option<String>> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if name == "port" => Ok(Some(n.to_string())),
            Some(_) => Err(Error::setting(
                SECRET_SETTING,
                format!("secret {secret_id:?}: field {name:?} must be a string"),
            )),
        }
    };
    let required = |name: &str| -> Result<String> {
        field(name)?.ok_or_else(|| {
            Error::setting(
                SECRET_SETTING,
                format!(
                    "secret {secret_id:?} has no {name:?} (an RDS-style secret needs username, password and host)"
                ),
            )
        })
    };
    let username = required("username")?;
    let password = required("password")?;
    let host = required("host")?;
    let engine = field("engine")?.unwrap_or_else(|| "postgres".to_owned());
    let (scheme, default_port) = match engine.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" | "aurora-postgresql" => ("postgres", 5432),
        "mysql" | "aurora-mysql" | "aurora" => ("mysql", 3306),
        "mariadb" => ("mariadb", 3306),
        _ => {
            return Err(Error::setting(
                SECRET_SETTING,
                format!(
                    "secret {secret_id:?}: engine {engine:?} is not supported (postgres, mysql or mariadb)"
                ),
            ));
        }
    };
    let port = match field("port")? {
        None => default_port,
        Some(port) => port.trim().parse::<u16>().map_err(|_| {
            Error::setting(
                SECRET_SETTING,
                format!("secret {secret_id:?}: field \"port\" is not a port number"),
            )
        })?,
    };
    let database = field("dbname")?
        .map(|name| format!("/{}", utf8_percent_encode(&name, URL_COMPONENT)))
        .unwrap_or_default();
    // An IPv6 address goes in brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(SecretString::new(format!(
        "{scheme}://{}:{}@{host}:{port}{database}",
        utf8_percent_encode(&username, URL_COMPONENT),
        utf8_percent_encode(&password, URL_COMPONENT),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(json: &str) -> Result<String> {
        database_url_from_secret("db", &SecretString::new(json)).map(|s| s.expose().to_owned())
    }

    #[test]
    fn a_secret_never_shows_its_value() {
        let secret = SecretString::new("postgres://u:hunter2@h/db");
        assert_eq!(format!("{secret:?}"), "SecretString(***)");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "postgres://u:hunter2@h/db");
    }

    #[test]
    fn a_plain_url_is_taken_as_it_is() {
        assert_eq!(
            url("  postgres://u:p@h:5432/db\n").expect("url"),
            "postgres://u:p@h:5432/db"
        );
        assert_eq!(
            url("sqlite:///tmp/x.db").expect("url"),
            "sqlite:///tmp/x.db"
        );
        let err = url("hunter2").expect_err("neither").to_string();
        assert!(err.contains("neither a database URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn an_rds_secret_becomes_a_url_with_encoded_credentials() {
        let built = url(
            r#"{"username":"app user","password":"p@ss:w/rd%#?","host":"db.example","port":5433,"dbname":"events","engine":"postgres"}"#,
        )
        .expect("url");
        assert_eq!(
            built,
            "postgres://app%20user:p%40ss%3Aw%2Frd%25%23%3F@db.example:5433/events"
        );
        assert_eq!(
            url(r#"{"username":"u","password":"p","host":"h","engine":"mysql","port":"3307"}"#)
                .expect("url"),
            "mysql://u:p@h:3307"
        );
        assert_eq!(
            url(r#"{"username":"u","password":"p","host":"h","engine":"mariadb","dbname":"d"}"#)
                .expect("url"),
            "mariadb://u:p@h:3306/d"
        );
        assert_eq!(
            url(r#"{"username":"u","password":"p","host":"h"}"#).expect("url"),
            "postgres://u:p@h:5432",
            "postgres when the engine is not named"
        );
    }

    #[test]
    fn a_broken_rds_secret_is_named_without_its_values() {
        let err = url(r#"{"username":"u","host":"h"}"#)
            .expect_err("no password")
            .to_string();
        assert!(err.contains("\"password\""), "{err}");
        let err = url(r#"{"username":"u","password":12345,"host":"h"}"#)
            .expect_err("numeric password")
            .to_string();
        assert!(
            err.contains("must be a string") && !err.contains("12345"),
            "{err}"
        );
        let err = url(r#"{"username":"u","password":"p","host":"h","engine":"oracle-ee"}"#)
            .expect_err("engine")
            .to_string();
        assert!(err.contains("not supported"), "{err}");
        let err = url(r#"{"username":"u","password":"secretpw","host":"h","port":"x"}"#)
            .expect_err("port")
            .to_string();
        assert!(err.contains("port") && !err.contains("secretpw"), "{err}");
        let err = url(r#"{"username":"u","password":"secretpw""#)
            .expect_err("json")
            .to_string();
        assert!(
            err.contains("not a valid JSON") && !err.contains("secretpw"),
            "{err}"
        );
    }

    #[test]
    fn a_host_override_replaces_only_the_host() {
        let url =
            SecretString::new("postgres://app:p%40ss@db.internal:5432/events?sslmode=require");
        let proxied = with_host_override(url.clone(), Some("proxy.example.rds.amazonaws.com"))
            .expect("override");
        assert_eq!(
            proxied.expose(),
            "postgres://app:p%40ss@proxy.example.rds.amazonaws.com:5432/events?sslmode=require"
        );
        assert_eq!(
            with_host_override(url.clone(), None)
                .expect("none")
                .expose(),
            url.expose()
        );
        assert_eq!(
            with_host_override(url, Some("  ")).expect("blank").expose(),
            "postgres://app:p%40ss@db.internal:5432/events?sslmode=require"
        );
        assert!(with_host_override(SecretString::new("sqlite://x.db"), Some("h")).is_err());
    }
}
