//! A JSON object kept in the client's own digits.
//!
//! serde_json's `Value` holds a number as an `i64`, `u64` or `f64`, so an integer beyond 64 bits
//! or a decimal with more than 15–17 significant digits comes out changed
//! (`123456789012345678901234567890` → `1.2345678901234568e29`). Its `arbitrary_precision`
//! feature would keep them, but a Cargo feature is one switch for the whole build: every crate
//! linked in (lambda_http's untagged request types among them) would then see numbers as maps
//! inside untagged enums and flattened structs, where serde cannot read them back (serde-rs/json
//! #505, #721, #1108). So payloads never become a `Value`: a [`JsonObject`] is the object's
//! text, made canonical once at ingest — keys sorted at every level, no insignificant
//! whitespace, strings re-escaped alike, numbers exactly as written — and carried as that text
//! through the database, the queue message and the warehouse row.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::FieldError;

/// A JSON object as canonical text (see the module documentation). Compares by that text.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct JsonObject(Box<RawValue>);

impl JsonObject {
    /// The canonical form of `raw`, which must be an object whose strings and keys hold no
    /// NUL character (PostgreSQL cannot store U+0000 in text or JSONB). `field` names the
    /// input in the error.
    pub fn canonical(raw: &str, field: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if !raw.starts_with('{') {
            return Err(FieldError::new(field, "must be a JSON object"));
        }
        let mut out = String::with_capacity(raw.len());
        write_canonical(raw, &mut out).map_err(|e| match e {
            Walk::Nul => FieldError::new(field, "must not contain the NUL character (\\u0000)"),
            Walk::Json(e) => FieldError::new(field, format!("is not valid JSON: {e}")),
        })?;
        RawValue::from_string(out)
            .map(Self)
            .map_err(|e| FieldError::new(field, format!("is not valid JSON: {e}")))
    }

    /// The canonical text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Length of the canonical text in bytes (what the payload limit counts).
    pub fn len(&self) -> usize {
        self.get().len()
    }

    pub fn is_empty(&self) -> bool {
        self.get() == "{}"
    }

    /// As a `Value`, for reading fields. Numbers beyond what `f64` holds come out rounded:
    /// for inspection only, never to store or forward.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }
}

impl From<Map<String, Value>> for JsonObject {
    fn from(map: Map<String, Value>) -> Self {
        let text = Value::Object(map).to_string();
        match Self::canonical(&text, "object") {
            Ok(object) => object,
            // Only a NUL character is refused in serialized JSON; keep that text as it is.
            Err(_) => Self(RawValue::from_string(text).unwrap_or_default()),
        }
    }
}

impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// Read back from the database or a queue message: made canonical again, so every database
/// answers in the same form (PostgreSQL's JSONB prints its own spacing and key order).
impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::canonical(raw.get(), "object").map_err(|e| D::Error::custom(e.to_string()))
    }
}

enum Walk {
    Nul,
    Json(serde_json::Error),
}

impl From<serde_json::Error> for Walk {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

/// Writes `raw` (one JSON value, valid or refused here) in canonical form. Each object or
/// array is read as raw members, so a number is never converted: its text is copied.
fn write_canonical(raw: &str, out: &mut String) -> Result<(), Walk> {
    match raw.as_bytes().first() {
        Some(b'{') => {
            // A BTreeMap sorts the keys; a repeated key keeps its last value, as serde_json's
            // map did before.
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(raw)?;
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out)?;
                out.push(':');
                write_canonical(value.get(), out)?;
            }
            out.push('}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(raw)?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item.get(), out)?;
            }
            out.push(']');
        }
        // Without a backslash a string is written as serde_json writes it already (it escapes
        // only quotes, backslashes and control characters, none of which can stand unescaped
        // in valid JSON), and it cannot hold a NUL: copied as it is.
        Some(b'"') if !raw.contains('\\') => out.push_str(raw),
        Some(b'"') => {
            let text: String = serde_json::from_str(raw)?;
            write_string(&text, out)?;
        }
        // A number, true, false or null: already checked by the parser that cut it out.
        _ => out.push_str(raw),
    }
    Ok(())
}

fn write_string(text: &str, out: &mut String) -> Result<(), Walk> {
    if text.contains('\0') {
        return Err(Walk::Nul);
    }
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(text)?);
    } else {
        // Nothing to escape: the common case, without an allocation.
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        JsonObject::canonical(text, "payload")
            .expect("canonical")
            .get()
            .to_owned()
    }

    #[test]
    fn numbers_keep_their_digits_and_keys_are_sorted() {
        assert_eq!(
            canonical(
                r#" { "b" : [ 1.0, -0, 1e2 ], "a": {"y": 123456789012345678901234567890, "x": 0.12345678901234567} } "#
            ),
            r#"{"a":{"x":0.12345678901234567,"y":123456789012345678901234567890},"b":[1.0,-0,1e2]}"#
        );
    }

    #[test]
    fn strings_are_written_alike_whatever_their_escapes() {
        assert_eq!(
            canonical(r#"{"\u0061":"\u00e9\/\n"}"#),
            canonical(r#"{"a":"é/\n"}"#)
        );
        // A control character may only stand escaped, and stays escaped.
        assert!(JsonObject::canonical("{\"k\":\"a\tb\"}", "payload").is_err());
        assert_eq!(
            canonical(r#"{"k":"a\tb","q\"":1}"#),
            r#"{"k":"a\tb","q\"":1}"#
        );
        // A repeated key keeps its last value.
        assert_eq!(canonical(r#"{"k":1,"k":2}"#), r#"{"k":2}"#);
    }

    #[test]
    fn the_canonical_form_is_its_own_canonical_form() {
        let once = canonical(r#"{"z": {"b": [true, null, "x"], "a": 1.50}, "m": -1E-7}"#);
        assert_eq!(canonical(&once), once);
    }

    #[test]
    fn only_objects_without_nul_are_taken() {
        for (text, detail) in [
            ("[1]", "must be a JSON object"),
            ("1", "must be a JSON object"),
            (r#"{"k":"a\u0000b"}"#, "NUL"),
            (r#"{"a\u0000":1}"#, "NUL"),
            (r#"{"k":[{"x":"\u0000"}]}"#, "NUL"),
        ] {
            let err = JsonObject::canonical(text, "payload").expect_err(text);
            assert_eq!(err.field, "payload");
            assert!(err.detail.contains(detail), "{text}: {err:?}");
        }
    }

    #[test]
    fn read_back_from_any_database_form_it_is_canonical() {
        // PostgreSQL's JSONB prints keys shortest first, with spaces.
        let from_jsonb: JsonObject =
            serde_json::from_str(r#"{"b": 1, "aa": [1, 2]}"#).expect("object");
        assert_eq!(from_jsonb.get(), r#"{"aa":[1,2],"b":1}"#);
        assert!(serde_json::from_str::<JsonObject>("[1]").is_err());
        let map: Map<String, Value> = serde_json::from_str(r#"{"b":1,"a":"x"}"#).expect("map");
        assert_eq!(JsonObject::from(map).get(), r#"{"a":"x","b":1}"#);
    }
}
