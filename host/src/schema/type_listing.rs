//! A function's input or output type written out in full, the way a function
//! author reads it: the type itself as an expression (`Vec<Tile>`,
//! `Option<(u32, String)>`), then the definition of every struct and enum it
//! reaches, each once, in the order first met, with every field and variant
//! (`enum Shape { Circle(f64), Rect { w: f64, h: f64 }, Empty }`).
//!
//! postcard-schema's own pseudocode prints only the top-level definition and
//! names for everything below it; `databelt describe` and the host API's
//! function listing use this instead.

use postcard_schema::schema::owned::{OwnedDataModelType as Ty, OwnedDataModelVariant as Variant, OwnedNamedType};

/// The type `schema` as an expression followed by one line per named type
/// (struct, tuple struct, newtype, unit struct, enum) it reaches, each
/// `struct …` / `enum …` line written once. Types with the same name but a
/// different shape (two `Item`s from different modules) are both listed.
pub fn list_type(schema: &OwnedNamedType) -> String {
    let mut definitions: Vec<&OwnedNamedType> = Vec::new();
    collect(schema, &mut definitions);
    let mut out = expression(schema);
    for definition in definitions {
        out.push('\n');
        out.push_str(&definition_line(definition));
    }
    out
}

/// The type as it would be written in a field's position.
fn expression(t: &OwnedNamedType) -> String {
    match &t.ty {
        Ty::Bool => "bool".into(),
        Ty::I8 => "i8".into(),
        Ty::U8 => "u8".into(),
        Ty::I16 => "i16".into(),
        Ty::I32 => "i32".into(),
        Ty::I64 => "i64".into(),
        Ty::I128 => "i128".into(),
        Ty::U16 => "u16".into(),
        Ty::U32 => "u32".into(),
        Ty::U64 => "u64".into(),
        Ty::U128 => "u128".into(),
        Ty::Usize => "usize".into(),
        Ty::Isize => "isize".into(),
        Ty::F32 => "f32".into(),
        Ty::F64 => "f64".into(),
        Ty::Char => "char".into(),
        Ty::String => "String".into(),
        Ty::ByteArray => "bytes".into(),
        Ty::Unit => "()".into(),
        Ty::Schema => "Schema".into(),
        Ty::Option(inner) => format!("Option<{}>", expression(inner)),
        Ty::Seq(inner) => format!("Vec<{}>", expression(inner)),
        Ty::Map { key, val } => format!("Map<{}, {}>", expression(key), expression(val)),
        Ty::Tuple(items) => tuple_expression(items),
        Ty::UnitStruct | Ty::NewtypeStruct(_) | Ty::TupleStruct(_) | Ty::Struct(_) | Ty::Enum(_) => t.name.clone(),
    }
}

/// A tuple, or a fixed-size array when every element has one type (postcard
/// encodes `[T; N]` as an N-tuple).
fn tuple_expression(items: &[OwnedNamedType]) -> String {
    match items.first() {
        None => "()".into(),
        Some(first) if items.len() > 1 && items.iter().all(|i| i == first) => {
            format!("[{}; {}]", expression(first), items.len())
        }
        Some(_) => {
            let parts: Vec<String> = items.iter().map(expression).collect();
            if parts.len() == 1 { format!("({},)", parts[0]) } else { format!("({})", parts.join(", ")) }
        }
    }
}

/// `struct Name { a: T, … }`, `struct Name(T, …)`, `struct Name;` or
/// `enum Name { A, B(T), C { x: T } }`.
fn definition_line(t: &OwnedNamedType) -> String {
    let fields = |values: &[postcard_schema::schema::owned::OwnedNamedValue]| {
        values.iter().map(|v| format!("{}: {}", v.name, expression(&v.ty))).collect::<Vec<_>>().join(", ")
    };
    let positional = |items: &[OwnedNamedType]| items.iter().map(expression).collect::<Vec<_>>().join(", ");
    match &t.ty {
        Ty::UnitStruct => format!("struct {};", t.name),
        Ty::NewtypeStruct(inner) => format!("struct {}({});", t.name, expression(inner)),
        Ty::TupleStruct(items) => format!("struct {}({});", t.name, positional(items)),
        Ty::Struct(values) if values.is_empty() => format!("struct {} {{}}", t.name),
        Ty::Struct(values) => format!("struct {} {{ {} }}", t.name, fields(values)),
        Ty::Enum(variants) => {
            let variants: Vec<String> = variants
                .iter()
                .map(|v| match &v.ty {
                    Variant::UnitVariant => v.name.clone(),
                    Variant::NewtypeVariant(inner) => format!("{}({})", v.name, expression(inner)),
                    Variant::TupleVariant(items) => format!("{}({})", v.name, positional(items)),
                    Variant::StructVariant(values) => format!("{} {{ {} }}", v.name, fields(values)),
                })
                .collect();
            format!("enum {} {{ {} }}", t.name, variants.join(", "))
        }
        _ => expression(t),
    }
}

/// Every named type reached from `t`, depth first, each distinct one once.
fn collect<'a>(t: &'a OwnedNamedType, out: &mut Vec<&'a OwnedNamedType>) {
    let named =
        matches!(t.ty, Ty::UnitStruct | Ty::NewtypeStruct(_) | Ty::TupleStruct(_) | Ty::Struct(_) | Ty::Enum(_));
    if named {
        if out.contains(&t) {
            return;
        }
        out.push(t);
    }
    match &t.ty {
        Ty::Option(inner) | Ty::Seq(inner) | Ty::NewtypeStruct(inner) => collect(inner, out),
        Ty::Map { key, val } => {
            collect(key, out);
            collect(val, out);
        }
        Ty::Tuple(items) | Ty::TupleStruct(items) => items.iter().for_each(|i| collect(i, out)),
        Ty::Struct(values) => values.iter().for_each(|v| collect(&v.ty, out)),
        Ty::Enum(variants) => {
            for v in variants {
                match &v.ty {
                    Variant::UnitVariant => {}
                    Variant::NewtypeVariant(inner) => collect(inner, out),
                    Variant::TupleVariant(items) => items.iter().for_each(|i| collect(i, out)),
                    Variant::StructVariant(values) => values.iter().for_each(|v| collect(&v.ty, out)),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postcard_schema::Schema;

    #[derive(Schema)]
    #[allow(dead_code)]
    struct Tile {
        x: u32,
        pixels: Vec<u8>,
    }

    #[derive(Schema)]
    #[allow(dead_code)]
    enum Shape {
        Empty,
        Circle(f64),
        Pair(u8, i16),
        Rect { w: f64, h: f64 },
    }

    #[derive(Schema)]
    #[allow(dead_code)]
    struct Meters(f32);

    #[derive(Schema)]
    #[allow(dead_code)]
    struct Scene {
        tiles: Vec<Tile>,
        shapes: Option<Vec<Shape>>,
        corner: Tile,
        origin: [i32; 3],
        labels: std::collections::BTreeMap<String, (u8, String)>,
        height: Meters,
    }

    fn owned<T: Schema>() -> OwnedNamedType {
        OwnedNamedType::from(T::SCHEMA)
    }

    #[test]
    fn nested_types_are_listed_in_full_each_once() {
        let listing = list_type(&owned::<Scene>());
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(
            lines,
            [
                "Scene",
                "struct Scene { tiles: Vec<Tile>, shapes: Option<Vec<Shape>>, corner: Tile, origin: [i32; 3], labels: Map<String, (u8, String)>, height: Meters }",
                "struct Tile { x: u32, pixels: Vec<u8> }",
                "enum Shape { Empty, Circle(f64), Pair(u8, i16), Rect { w: f64, h: f64 } }",
                "struct Meters(f32);",
            ]
        );
    }

    #[test]
    fn primitives_and_containers_of_primitives_have_no_definitions() {
        assert_eq!(list_type(&owned::<i64>()), "i64");
        assert_eq!(list_type(&owned::<Vec<Option<String>>>()), "Vec<Option<String>>");
        assert_eq!(list_type(&owned::<(u8,)>()), "(u8,)");
        assert_eq!(list_type(&owned::<()>()), "()");
    }

    #[test]
    fn a_type_reached_through_a_container_is_defined() {
        let listing = list_type(&owned::<Option<Vec<Shape>>>());
        assert_eq!(
            listing,
            "Option<Vec<Shape>>\nenum Shape { Empty, Circle(f64), Pair(u8, i16), Rect { w: f64, h: f64 } }"
        );
    }
}
