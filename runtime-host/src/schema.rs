//! JSON <-> postcard conversion through a function's declared schema
//! (postcard-schema, converted by postcard-dyn).

use postcard_schema::schema::owned::OwnedNamedType;
use serde_json::Value;

use crate::error::{Error, Result};

/// Check that `bytes` is exactly one postcard value of type `schema`.
pub fn check_postcard(schema: &OwnedNamedType, bytes: &[u8]) -> Result<()> {
    postcard_to_json(schema, bytes).map(|_| ())
}

/// Decode postcard `bytes` of type `schema` into JSON.
pub fn postcard_to_json(schema: &OwnedNamedType, bytes: &[u8]) -> Result<Value> {
    let value = postcard_dyn::from_slice_dyn(schema, bytes).map_err(|e| {
        Error::BadInput(format!("bytes are not a postcard `{schema}` ({e:?})"))
    })?;
    // postcard-dyn ignores what follows the value; re-encoding tells its length.
    let used = postcard_dyn::to_stdvec_dyn(schema, &value)
        .map_err(|e| Error::BadInput(format!("bytes are not a postcard `{schema}` ({e:?})")))?
        .len();
    if used != bytes.len() {
        return Err(Error::BadInput(format!(
            "{} trailing bytes after a postcard `{schema}`",
            bytes.len().saturating_sub(used)
        )));
    }
    Ok(value)
}

/// Encode a JSON value as postcard of type `schema`.
///
/// Conventions (serde's JSON mapping): structs are objects, tuples and
/// sequences arrays, `Option` is `null` or the value, unit enum variants are
/// strings, other variants `{"Variant": value}`.
pub fn json_to_postcard(schema: &OwnedNamedType, value: &Value) -> Result<Vec<u8>> {
    postcard_dyn::to_stdvec_dyn(schema, value)
        .map_err(|e| Error::BadInput(format!("JSON {value} does not fit the input type `{schema}` ({e:?})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postcard_schema::Schema;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
    struct Visit {
        name: String,
        count: Option<u32>,
    }

    fn schema() -> OwnedNamedType {
        Visit::SCHEMA.into()
    }

    #[test]
    fn json_round_trips_through_postcard() {
        let json = serde_json::json!({"name": "ada", "count": 3});
        let bytes = json_to_postcard(&schema(), &json).unwrap();
        let typed: Visit = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(typed, Visit { name: "ada".into(), count: Some(3) });
        assert_eq!(postcard_to_json(&schema(), &bytes).unwrap(), json);
    }

    #[test]
    fn mismatches_are_bad_input() {
        let e = json_to_postcard(&schema(), &serde_json::json!({"nom": 1})).unwrap_err();
        assert!(matches!(e, Error::BadInput(_)), "{e}");
        assert!(matches!(check_postcard(&schema(), &[0xff, 0xff]), Err(Error::BadInput(_))));
        let mut ok = postcard::to_allocvec(&Visit { name: "x".into(), count: None }).unwrap();
        check_postcard(&schema(), &ok).unwrap();
        ok.push(7);
        let e = check_postcard(&schema(), &ok).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }
}
