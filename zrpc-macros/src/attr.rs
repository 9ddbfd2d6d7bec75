//! Parsing of the macro's own attributes: the arguments of `#[zrpc::service(...)]` and the
//! `#[zrpc(...)]` attributes on methods.
//!
//! Only syntax is checked here (known keys, literal kinds, duplicates); what the values mean
//! (a wire name without dots, say) is checked in [`valid`](crate::valid), which sees the whole
//! service.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::{Attribute, LitStr, Path};

use crate::valid::Errors;

/// The arguments of `#[zrpc::service(...)]`.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    /// `name = "pkg.Greeter"`: the wire name of the service.
    pub(crate) name: Option<LitStr>,
    /// `crate = "my_zrpc"`: the path generated code uses instead of `::zrpc`.
    pub(crate) krate: Option<Path>,
    /// Where `schema` was written, if it was: describe the types with JSON Schemas.
    pub(crate) schema: Option<Span>,
}

const SERVICE_ARGS: &str = "valid arguments are `name = \"...\"` (the wire name of the service), `schema` \
                            (JSON Schemas of its types in reflection) and `crate = \"...\"` (the path of the zrpc crate)";

const METHOD_ARGS: &str =
    "valid arguments are `idempotent`, `oneway` and `name = \"...\"` (the wire name of the method)";

/// Parses the tokens inside `#[zrpc::service(...)]`.
pub(crate) fn parse_service_args(tokens: TokenStream) -> syn::Result<ServiceArgs> {
    let mut args = ServiceArgs::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let lit = value(&meta, "name")?;
            set_once(&mut args.name, lit, &meta, "name")
        } else if meta.path.is_ident("crate") {
            let lit = value(&meta, "crate")?;
            let path = lit.parse_with(Path::parse_mod_style).map_err(|_| {
                syn::Error::new(lit.span(), "expected the path of the zrpc crate, such as `crate = \"my_zrpc\"`")
            })?;
            set_once(&mut args.krate, path, &meta, "crate")
        } else if meta.path.is_ident("schema") {
            flag(&meta)?;
            set_once(&mut args.schema, meta.path.require_ident()?.span(), &meta, "schema")
        } else {
            Err(meta.error(format_args!("unknown argument `{}` to `#[zrpc::service]`; {SERVICE_ARGS}", key(&meta))))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(args)
}

/// The `#[zrpc(...)]` attributes of one method, merged.
#[derive(Default)]
pub(crate) struct MethodArgs {
    /// Where `idempotent` was written, if it was.
    pub(crate) idempotent: Option<Span>,
    /// Where `oneway` was written, if it was.
    pub(crate) oneway: Option<Span>,
    /// `name = "..."`: the wire name of the method.
    pub(crate) name: Option<LitStr>,
}

/// Removes every `#[zrpc(...)]` attribute from `attrs` and parses them; mistakes go to `errors`
/// so that the other attributes and methods are still checked.
pub(crate) fn take_method_args(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> MethodArgs {
    let mut args = MethodArgs::default();
    attrs.retain(|attr| {
        if !attr.path().is_ident("zrpc") {
            return true;
        }
        let parsed = match &attr.meta {
            syn::Meta::List(_) => attr.parse_nested_meta(|meta| parse_method_arg(&mut args, &meta)),
            _ => Err(syn::Error::new_spanned(attr, format!("expected `#[zrpc(...)]`; {METHOD_ARGS}"))),
        };
        if let Err(e) = parsed {
            errors.push(e);
        }
        false
    });
    args
}

fn parse_method_arg(args: &mut MethodArgs, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.path.is_ident("idempotent") {
        flag(meta)?;
        set_once(&mut args.idempotent, meta.path.require_ident()?.span(), meta, "idempotent")
    } else if meta.path.is_ident("oneway") {
        flag(meta)?;
        set_once(&mut args.oneway, meta.path.require_ident()?.span(), meta, "oneway")
    } else if meta.path.is_ident("name") {
        let lit = value(meta, "name")?;
        set_once(&mut args.name, lit, meta, "name")
    } else {
        Err(meta.error(format_args!("unknown argument `{}` to `#[zrpc(...)]`; {METHOD_ARGS}", key(meta))))
    }
}

/// A key such as `name`, written back for an error message.
fn key(meta: &ParseNestedMeta<'_>) -> String {
    let path = &meta.path;
    quote::quote!(#path).to_string().replace(' ', "")
}

/// The string after `key =`.
fn value(meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<LitStr> {
    if !meta.input.peek(syn::Token![=]) {
        return Err(meta.error(format_args!("expected `{key} = \"...\"`")));
    }
    meta.value()?.parse::<LitStr>().map_err(|e| syn::Error::new(e.span(), format!("expected `{key} = \"...\"`")))
}

/// A bare flag such as `oneway`, which takes no value.
fn flag(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.is_empty() || meta.input.peek(syn::Token![,]) {
        Ok(())
    } else {
        Err(meta.error(format_args!("`{}` takes no value; write `#[zrpc({})]`", key(meta), key(meta))))
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format_args!("`{key}` is given twice; keep one")));
    }
    *slot = Some(value);
    Ok(())
}
