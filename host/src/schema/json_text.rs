//! Postcard → JSON text, written directly from the bytes through the
//! schema, without building a `serde_json::Value` (issue 13 §4): a value
//! costs its JSON text and nothing more — a 30 MB byte array is about
//! 110 MB of text, where a `Value` tree took over 1 GB. Same conventions as
//! [`super::postcard_to_json`] (postcard-dyn's): structs are objects,
//! tuples arrays (a 1-tuple is its item), `Option` is `null` or the value,
//! unit and unit structs `null`, unit variants strings, other variants
//! `{"Variant": value}`, maps with string keys objects; non-finite floats,
//! non-string map keys and repeated map keys are errors.

use std::collections::HashSet;
use std::io::Write as _;

use postcard_schema::schema::owned::{OwnedDataModelType as T, OwnedDataModelVariant as V, OwnedNamedType};

use super::Cursor;

/// Writes the JSON text of one postcard value.
pub(super) struct JsonText<'a> {
    cursor: Cursor<'a>,
    out: Vec<u8>,
}

type Step = std::result::Result<(), String>;

impl<'a> JsonText<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        JsonText {
            cursor: Cursor { bytes, at: 0 },
            out: Vec::with_capacity(bytes.len().saturating_mul(2).min(1 << 26)),
        }
    }

    /// The text, once the whole input was one value.
    pub(super) fn finish(self) -> std::result::Result<Vec<u8>, String> {
        let left = self.cursor.bytes.len() - self.cursor.at;
        if left != 0 {
            return Err(format!("{left} trailing bytes"));
        }
        Ok(self.out)
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        self.cursor.take(n)
    }

    fn varint(&mut self, bits: u32) -> std::result::Result<u128, String> {
        self.cursor.varint(bits)
    }

    fn len(&mut self) -> std::result::Result<usize, String> {
        usize::try_from(self.cursor.len()?).map_err(|_| "length overflows".to_string())
    }

    fn zigzag(&mut self, bits: u32) -> std::result::Result<i128, String> {
        let n = self.varint(bits)?;
        Ok(((n >> 1) as i128) ^ -((n & 1) as i128))
    }

    fn number(&mut self, n: impl std::fmt::Display) {
        let _ = write!(self.out, "{n}");
    }

    fn float(&mut self, f: f64) -> Step {
        if !f.is_finite() {
            return Err(format!("{f} has no JSON form"));
        }
        serde_json::to_writer(&mut self.out, &f).map_err(|e| e.to_string())
    }

    fn string(&mut self, s: &str) -> Step {
        serde_json::to_writer(&mut self.out, s).map_err(|e| e.to_string())
    }

    fn utf8(&mut self) -> std::result::Result<&'a str, String> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|e| format!("string is not UTF-8: {e}"))
    }

    /// Several values as a JSON array.
    fn array(&mut self, items: &[OwnedNamedType]) -> Step {
        match items {
            [] => {
                self.out.extend_from_slice(b"null");
                Ok(())
            }
            [one] => self.value(one),
            many => {
                self.out.push(b'[');
                for (i, item) in many.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.value(item)?;
                }
                self.out.push(b']');
                Ok(())
            }
        }
    }

    fn object(&mut self, fields: &[postcard_schema::schema::owned::OwnedNamedValue]) -> Step {
        self.out.push(b'{');
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.string(&f.name)?;
            self.out.push(b':');
            self.value(&f.ty)?;
        }
        self.out.push(b'}');
        Ok(())
    }

    /// Write the value of type `t` at the cursor.
    pub(super) fn value(&mut self, t: &OwnedNamedType) -> Step {
        match &t.ty {
            T::Bool => match self.take(1)?[0] {
                0 => self.out.extend_from_slice(b"false"),
                1 => self.out.extend_from_slice(b"true"),
                b => return Err(format!("{b} is not a bool")),
            },
            T::U8 => {
                let b = self.take(1)?[0];
                self.number(b);
            }
            T::I8 => {
                let b = self.take(1)?[0] as i8;
                self.number(b);
            }
            T::U16 => {
                let n = self.varint(16)?;
                self.number(n);
            }
            T::U32 => {
                let n = self.varint(32)?;
                self.number(n);
            }
            T::U64 | T::Usize => {
                let n = self.varint(64)?;
                self.number(n);
            }
            T::U128 => {
                let n = self.varint(128)?;
                self.number(n);
            }
            T::I16 => {
                let n = self.zigzag(16)?;
                self.number(n);
            }
            T::I32 => {
                let n = self.zigzag(32)?;
                self.number(n);
            }
            T::I64 | T::Isize => {
                let n = self.zigzag(64)?;
                self.number(n);
            }
            T::I128 => {
                let n = self.zigzag(128)?;
                self.number(n);
            }
            T::F32 => {
                let raw = self.take(4)?;
                let f = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                self.float(f64::from(f))?;
            }
            T::F64 => {
                let raw = self.take(8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                self.float(f64::from_le_bytes(b))?;
            }
            T::Char | T::Schema => return Err("no JSON form for this type".into()),
            T::String => {
                let s = self.utf8()?;
                self.string(s)?;
            }
            T::ByteArray => {
                let n = self.len()?;
                let bytes = self.take(n)?;
                self.out.push(b'[');
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.number(b);
                }
                self.out.push(b']');
            }
            T::Option(inner) => match self.take(1)?[0] {
                0 => self.out.extend_from_slice(b"null"),
                1 => self.value(inner)?,
                b => return Err(format!("{b} is not an option tag")),
            },
            T::Unit | T::UnitStruct => self.out.extend_from_slice(b"null"),
            T::NewtypeStruct(inner) => self.value(inner)?,
            T::Seq(item) => {
                let n = self.len()?;
                self.out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.value(item)?;
                }
                self.out.push(b']');
            }
            T::Tuple(items) | T::TupleStruct(items) => self.array(items)?,
            T::Map { key, val } => {
                if key.ty != T::String {
                    return Err("map keys must be strings in JSON".into());
                }
                let n = self.len()?;
                let mut seen = HashSet::new();
                self.out.push(b'{');
                for i in 0..n {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    let k = self.utf8()?;
                    if !seen.insert(k) {
                        return Err(format!("map key {k:?} appears twice"));
                    }
                    self.string(k)?;
                    self.out.push(b':');
                    self.value(val)?;
                }
                self.out.push(b'}');
            }
            T::Struct(fields) => self.object(fields)?,
            T::Enum(variants) => {
                let d = self.varint(32)?;
                let v = usize::try_from(d)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or_else(|| format!("variant {d} does not exist (the enum has {})", variants.len()))?;
                if let V::UnitVariant = &v.ty {
                    return self.string(&v.name);
                }
                self.out.push(b'{');
                self.string(&v.name)?;
                self.out.push(b':');
                match &v.ty {
                    V::UnitVariant => {}
                    V::NewtypeVariant(inner) => self.value(inner)?,
                    V::TupleVariant(items) => self.array(items)?,
                    V::StructVariant(fields) => self.object(fields)?,
                }
                self.out.push(b'}');
            }
        }
        Ok(())
    }
}
