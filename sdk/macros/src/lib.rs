//! Procedural macros of the Databelt SDK. Use them through the `databelt`
//! crate (`#[databelt::function]`, `#[databelt::data]`), which supplies every
//! path the generated code needs.

use proc_macro::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type, parse_macro_input};

/// Turn `fn name(ctx: &Context, input: In) -> Result<Out, E>` into the export
/// of a Databelt WASI component.
///
/// `In` and `Out` must implement serde's traits and `databelt`'s `Schema`
/// (derive all three with `#[databelt::data]`); they travel as postcard. `E`
/// is `databelt::Error` (its case is kept) or any `Display + 'static` type
/// (reported as `other`). One function per component.
///
/// `#[databelt::function(reads = ["frame", "mask"])]` declares the run-scope
/// keys (`Context::run_state`) the function reads, so the host fetches them
/// as one group before it starts.
#[proc_macro_attribute]
pub fn function(attr: TokenStream, item: TokenStream) -> TokenStream {
    let reads = match parse_reads(proc_macro2::TokenStream::from(attr)) {
        Ok(r) => r,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = parse_macro_input!(item as ItemFn);
    match expand_function(&func, &reads) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

/// Parse the attribute's arguments: nothing, or `reads = ["key", ...]`.
fn parse_reads(attr: proc_macro2::TokenStream) -> syn::Result<Vec<syn::LitStr>> {
    if attr.is_empty() {
        return Ok(Vec::new());
    }
    let usage = "expected `reads = [\"key\", ...]` (the run-scope keys the function reads), or no arguments";
    let nv: syn::MetaNameValue = syn::parse2(attr.clone()).map_err(|_| syn::Error::new(attr.span(), usage))?;
    if !nv.path.is_ident("reads") {
        return Err(syn::Error::new(nv.path.span(), usage));
    }
    let syn::Expr::Array(array) = &nv.value else {
        return Err(syn::Error::new(nv.value.span(), usage));
    };
    let mut keys = Vec::new();
    for e in &array.elems {
        match e {
            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) if !s.value().is_empty() => keys.push(s.clone()),
            other => return Err(syn::Error::new(other.span(), "each key must be a non-empty string literal")),
        }
    }
    Ok(keys)
}

fn expand_function(func: &ItemFn, reads: &[syn::LitStr]) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "a Databelt function cannot be async"));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(sig.generics.span(), "a Databelt function cannot be generic"));
    }
    if sig.inputs.len() != 2 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            format!(
                "a Databelt function takes exactly two parameters, `ctx: &databelt::Context` and the input; found {}",
                sig.inputs.len()
            ),
        ));
    }
    let mut params = sig.inputs.iter();
    let (Some(ctx), Some(input)) = (params.next(), params.next()) else {
        return Err(syn::Error::new(sig.inputs.span(), "expected two parameters"));
    };
    let ctx_ty = match ctx {
        FnArg::Typed(p) => &p.ty,
        FnArg::Receiver(r) => return Err(syn::Error::new(r.span(), "a Databelt function cannot take `self`")),
    };
    if !is_context_ref(ctx_ty) {
        return Err(syn::Error::new(ctx_ty.span(), "the first parameter must be `&Context` (databelt::Context)"));
    }
    let input_ty = match input {
        FnArg::Typed(p) => &p.ty,
        FnArg::Receiver(r) => return Err(syn::Error::new(r.span(), "a Databelt function cannot take `self`")),
    };
    if let Type::Reference(r) = &**input_ty {
        return Err(syn::Error::new(r.span(), "the input must be taken by value (an owned, deserializable type)"));
    }
    let output_ty = match &sig.output {
        ReturnType::Type(_, ty) => result_ok_type(ty)
            .ok_or_else(|| syn::Error::new(ty.span(), "a Databelt function must return `Result<Output, Error>`"))?,
        ReturnType::Default => {
            return Err(syn::Error::new(sig.ident.span(), "a Databelt function must return `Result<Output, Error>`"));
        }
    };
    let name = &sig.ident;
    let name_str = name.to_string();
    let export = format_ident!("__DatabeltExport_{}", name);
    let describe = quote_spanned! {input_ty.span()=>
        ::databelt::__private::describe::<#input_ty, #output_ty>(#name_str, &[#(#reads),*])
    };
    let run = quote_spanned! {sig.output.span()=>
        ::databelt::__private::run::<#input_ty, #output_ty, _, _>(input, #name)
    };
    Ok(quote! {
        #func

        /// A component exports one Databelt function: a second
        /// `#[databelt::function]` in this module collides here, with this
        /// name, instead of at link time.
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        struct only_one_databelt_function_per_component;

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #export;

        impl ::databelt::__private::Guest for #export {
            fn handle(input: ::std::vec::Vec<u8>)
                -> ::core::result::Result<::std::vec::Vec<u8>, ::databelt::__private::WitError> {
                #run
            }

            fn describe() -> ::databelt::__private::WitFunctionInfo {
                #describe
            }
        }

        ::databelt::wit::export!(#export with_types_in ::databelt::wit);
    })
}

fn is_context_ref(ty: &Type) -> bool {
    let Type::Reference(r) = ty else { return false };
    if r.mutability.is_some() {
        return false;
    }
    let Type::Path(p) = &*r.elem else { return false };
    p.path.segments.last().is_some_and(|s| s.ident == "Context" && s.arguments.is_empty())
}

fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

/// serde attributes that change a type's names or shape. The schema the
/// host maps JSON through is derived from the Rust definition, so each of
/// these would make JSON input and output, and `describe`, disagree with
/// what serde does: refused at compile time instead of silently ignored.
const RESHAPING: &[&str] = &[
    "rename",
    "rename_all",
    "rename_all_fields",
    "alias",
    "tag",
    "content",
    "untagged",
    "flatten",
    "skip",
    "skip_serializing",
    "skip_deserializing",
    "skip_serializing_if",
    "transparent",
    "from",
    "try_from",
    "into",
    "remote",
    "other",
    "default",
];

fn refuse_reshaping_serde(item: &syn::DeriveInput) -> syn::Result<()> {
    let mut attrs: Vec<&syn::Attribute> = item.attrs.iter().collect();
    match &item.data {
        syn::Data::Struct(s) => attrs.extend(s.fields.iter().flat_map(|f| &f.attrs)),
        syn::Data::Enum(e) => {
            for v in &e.variants {
                attrs.extend(&v.attrs);
                attrs.extend(v.fields.iter().flat_map(|f| &f.attrs));
            }
        }
        syn::Data::Union(u) => {
            return Err(syn::Error::new(u.union_token.span(), "#[databelt::data] cannot be a union"));
        }
    }
    for attr in attrs.into_iter().filter(|a| a.path().is_ident("serde")) {
        let mut found = None;
        // Only the names matter; values are skipped.
        let _ = attr.parse_nested_meta(|meta| {
            if found.is_none() && RESHAPING.iter().any(|r| meta.path.is_ident(r)) {
                found = meta.path.get_ident().map(|i| (i.to_string(), meta.path.span()));
            }
            if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                meta.parse_nested_meta(|_| Ok(()))?;
            }
            Ok(())
        });
        if let Some((name, span)) = found {
            return Err(syn::Error::new(
                span,
                format!(
                    "#[databelt::data] does not support `#[serde({name} ...)]`: hosts map JSON through a schema derived from the Rust names and shape, so this attribute would be ignored there; name the Rust items as the JSON should be (e.g. `#[allow(non_camel_case_types)] enum Action {{ add, remove }}`) or convert in the function"
                ),
            ));
        }
    }
    Ok(())
}

/// Derive everything a function's input, output or state type needs: serde's
/// `Serialize` and `Deserialize`, and a postcard schema (used by hosts to map
/// JSON to the type). Works on structs and enums; no other dependency needed.
#[proc_macro_attribute]
pub fn data(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[databelt::data] takes no arguments").to_compile_error().into();
    }
    let item = parse_macro_input!(item as syn::DeriveInput);
    if let Err(e) = refuse_reshaping_serde(&item) {
        return e.to_compile_error().into();
    }
    quote! {
        #[derive(
            ::databelt::__private::serde::Serialize,
            ::databelt::__private::serde::Deserialize,
            ::databelt::__private::Schema
        )]
        #[serde(crate = "::databelt::__private::serde")]
        #[postcard(crate = ::databelt::__private::postcard_schema)]
        #item
    }
    .into()
}
