//! Query-string parameters read one by one, so that a bad value is a problem+json naming the
//! parameter (axum's `Query` rejection is plain text and does not say which one).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    /// Parses `a=1&b=x%20y`, refusing parameters not in `known` and repeated ones (an unknown
    /// parameter is usually a typo that would otherwise be silently ignored).
    pub fn parse(raw: Option<&str>, known: &[&str]) -> Result<Self> {
        let mut params = HashMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name, "query")?;
            let value = decode(value, &name)?;
            if !known.contains(&name.as_str()) {
                return Err(Error::invalid(
                    name,
                    format!(
                        "is not a parameter of this endpoint (known: {})",
                        known.join(", ")
                    ),
                ));
            }
            if params.insert(name.clone(), value).is_some() {
                return Err(Error::invalid(name, "is given more than once"));
            }
        }
        Ok(Self(params))
    }

    /// A non-empty text value.
    pub fn text(&self, name: &str) -> Result<Option<String>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(Error::invalid(name, "must not be empty")),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    /// An RFC 3339 timestamp such as `2024-01-15T10:30:00Z`, or one without an offset
    /// (`2024-01-15T10:30:00`), which is UTC.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        self.0
            .get(name)
            .map(|v| {
                crate::parse_time(v).ok_or_else(|| {
                    Error::invalid(
                        name,
                        "must be an RFC 3339 timestamp such as 2024-01-15T10:30:00Z (no offset means UTC)",
                    )
                })
            })
            .transpose()
    }

    /// A whole number in `min..=max`, or `default` when absent.
    pub fn number(&self, name: &str, min: u64, max: u64, default: u64) -> Result<u64> {
        let Some(v) = self.0.get(name) else {
            return Ok(default);
        };
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Error::invalid(
                name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    /// A duration such as `15m` or `1h`, in `min..=max`, or `default` when absent.
    pub fn duration(
        &self,
        name: &str,
        min: TimeDelta,
        max: TimeDelta,
        default: TimeDelta,
    ) -> Result<TimeDelta> {
        let Some(v) = self.0.get(name) else {
            return Ok(default);
        };
        match crate::config::parse_duration(v) {
            Ok(d) if d >= min && d <= max => Ok(d),
            _ => Err(Error::invalid(
                name,
                format!(
                    "must be a duration such as 15m or 1h, from {}s to {}s",
                    min.num_seconds(),
                    max.num_seconds()
                ),
            )),
        }
    }
}

/// `from` must come before `to` when both are given.
pub fn check_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<()> {
    match (from, to) {
        (Some(from), Some(to)) if from >= to => Err(Error::invalid("to", "must be after from")),
        _ => Ok(()),
    }
}

fn decode(text: &str, field: &str) -> Result<String> {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| Error::malformed(field, "is not valid UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_bad_ones_name_their_parameter() {
        let q = QueryParams::parse(
            Some("tenantId=a%20b&page=2&from=2024-01-01T00:00:00Z"),
            &["tenantId", "page", "from"],
        )
        .expect("parses");
        assert_eq!(q.text("tenantId").expect("text"), Some("a b".into()));
        assert_eq!(q.number("page", 1, 10, 1).expect("page"), 2);
        assert!(q.time("from").expect("time").is_some());
        let naive =
            QueryParams::parse(Some("from=2024-01-08T00:00:00"), &["from"]).expect("parses");
        assert_eq!(
            naive.time("from").expect("naive is UTC"),
            Some("2024-01-08T00:00:00Z".parse().expect("ts"))
        );
        let bad = QueryParams::parse(Some("from=last%20week"), &["from"]).expect("parses");
        assert_eq!(bad.time("from").expect_err("bad").field(), Some("from"));

        let q = QueryParams::parse(Some("page=zero"), &["page"]).expect("parses");
        assert_eq!(
            q.number("page", 1, 10, 1).expect_err("bad").field(),
            Some("page")
        );
        let unknown = QueryParams::parse(Some("tenant=x"), &["tenantId"]).expect_err("unknown");
        assert_eq!(unknown.field(), Some("tenant"));
        let twice = QueryParams::parse(Some("page=1&page=2"), &["page"]).expect_err("twice");
        assert_eq!(twice.field(), Some("page"));
        assert_eq!(check_range(q.time("x").expect("none"), None).ok(), Some(()));
    }
}
