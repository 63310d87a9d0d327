//! JSON request bodies, parsed strictly. serde_json keeps the last of
//! repeated keys; a body like `{"plan":"free","plan":"pro"}` means
//! different things to different parsers (first wins, last wins, error), so
//! the admin API refuses it — at any depth — naming the key and the JSON
//! pointer of the object that repeats it (see `docs/http-api.md`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonBodyError {
    /// Not JSON at all (or nested deeper than serde_json allows).
    #[error("the body is not valid JSON: {0}")]
    Invalid(serde_json::Error),
    /// Valid JSON that repeats a key within one object.
    #[error("{0}")]
    DuplicateKey(serde_json::Error),
}

/// Parses `bytes` as one JSON value, refusing any object that repeats a key.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonBodyError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { pointer: "" }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| match error.classify() {
            // The only data error a `Value` can meet is the duplicate.
            serde_json::error::Category::Data => JsonBodyError::DuplicateKey(error),
            _ => JsonBodyError::Invalid(error),
        })?;
    Ok(value)
}

/// Builds a [`Value`] like serde_json does, knowing where it is.
struct Strict<'p> {
    /// JSON pointer (RFC 6901) of the value being read; "" is the root.
    pointer: &'p str,
}

fn child_pointer(parent: &str, token: &str) -> String {
    format!("{parent}/{}", token.replace('~', "~0").replace('/', "~1"))
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON numbers are finite, so this is never `Null` in practice.
        Ok(value.into())
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let pointer = child_pointer(self.pointer, &items.len().to_string());
            match seq.next_element_seed(Strict { pointer: &pointer })? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let at = if self.pointer.is_empty() {
                    "the top-level object".to_owned()
                } else {
                    format!("the object at `{}`", self.pointer)
                };
                return Err(de::Error::custom(format!("duplicate key `{key}` in {at}")));
            }
            let pointer = child_pointer(self.pointer, &key);
            let value = map.next_value_seed(Strict { pointer: &pointer })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(text: &str) -> String {
        match parse(text.as_bytes()) {
            Err(JsonBodyError::DuplicateKey(error)) => error.to_string(),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn parses_what_serde_json_parses() {
        for text in [
            r#"{"plan":"pro","suspended":false,"n":-3,"f":1.5,"big":18446744073709551615}"#,
            r#"[1,{"a":null},[],{}]"#,
            r#""text""#,
            "true",
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
        ] {
            let strict = parse(text.as_bytes()).expect(text);
            let loose: Value = serde_json::from_str(text).unwrap();
            assert_eq!(strict, loose, "{text}");
        }
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth_with_its_place() {
        assert!(refused(r#"{"plan":"free","plan":"pro"}"#)
            .starts_with("duplicate key `plan` in the top-level object"));
        assert!(refused(r#"{"meta":{"a":1,"a":2}}"#)
            .starts_with("duplicate key `a` in the object at `/meta`"));
        assert!(refused(r#"{"x":[{"k":1},{"k":1,"k":2}]}"#)
            .starts_with("duplicate key `k` in the object at `/x/1`"));
        assert!(refused(r#"{"a/b":{"c":1,"c":1}}"#).contains("at `/a~1b`"));
        // The same key spelled with an escape is the same key.
        assert!(refused(r#"{"plan":"free","pl\u0061n":"pro"}"#).contains("`plan`"));
    }

    #[test]
    fn invalid_json_is_not_a_duplicate() {
        for text in ["", "{", r#"{"a":1,}"#, r#"{"a":1} {"a":2}"#, "[1,2"] {
            assert!(
                matches!(parse(text.as_bytes()), Err(JsonBodyError::Invalid(_))),
                "{text}"
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(JsonBodyError::Invalid(_))
        ));
        assert_eq!(parse(b" {} ").unwrap(), json!({}));
    }
}
