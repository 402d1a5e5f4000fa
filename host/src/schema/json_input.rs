//! JSON text → postcard, written while serde_json parses, through the
//! schema: no `serde_json::Value` tree (a JSON byte array of N elements took
//! 32·N bytes of tree). The same conventions and the same refusals as
//! [`super::json_to_postcard`] (postcard-dyn's), which the tests check.

use std::collections::HashMap;
use std::fmt;

use postcard_schema::schema::owned::{OwnedDataModelType as T, OwnedDataModelVariant as V, OwnedNamedType};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Writes the postcard encoding of the JSON value of type `schema` that is
/// being deserialized into `out`.
pub(super) struct Encode<'s, 'o> {
    pub(super) schema: &'s OwnedNamedType,
    pub(super) out: &'o mut Vec<u8>,
}

fn varint(out: &mut Vec<u8>, mut n: u128) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn zigzag(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

/// Encode each element of a JSON array with `item`, then prefix the count.
fn counted<'de, A: SeqAccess<'de>>(
    out: &mut Vec<u8>,
    mut seq: A,
    mut item: impl FnMut(&mut Vec<u8>, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    let mut body = Vec::new();
    let mut n: u128 = 0;
    while item(&mut body, &mut seq)? {
        n += 1;
    }
    varint(out, n);
    out.extend_from_slice(&body);
    Ok(())
}

impl<'de> DeserializeSeed<'de> for Encode<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let Encode { schema, out } = self;
        match &schema.ty {
            T::Unit | T::UnitStruct => {
                // postcard-dyn writes nothing for a unit, whatever the JSON.
                IgnoredAny::deserialize(d).map(|_| ())
            }
            T::Option(inner) => d.deserialize_option(OptionVisitor { inner, out }),
            T::NewtypeStruct(inner) => Encode { schema: inner, out }.deserialize(d),
            T::Tuple(items) | T::TupleStruct(items) if items.len() == 1 => {
                Encode { schema: &items[0], out }.deserialize(d)
            }
            _ => d.deserialize_any(ValueVisitor { schema, out }),
        }
    }
}

use serde::Deserialize as _;

struct OptionVisitor<'s, 'o> {
    inner: &'s OwnedNamedType,
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for OptionVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or a value")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.out.push(0);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.push(0);
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.out.push(1);
        Encode { schema: self.inner, out: self.out }.deserialize(d)
    }
}

/// An error inside `segment` (`.field`, `[3]`, `.Variant`) of the value:
/// the path grows outward as the error rises, `at .order.items[2]: …`.
fn within<E: de::Error>(segment: &str, e: impl fmt::Display) -> E {
    let text = e.to_string();
    match text.strip_prefix("at ").and_then(|rest| rest.split_once(": ")) {
        Some((path, why)) => E::custom(format!("at {segment}{path}: {why}")),
        None => E::custom(format!("at {segment}: {text}")),
    }
}

/// The variants of an enum, for a message.
fn variant_names(variants: &[postcard_schema::schema::owned::OwnedNamedVariant]) -> String {
    let names: Vec<String> = variants.iter().map(|v| format!("{:?}", v.name)).collect();
    names.join(", ")
}

struct ValueVisitor<'s, 'o> {
    schema: &'s OwnedNamedType,
    out: &'o mut Vec<u8>,
}

impl ValueVisitor<'_, '_> {
    fn mismatch<E: de::Error>(&self, got: &str) -> E {
        E::custom(format!("{got} does not fit `{}`", self.schema))
    }

    fn integer<E: de::Error>(self, n: i128) -> Result<(), E> {
        let fits =
            |lo: i128, hi: i128| if (lo..=hi).contains(&n) { Ok(()) } else { Err(self.mismatch::<E>("the number")) };
        match &self.schema.ty {
            T::U8 => fits(0, 255).map(|()| self.out.push(n as u8)),
            T::I8 => fits(-128, 127).map(|()| self.out.push(n as i8 as u8)),
            T::U16 => fits(0, i128::from(u16::MAX)).map(|()| varint(self.out, n as u128)),
            T::U32 => fits(0, i128::from(u32::MAX)).map(|()| varint(self.out, n as u128)),
            T::U64 | T::Usize | T::U128 => fits(0, i128::from(u64::MAX)).map(|()| varint(self.out, n as u128)),
            T::I16 => fits(i128::from(i16::MIN), i128::from(i16::MAX)).map(|()| varint(self.out, zigzag(n))),
            T::I32 => fits(i128::from(i32::MIN), i128::from(i32::MAX)).map(|()| varint(self.out, zigzag(n))),
            T::I64 | T::Isize | T::I128 => {
                fits(i128::from(i64::MIN), i128::from(i64::MAX)).map(|()| varint(self.out, zigzag(n)))
            }
            T::F32 => {
                self.out.extend_from_slice(&(n as f64 as f32).to_le_bytes());
                Ok(())
            }
            T::F64 => {
                self.out.extend_from_slice(&(n as f64).to_le_bytes());
                Ok(())
            }
            _ => Err(self.mismatch("a number")),
        }
    }
}

impl<'de> Visitor<'de> for ValueVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON for `{}`", self.schema)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        match self.schema.ty {
            T::Bool => {
                self.out.push(u8::from(b));
                Ok(())
            }
            _ => Err(self.mismatch("a boolean")),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.integer(i128::from(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.integer(i128::from(n))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<(), E> {
        match self.schema.ty {
            T::F32 => self.out.extend_from_slice(&(f as f32).to_le_bytes()),
            T::F64 => self.out.extend_from_slice(&f.to_le_bytes()),
            _ => return Err(self.mismatch("a fractional number")),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        match &self.schema.ty {
            T::String => {
                varint(self.out, s.len() as u128);
                self.out.extend_from_slice(s.as_bytes());
                Ok(())
            }
            T::Enum(variants) => {
                let (i, _) = variants
                    .iter()
                    .enumerate()
                    .find(|(_, v)| v.name == s && matches!(v.ty, V::UnitVariant))
                    .ok_or_else(|| {
                    E::custom(format!(
                        "{s:?} is no variant of `{}` (its variants: {}; names are matched exactly)",
                        self.schema,
                        variant_names(variants)
                    ))
                })?;
                varint(self.out, i as u128);
                Ok(())
            }
            _ => Err(self.mismatch("a string")),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let schema = self.schema;
        match &schema.ty {
            T::Seq(item) => {
                let mut index = 0usize;
                counted(self.out, seq, |body, seq| {
                    let got = seq
                        .next_element_seed(Encode { schema: item, out: body })
                        .map_err(|e| within(&format!("[{index}]"), e))?;
                    index += 1;
                    Ok(got.is_some())
                })
            }
            T::ByteArray => counted(self.out, seq, |body, seq| match seq.next_element::<u8>()? {
                Some(b) => {
                    body.push(b);
                    Ok(true)
                }
                None => Ok(false),
            }),
            T::Tuple(items) | T::TupleStruct(items) if items.len() != 1 => {
                for (index, item) in items.iter().enumerate() {
                    let got = seq
                        .next_element_seed(Encode { schema: item, out: self.out })
                        .map_err(|e| within(&format!("[{index}]"), e))?;
                    if got.is_none() {
                        return Err(de::Error::custom(format!("too few items for `{schema}`")));
                    }
                }
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(format!("too many items for `{schema}`")));
                }
                Ok(())
            }
            _ => Err(self.mismatch("an array")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let schema = self.schema;
        match &schema.ty {
            T::Map { key, val } if key.ty == T::String => {
                // A repeated key keeps its last value, as in a JSON object.
                let mut order: Vec<String> = Vec::new();
                let mut encoded: HashMap<String, Vec<u8>> = HashMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let mut v = Vec::new();
                    map.next_value_seed(Encode { schema: val, out: &mut v })
                        .map_err(|e| within(&format!("[{k:?}]"), e))?;
                    if encoded.insert(k.clone(), v).is_none() {
                        order.push(k);
                    }
                }
                // postcard-dyn writes a `Value` object's entries in key order.
                order.sort();
                varint(self.out, order.len() as u128);
                for k in order {
                    varint(self.out, k.len() as u128);
                    self.out.extend_from_slice(k.as_bytes());
                    self.out.extend_from_slice(encoded.get(&k).map(Vec::as_slice).unwrap_or_default());
                }
                Ok(())
            }
            T::Struct(fields) => {
                let mut encoded: HashMap<String, Vec<u8>> = HashMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let Some(field) = fields.iter().find(|f| f.name == k) else {
                        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                        return Err(de::Error::custom(format!(
                            "`{schema}` has no field `{k}` (its fields: {})",
                            names.join(", ")
                        )));
                    };
                    let mut v = Vec::new();
                    map.next_value_seed(Encode { schema: &field.ty, out: &mut v })
                        .map_err(|e| within(&format!(".{k}"), e))?;
                    encoded.insert(k, v);
                }
                for f in fields {
                    let v = encoded
                        .get(f.name.as_str())
                        .ok_or_else(|| de::Error::custom(format!("missing field `{}` of `{schema}`", f.name)))?;
                    self.out.extend_from_slice(v);
                }
                Ok(())
            }
            T::Enum(variants) => {
                let Some(name) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!("an empty object is no variant of `{schema}`")));
                };
                let (i, v) = variants.iter().enumerate().find(|(_, v)| v.name == name).ok_or_else(|| {
                    de::Error::custom(format!(
                        "`{schema}` has no variant `{name}` (its variants: {}; names are matched exactly)",
                        variant_names(variants)
                    ))
                })?;
                varint(self.out, i as u128);
                let inner = match &v.ty {
                    // `{"Variant": null}`, which serde also reads as a unit variant.
                    V::UnitVariant => {
                        map.next_value::<()>()
                            .map_err(|_| de::Error::custom(format!("variant `{name}` takes no value")))?;
                        if map.next_key::<IgnoredAny>()?.is_some() {
                            return Err(de::Error::custom(format!(
                                "a variant of `{schema}` is an object with one key"
                            )));
                        }
                        return Ok(());
                    }
                    V::NewtypeVariant(inner) => (**inner).clone(),
                    V::TupleVariant(items) => OwnedNamedType { name: name.clone(), ty: T::Tuple(items.clone()) },
                    V::StructVariant(fields) => OwnedNamedType { name: name.clone(), ty: T::Struct(fields.clone()) },
                };
                map.next_value_seed(Encode { schema: &inner, out: self.out })
                    .map_err(|e| within(&format!(".{name}"), e))?;
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(format!("a variant of `{schema}` is an object with one key")));
                }
                Ok(())
            }
            _ => Err(self.mismatch("an object")),
        }
    }
}
