//! JSON <-> postcard conversion through a function's declared schema
//! (postcard-schema, converted by postcard-dyn).

use postcard_schema::schema::owned::OwnedNamedType;
use serde_json::Value;

use crate::error::{Error, Result};

/// Decode the `what` (input or output) schema a component's `describe()`
/// returned: one postcard `OwnedNamedType` with no trailing bytes.
pub fn decode_schema(bytes: &[u8], what: &str) -> Result<OwnedNamedType> {
    let unreadable = |why: String| Error::WrongWorld(format!("describe() returned an unreadable {what} schema: {why}"));
    let (schema, rest) = postcard::take_from_bytes::<OwnedNamedType>(bytes).map_err(|e| unreadable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(unreadable(format!("{} trailing bytes", rest.len())));
    }
    Ok(schema)
}

/// Check that `bytes` is exactly one postcard value of type `schema`,
/// without building the value: a walk over the schema that consumes the
/// bytes as postcard 1.x would (varints, zigzag, lengths, UTF-8, enum
/// discriminants). Trailing bytes are an error.
pub fn check_postcard(schema: &OwnedNamedType, bytes: &[u8]) -> Result<()> {
    let mut cursor = Cursor { bytes, at: 0 };
    cursor
        .value(schema)
        .map_err(|why| Error::BadInput(format!("bytes are not a postcard `{schema}`: at byte {}: {why}", cursor.at)))?;
    if cursor.at != bytes.len() {
        return Err(Error::BadInput(format!("{} trailing bytes after a postcard `{schema}`", bytes.len() - cursor.at)));
    }
    Ok(())
}

/// Elements a sequence of zero-sized items may claim (they cost no bytes,
/// so the input length cannot bound them).
const MAX_ZERO_SIZED_ITEMS: u64 = 1 << 20;

/// Reads postcard's primitives (bytes, varints, lengths) from a buffer;
/// shared by the check walk and the JSON text writer.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or("unexpected end of input")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// A LEB128 varint of at most `bits` bits.
    fn varint(&mut self, bits: u32) -> std::result::Result<u128, String> {
        let max_bytes = bits.div_ceil(7);
        let mut value: u128 = 0;
        for i in 0..max_bytes {
            let b = self.take(1)?[0];
            value |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if bits < 128 && value >> bits != 0 {
                    return Err(format!("varint overflows {bits} bits"));
                }
                return Ok(value);
            }
        }
        Err(format!("varint longer than {max_bytes} bytes"))
    }

    fn len(&mut self) -> std::result::Result<u64, String> {
        u64::try_from(self.varint(64)?).map_err(|_| "length overflows".to_string())
    }

    fn value(&mut self, t: &OwnedNamedType) -> std::result::Result<(), String> {
        use postcard_schema::schema::owned::{OwnedDataModelType as T, OwnedDataModelVariant as V};
        match &t.ty {
            T::Unit | T::UnitStruct => Ok(()),
            T::Bool => match self.take(1)?[0] {
                0 | 1 => Ok(()),
                b => Err(format!("{b} is not a bool")),
            },
            T::I8 | T::U8 => self.take(1).map(|_| ()),
            T::U16 | T::I16 => self.varint(16).map(|_| ()),
            T::U32 | T::I32 => self.varint(32).map(|_| ()),
            T::U64 | T::I64 | T::Usize | T::Isize => self.varint(64).map(|_| ()),
            T::U128 | T::I128 => self.varint(128).map(|_| ()),
            T::F32 => self.take(4).map(|_| ()),
            T::F64 => self.take(8).map(|_| ()),
            T::Char => {
                let n = self.len()?;
                let bytes = self.take(usize::try_from(n).map_err(|_| "length overflows")?)?;
                let s = std::str::from_utf8(bytes).map_err(|e| format!("char is not UTF-8: {e}"))?;
                if s.chars().count() == 1 { Ok(()) } else { Err("char is not exactly one character".into()) }
            }
            T::String => {
                let n = self.len()?;
                let bytes = self.take(usize::try_from(n).map_err(|_| "length overflows")?)?;
                std::str::from_utf8(bytes).map(|_| ()).map_err(|e| format!("string is not UTF-8: {e}"))
            }
            T::ByteArray => {
                let n = self.len()?;
                self.take(usize::try_from(n).map_err(|_| "length overflows")?).map(|_| ())
            }
            T::Option(inner) => match self.take(1)?[0] {
                0 => Ok(()),
                1 => self.value(inner),
                b => Err(format!("{b} is not an option tag")),
            },
            T::NewtypeStruct(inner) => self.value(inner),
            T::Seq(item) => {
                let n = self.len()?;
                let n = self.count(n)?;
                // Items of one fixed width (bytes, floats, tuples of them)
                // are checked in one step: a 1 MB `Vec<u8>` walked byte by
                // byte took ~5 ms, on every step of a workflow.
                if let Some(width) = fixed_width(item) {
                    let total = n.checked_mul(width as u64).ok_or("length overflows")?;
                    return self.take(usize::try_from(total).map_err(|_| "length overflows")?).map(|_| ());
                }
                if matches!(item.ty, T::Bool) {
                    let start = self.at;
                    let bytes = self.take(usize::try_from(n).map_err(|_| "length overflows")?)?;
                    return match bytes.iter().position(|b| *b > 1) {
                        Some(i) => {
                            self.at = start + i;
                            Err(format!("{} is not a bool", bytes[i]))
                        }
                        None => Ok(()),
                    };
                }
                (0..n).try_for_each(|_| self.value(item))
            }
            T::Map { key, val } => {
                let n = self.len()?;
                let n = self.count(n)?;
                (0..n).try_for_each(|_| self.value(key).and_then(|()| self.value(val)))
            }
            T::Tuple(items) | T::TupleStruct(items) => items.iter().try_for_each(|i| self.value(i)),
            T::Struct(fields) => fields.iter().try_for_each(|f| self.value(&f.ty)),
            T::Enum(variants) => {
                let d = self.varint(32)?;
                let v = usize::try_from(d)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or_else(|| format!("variant {d} does not exist (the enum has {})", variants.len()))?;
                match &v.ty {
                    V::UnitVariant => Ok(()),
                    V::NewtypeVariant(inner) => self.value(inner),
                    V::TupleVariant(items) => items.iter().try_for_each(|i| self.value(i)),
                    V::StructVariant(fields) => fields.iter().try_for_each(|f| self.value(&f.ty)),
                }
            }
            T::Schema => Err("schema-typed values are not supported as function input".into()),
        }
    }

    /// Bound an element count: each element of a sized type takes at least
    /// one byte, so more elements than bytes left is malformed.
    fn count(&self, n: u64) -> std::result::Result<u64, String> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left.max(MAX_ZERO_SIZED_ITEMS) {
            return Err(format!("a length of {n} with {left} bytes left"));
        }
        Ok(n)
    }
}

/// The encoded width of every value of `t` when it is one fixed width that
/// any bytes of it are valid for (integers of one byte, floats, and
/// tuples, structs and newtypes of those); `None` otherwise.
fn fixed_width(t: &OwnedNamedType) -> Option<usize> {
    use postcard_schema::schema::owned::OwnedDataModelType as T;
    match &t.ty {
        T::U8 | T::I8 => Some(1),
        T::F32 => Some(4),
        T::F64 => Some(8),
        T::Unit | T::UnitStruct => Some(0),
        T::NewtypeStruct(inner) => fixed_width(inner),
        T::Tuple(items) | T::TupleStruct(items) => items.iter().try_fold(0, |w, i| Some(w + fixed_width(i)?)),
        T::Struct(fields) => fields.iter().try_fold(0, |w, f| Some(w + fixed_width(&f.ty)?)),
        _ => None,
    }
}

/// The first type in `schema` the JSON conversion cannot handle: postcard-dyn
/// panics (`todo!()`) on `char` and on schema-typed values, so they are
/// refused before it is called. Found by the `describe_schema` fuzz target.
fn unconvertible(schema: &OwnedNamedType) -> Option<&'static str> {
    use postcard_schema::schema::owned::{OwnedDataModelType as T, OwnedDataModelVariant as V};
    let any = |items: &[OwnedNamedType]| items.iter().find_map(unconvertible);
    match &schema.ty {
        T::Char => Some("char"),
        T::Schema => Some("a schema"),
        T::Option(inner) | T::NewtypeStruct(inner) | T::Seq(inner) => unconvertible(inner),
        T::Map { key, val } => unconvertible(key).or_else(|| unconvertible(val)),
        T::Tuple(items) | T::TupleStruct(items) => any(items),
        T::Struct(fields) => fields.iter().find_map(|f| unconvertible(&f.ty)),
        T::Enum(variants) => variants.iter().find_map(|v| match &v.ty {
            V::UnitVariant => None,
            V::NewtypeVariant(inner) => unconvertible(inner),
            V::TupleVariant(items) => any(items),
            V::StructVariant(fields) => fields.iter().find_map(|f| unconvertible(&f.ty)),
        }),
        _ => None,
    }
}

fn check_convertible(schema: &OwnedNamedType) -> Result<()> {
    match unconvertible(schema) {
        Some(what) => Err(Error::BadInput(format!(
            "`{schema}` holds {what}, which has no JSON conversion here: send and receive postcard instead"
        ))),
        None => Ok(()),
    }
}

mod json_input;
mod json_text;
mod type_listing;

pub use type_listing::list_type;

/// JSON text of type `schema` as postcard, written while the JSON is parsed:
/// the same bytes as [`json_to_postcard`] of the parsed value, without a
/// `serde_json::Value` in between. What the host API takes its JSON input
/// with.
pub fn json_text_to_postcard(schema: &OwnedNamedType, text: &[u8]) -> Result<Vec<u8>> {
    use serde::de::DeserializeSeed as _;
    check_convertible(schema)?;
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut de = serde_json::Deserializer::from_slice(text);
    json_input::Encode { schema, out: &mut out }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| Error::BadInput(format!("JSON does not fit the input type `{schema}` ({e})")))?;
    Ok(out)
}

/// Postcard `bytes` of type `schema` as JSON text, written straight from
/// the bytes: the same JSON as [`postcard_to_json`], without a
/// `serde_json::Value` in between (which takes tens of times a byte array's
/// size). What the host API answers with.
pub fn postcard_to_json_text(schema: &OwnedNamedType, bytes: &[u8]) -> Result<Vec<u8>> {
    check_convertible(schema)?;
    check_postcard(schema, bytes)?;
    let mut text = json_text::JsonText::new(bytes);
    text.value(schema)
        .and_then(|()| text.finish())
        .map_err(|why| Error::BadInput(format!("postcard `{schema}` has no JSON form: {why}")))
}

/// Decode postcard `bytes` of type `schema` into JSON.
pub fn postcard_to_json(schema: &OwnedNamedType, bytes: &[u8]) -> Result<Value> {
    check_convertible(schema)?;
    // The walk bounds every length by the bytes there are, before
    // postcard-dyn sizes anything by them: a few bytes claiming a huge
    // sequence took 2 GiB (found by the `describe_schema` fuzz target).
    check_postcard(schema, bytes)?;
    let value = postcard_dyn::from_slice_dyn(schema, bytes)
        .map_err(|e| Error::BadInput(format!("bytes are not a postcard `{schema}` ({e:?})")))?;
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
    // One conversion for JSON values and JSON text, so both name the path
    // and what was expected when the JSON does not fit.
    check_convertible(schema)?;
    let text = serde_json::to_vec(value).map_err(|e| Error::BadInput(format!("JSON {value}: {e}")))?;
    match json_text_to_postcard(schema, &text) {
        Ok(bytes) => Ok(bytes),
        // The value path accepts a few shapes the text path does not (what
        // postcard-dyn itself writes for odd schemas); its errors say less.
        Err(e) => postcard_dyn::to_stdvec_dyn(schema, value).map_err(|_| e),
    }
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

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
    struct Pixel {
        heat: u8,
        at: f64,
    }

    /// Whether postcard's own decoder takes all of `bytes` as a `T`.
    fn decodes_whole<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> bool {
        postcard::take_from_bytes::<T>(bytes).is_ok_and(|(_, rest)| rest.is_empty())
    }

    /// Bytes that are often a valid encoding of a sequence, often not: a
    /// length, then items of a width of 1, 2, 4 or 9 bytes, then possibly
    /// a few more bytes, a cut, or a byte changed to 2 or 200.
    fn sequence_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            0u8..30,
            prop::sample::select(vec![1usize, 2, 4, 9]),
            0u8..4,
            proptest::collection::vec(0u8..4, 300),
            0usize..400,
            0u8..12,
        )
            .prop_map(|(len, width, extra, pool, cut, change)| {
                let n = usize::from(len) * width + usize::from(extra % 2);
                let mut bytes = vec![len];
                bytes.extend(pool.iter().cycle().take(n).copied());
                if cut < bytes.len() && change % 3 == 0 {
                    bytes.truncate(cut);
                }
                if change >= 10 && bytes.len() > 1 {
                    let i = 1 + cut % (bytes.len() - 1);
                    bytes[i] = if change == 10 { 2 } else { 200 };
                }
                bytes
            })
    }

    proptest::proptest! {
        /// The one-step check of fixed-width (and bool) sequences accepts
        /// exactly what postcard's decoder accepts.
        #[test]
        fn sequences_checked_in_one_step_agree_with_postcard(bytes in sequence_bytes()) {
            let check = |schema: OwnedNamedType| check_postcard(&schema, &bytes).is_ok();
            proptest::prop_assert_eq!(check(<Vec<u8>>::SCHEMA.into()), decodes_whole::<Vec<u8>>(&bytes));
            proptest::prop_assert_eq!(check(<Vec<i8>>::SCHEMA.into()), decodes_whole::<Vec<i8>>(&bytes));
            proptest::prop_assert_eq!(check(<Vec<f32>>::SCHEMA.into()), decodes_whole::<Vec<f32>>(&bytes));
            proptest::prop_assert_eq!(check(<Vec<(u8, i8)>>::SCHEMA.into()), decodes_whole::<Vec<(u8, i8)>>(&bytes));
            proptest::prop_assert_eq!(check(<Vec<Pixel>>::SCHEMA.into()), decodes_whole::<Vec<Pixel>>(&bytes));
            proptest::prop_assert_eq!(check(<Vec<bool>>::SCHEMA.into()), decodes_whole::<Vec<bool>>(&bytes));
            proptest::prop_assert_eq!(check(<Vec<u16>>::SCHEMA.into()), decodes_whole::<Vec<u16>>(&bytes));
        }
    }

    #[test]
    fn a_bad_bool_in_a_sequence_is_named_at_its_byte() {
        let e = check_postcard(&<Vec<bool>>::SCHEMA.into(), &[3, 1, 0, 7]).unwrap_err().to_string();
        assert!(e.contains("at byte 3: 7 is not a bool"), "{e}");
        let e = check_postcard(&<Vec<u8>>::SCHEMA.into(), &[3, 1, 0]).unwrap_err().to_string();
        assert!(e.contains("unexpected end of input"), "{e}");
    }

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq, Clone)]
    enum Figure {
        Dot,
        Circle(f64),
        Pair(i16, u8),
        Rect { w: u32, h: Option<u64> },
    }

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq, Clone)]
    struct Everything {
        flag: bool,
        small: i8,
        wide: i128,
        bytes: Vec<u8>,
        name: String,
        shapes: Vec<Figure>,
        table: std::collections::BTreeMap<String, (u16, i64)>,
        single: (f32,),
        unit: (),
        maybe: Option<Option<u8>>,
    }

    proptest::prop_compose! {
        /// Every kind of type the JSON paths handle. (`wide` stays within
        /// i64: beyond, postcard-dyn has no Number for the tree. `Some(None)`
        /// is left out: the tree path refuses it — its JSON, `null`,
        /// re-encodes as `None` — while the text path writes `null`.)
        fn everything()(
            flag: bool, small: i8, wide in (i128::from(i64::MIN))..=(i128::from(i64::MAX)),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            name in ".{0,12}",
            circles in proptest::collection::vec(-1e6f64..1e6, 0..3),
            w: u32, h: Option<u64>, a: i16, b: u8,
            table in proptest::collection::btree_map("[a-z\"\\\n]{0,5}", (proptest::prelude::any::<u16>(), proptest::prelude::any::<i64>()), 0..4),
            single in -1e3f32..1e3, maybe: Option<u8>,
        ) -> Everything {
            let mut shapes = vec![Figure::Dot, Figure::Pair(a, b), Figure::Rect { w, h }];
            shapes.extend(circles.into_iter().map(Figure::Circle));
            Everything { flag, small, wide, bytes, name, shapes, table, single: (single,), unit: (), maybe: maybe.map(Some) }
        }
    }

    proptest::proptest! {
        #[test]
        fn json_text_is_the_json_of_the_value_tree(
            value in everything(),
        ) {
            let schema: OwnedNamedType = Everything::SCHEMA.into();
            let bytes = postcard::to_stdvec(&value).unwrap();
            let text = postcard_to_json_text(&schema, &bytes).unwrap();
            let parsed: Value = serde_json::from_slice(&text).unwrap();
            let tree = postcard_to_json(&schema, &bytes).unwrap();
            proptest::prop_assert!(same_json(&parsed, &tree), "{parsed} != {tree}");
        }
    }

    /// Equal JSON, numbers within parsing precision (serde_json parses
    /// floats to within one unit in the last place, not exactly).
    fn same_json(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                _ if x == y => true,
                (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                _ => false,
            },
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
            }
            _ => a == b,
        }
    }

    proptest::proptest! {
        #[test]
        fn json_input_streams_to_the_bytes_of_the_value_path(
            value in everything(), cut in 0usize..400,
        ) {
            let schema: OwnedNamedType = Everything::SCHEMA.into();
            let text = postcard_to_json_text(&schema, &postcard::to_stdvec(&value).unwrap()).unwrap();
            let tree: Value = serde_json::from_slice(&text).unwrap();
            let streamed = json_text_to_postcard(&schema, &text).unwrap();
            proptest::prop_assert_eq!(&streamed, &json_to_postcard(&schema, &tree).unwrap());
            // Truncated JSON is refused, like the value path refuses it.
            let cut = cut.min(text.len().saturating_sub(1));
            proptest::prop_assert!(json_text_to_postcard(&schema, &text[..cut]).is_err());
        }
    }

    #[test]
    fn json_input_refuses_what_the_value_path_refuses() {
        let schema: OwnedNamedType = Visit::SCHEMA.into();
        for bad in [
            &br#"{"name": "ada"}"#[..],
            br#"{"name": "ada", "count": 1, "extra": 2}"#,
            br#"{"name": 5, "count": 1}"#,
            br#"{"name": "ada", "count": -1}"#,
            br#"{"name": "ada", "count": 4294967296}"#,
            br#"{"name": "ada", "count": 1.5}"#,
            br#"["ada", 1]"#,
            br#"{"name": "ada", "count": 1} trailing"#,
        ] {
            let tree = serde_json::from_slice::<Value>(bad).ok().map(|v| json_to_postcard(&schema, &v));
            assert!(json_text_to_postcard(&schema, bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(!matches!(tree, Some(Ok(_))), "the value path agrees: {}", String::from_utf8_lossy(bad));
        }
        let ok = json_text_to_postcard(&schema, br#"{"count": null, "name": "ada"}"#).unwrap();
        assert_eq!(postcard::from_bytes::<Visit>(&ok).unwrap(), Visit { name: "ada".into(), count: None });
    }

    #[test]
    fn json_text_refuses_what_has_no_json_form_and_bounds_memory() {
        let schema: OwnedNamedType = <std::collections::BTreeMap<String, u8>>::SCHEMA.into();
        // Two entries with the same key.
        let e = postcard_to_json_text(&schema, &[2, 1, b'k', 1, 1, b'k', 2]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let schema: OwnedNamedType = f64::SCHEMA.into();
        assert!(postcard_to_json_text(&schema, &f64::NAN.to_le_bytes()).is_err());
        // A huge claimed length is refused by the walk, before any output.
        let schema: OwnedNamedType = <Vec<i16>>::SCHEMA.into();
        assert!(postcard_to_json_text(&schema, &[0xff, 0xff, 0xff, 0xff, 0x0f, 1]).is_err());
        // 8 MiB of bytes: the text is at most 4 bytes per byte.
        let big = postcard::to_stdvec(&vec![255u8; 8 << 20]).unwrap();
        let text = postcard_to_json_text(&<Vec<u8>>::SCHEMA.into(), &big).unwrap();
        assert!(text.len() <= 4 * (8 << 20) + 2);
    }

    #[test]
    fn a_char_in_the_schema_is_a_clear_error_not_a_panic() {
        let schema: OwnedNamedType = <(u8, Option<char>)>::SCHEMA.into();
        let bytes = postcard::to_stdvec(&(1u8, Some('x'))).unwrap();
        assert!(check_postcard(&schema, &bytes).is_ok(), "postcard invocations still work");
        let e = postcard_to_json(&schema, &bytes).unwrap_err();
        assert!(matches!(&e, Error::BadInput(m) if m.contains("char")), "{e}");
        assert!(json_to_postcard(&schema, &serde_json::json!([1, "x"])).is_err());
    }

    #[test]
    fn json_round_trips_through_postcard() {
        let json = serde_json::json!({"name": "ada", "count": 3});
        let bytes = json_to_postcard(&schema(), &json).unwrap();
        let typed: Visit = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(typed, Visit { name: "ada".into(), count: Some(3) });
        assert_eq!(postcard_to_json(&schema(), &bytes).unwrap(), json);
    }

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq, Clone)]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: u32, h: i64 },
        Pair(i8, char),
    }

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq, Clone)]
    struct Rich {
        name: String,
        tags: Vec<String>,
        shape: Shape,
        maybe: Option<u16>,
        bytes: Vec<u8>,
        wide: u128,
        pairs: Vec<(bool, i32)>,
        unit: (),
    }

    fn rich() -> impl proptest::strategy::Strategy<Value = Rich> {
        use proptest::prelude::*;
        let shape = prop_oneof![
            Just(Shape::Dot),
            any::<f64>().prop_map(Shape::Circle),
            (any::<u32>(), any::<i64>()).prop_map(|(w, h)| Shape::Rect { w, h }),
            (any::<i8>(), any::<char>()).prop_map(|(a, c)| Shape::Pair(a, c)),
        ];
        (
            ".*",
            proptest::collection::vec(".*", 0..4),
            shape,
            any::<Option<u16>>(),
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<u128>(),
            proptest::collection::vec(any::<(bool, i32)>(), 0..4),
        )
            .prop_map(|(name, tags, shape, maybe, bytes, wide, pairs)| Rich {
                name,
                tags,
                shape,
                maybe,
                bytes,
                wide,
                pairs,
                unit: (),
            })
    }

    proptest::proptest! {
        #[test]
        fn every_encoded_value_checks_and_every_truncation_fails(v in rich(), extra in 1usize..4) {
            let schema: OwnedNamedType = Rich::SCHEMA.into();
            let bytes = postcard::to_allocvec(&v).unwrap();
            proptest::prop_assert!(check_postcard(&schema, &bytes).is_ok());
            for cut in 0..bytes.len() {
                proptest::prop_assert!(check_postcard(&schema, &bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.extend(std::iter::repeat_n(0u8, extra));
            proptest::prop_assert!(check_postcard(&schema, &longer).is_err());
        }

        #[test]
        fn the_check_agrees_with_a_typed_decode_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any_byte(), 0..64)
        ) {
            let schema: OwnedNamedType = Rich::SCHEMA.into();
            let typed = matches!(postcard::take_from_bytes::<Rich>(&bytes), Ok((_, rest)) if rest.is_empty());
            proptest::prop_assert_eq!(check_postcard(&schema, &bytes).is_ok(), typed);
        }
    }

    fn any_byte() -> impl proptest::strategy::Strategy<Value = u8> {
        use proptest::prelude::*;
        // Small values hit valid tags and lengths often.
        prop_oneof![0u8..4, any::<u8>()]
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

    #[test]
    fn a_mismatch_names_its_path_and_what_was_expected() {
        let everything: OwnedNamedType = Everything::SCHEMA.into();
        let bad = serde_json::json!({
            "flag": true, "small": 1, "wide": 2, "bytes": [], "name": "n",
            "shapes": ["Dot", {"Rect": {"w": "wide", "h": null}}],
            "table": {}, "single": [1.0], "unit": null, "maybe": null
        });
        let e = json_to_postcard(&everything, &bad).unwrap_err().to_string();
        assert!(e.contains("at .shapes[1].Rect.w: "), "{e}");
        assert!(e.contains("does not fit `u32`"), "{e}");
        let e = json_to_postcard(&Figure::SCHEMA.into(), &serde_json::json!("dot")).unwrap_err().to_string();
        assert!(e.contains(r#""dot" is no variant"#) && e.contains(r#""Dot", "Circle""#), "{e}");
        let e = json_to_postcard(&schema(), &serde_json::json!({"nom": 1})).unwrap_err().to_string();
        assert!(e.contains("has no field `nom` (its fields: name, count)"), "{e}");
    }
}
