//! The macro's view of a service: `syn`'s trait turned into one [`Service`] holding one
//! [`Method`] per method, each carrying everything about that method (attributes, arguments,
//! wire name) and the spans needed to point at mistakes.
//!
//! Conversion is lenient: it records what was written, including what zrpc does not accept
//! (patterns, `&mut self`, associated types...), and leaves the judging to
//! [`valid`](crate::valid) so that every mistake is reported at once.

use proc_macro2::Span;
use quote::format_ident;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Block, FnArg, Ident, ItemTrait, LitStr, Pat, Path, Signature, TraitItem, Type, Visibility};

use crate::attr::{self, ServiceArgs};
use crate::valid::Errors;

/// A trait marked `#[zrpc::service]`.
pub(crate) struct Service {
    /// The trait as written, minus `#[zrpc(...)]` attributes: what the generated trait copies
    /// (attributes, visibility, supertraits) and what validation points at.
    pub(crate) item: ItemTrait,
    /// The wire name: `name = "..."`, else the trait's name.
    pub(crate) wire_name: WireName,
    /// Where generated code finds zrpc (`::zrpc` unless `crate = "..."`).
    pub(crate) krate: Path,
    /// Whether `crate = "..."` was given: zrpc's own services name it, and only they may take a
    /// name in the reserved `zrpc.` namespace.
    pub(crate) krate_explicit: bool,
    /// `schema`, with the span of the word: describe the types with JSON Schemas.
    pub(crate) schema: Option<Span>,
    /// The methods, in declaration order.
    pub(crate) methods: Vec<Method>,
    /// Trait items that are not methods, kept to be reported.
    pub(crate) other_items: Vec<TraitItem>,
}

/// A wire name and where it comes from (the `name = "..."` literal, or the identifier).
pub(crate) struct WireName {
    pub(crate) value: String,
    pub(crate) span: Span,
    /// Whether it was given with `name = "..."` (and so should be checked as a string).
    pub(crate) explicit: bool,
}

impl WireName {
    fn new(explicit: Option<LitStr>, ident: &Ident) -> WireName {
        match explicit {
            Some(lit) => WireName { value: lit.value(), span: lit.span(), explicit: true },
            None => WireName { value: ident.unraw().to_string(), span: ident.span(), explicit: false },
        }
    }
}

/// One method of the service.
pub(crate) struct Method {
    /// The attributes other than `#[zrpc(...)]` (docs, `#[cfg]`, lints...).
    pub(crate) attrs: Vec<Attribute>,
    /// The signature as written.
    pub(crate) sig: Signature,
    /// A default body, which zrpc refuses.
    pub(crate) default: Option<Block>,
    /// The wire name, the part after the `.` in `"Service.method"`.
    pub(crate) wire_name: WireName,
    /// `#[zrpc(idempotent)]`.
    pub(crate) idempotent: bool,
    /// `#[zrpc(oneway)]`, with the span of the word.
    pub(crate) oneway: Option<Span>,
    /// The `ctx: &Context` argument, if the first argument is one.
    pub(crate) ctx: Option<Arg>,
    /// The arguments that travel on the wire, in order.
    pub(crate) args: Vec<Arg>,
    /// The declared return type; `None` for `()`.
    pub(crate) output: Option<Type>,
    /// When the return type is `Result<T, Status>`: the handler answers `T` or fails the call
    /// with the status, so `T` is what travels in the payload.
    pub(crate) fallible: Option<Fallible>,
    /// When the return type is `Result<T, E>` (any `E`, `Status` included): `T` and `E`, which
    /// the method's descriptor names.
    pub(crate) result: Option<(Type, Type)>,
    /// The generated arguments struct, `ServiceMethodArgs`.
    pub(crate) args_struct: Ident,
}

/// A return type `Result<T, Status>`, split: the handler answers `ok`, or fails the call with
/// a framework status.
pub(crate) struct Fallible {
    /// `T`, encoded in the payload on success.
    pub(crate) ok: Type,
    /// `Status` as written; the expansion checks that it is zrpc's.
    pub(crate) status: Type,
}

/// An argument other than the receiver.
pub(crate) struct Arg {
    pub(crate) attrs: Vec<Attribute>,
    /// The pattern as written; valid only when it is a plain identifier.
    pub(crate) pat: Pat,
    /// The identifier of the pattern, or a placeholder when the pattern is not one (an error
    /// is reported then, the placeholder only keeps conversion going).
    pub(crate) name: Ident,
    pub(crate) ty: Type,
}

impl Service {
    /// Reads a trait, removing the `#[zrpc(...)]` attributes from `item` as it goes so that the
    /// caller may emit the trait unchanged when there are errors.
    pub(crate) fn from_syn(args: ServiceArgs, item: &mut ItemTrait, errors: &mut Errors) -> Service {
        let wire_name = WireName::new(args.name, &item.ident);
        let krate_explicit = args.krate.is_some();
        let krate = args.krate.unwrap_or_else(|| syn::parse_quote!(::zrpc));
        let mut methods = Vec::new();
        let mut other_items = Vec::new();
        for trait_item in &mut item.items {
            match trait_item {
                TraitItem::Fn(f) => {
                    let zrpc = attr::take_method_args(&mut f.attrs, errors);
                    methods.push(Method::new(&item.ident, f.attrs.clone(), &f.sig, f.default.clone(), zrpc));
                }
                other => other_items.push(other.clone()),
            }
        }
        for attr in item.attrs.iter().filter(|a| a.path().is_ident("zrpc")) {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[zrpc(...)]` goes on methods; give service options as `#[zrpc::service(name = \"...\")]`",
            ));
        }
        item.attrs.retain(|a| !a.path().is_ident("zrpc"));
        Service { item: item.clone(), wire_name, krate, krate_explicit, schema: args.schema, methods, other_items }
    }

    /// The trait's name.
    pub(crate) fn ident(&self) -> &Ident {
        &self.item.ident
    }

    /// The trait's visibility, which every generated item shares.
    pub(crate) fn vis(&self) -> &Visibility {
        &self.item.vis
    }

    /// The trait's doc comment as text.
    pub(crate) fn doc_text(&self) -> String {
        doc_text(&self.item.attrs)
    }

    /// `"Service.method"` for a method.
    pub(crate) fn full_name(&self, method: &Method) -> LitStr {
        LitStr::new(&format!("{}.{}", self.wire_name.value, method.wire_name.value), Span::call_site())
    }
}

impl Method {
    fn new(
        service: &Ident,
        attrs: Vec<Attribute>,
        sig: &Signature,
        default: Option<Block>,
        zrpc: attr::MethodArgs,
    ) -> Method {
        let mut ctx = None;
        let mut args = Vec::new();
        for (index, input) in sig.inputs.iter().enumerate() {
            let FnArg::Typed(typed) = input else { continue };
            let name = match &*typed.pat {
                Pat::Ident(p) => p.ident.clone(),
                other => Ident::new(&format!("arg{index}"), other.span()),
            };
            let arg = Arg { attrs: typed.attrs.clone(), pat: (*typed.pat).clone(), name, ty: (*typed.ty).clone() };
            // Only the first argument after the receiver may be the context; a context
            // anywhere else is reported by validation as a misplaced reference.
            if ctx.is_none() && args.is_empty() && is_context(&arg.ty) {
                ctx = Some(arg);
            } else {
                args.push(arg);
            }
        }
        let output = match &sig.output {
            syn::ReturnType::Default => None,
            syn::ReturnType::Type(_, ty) => Some((**ty).clone()),
        };
        let fallible = output.as_ref().and_then(Fallible::new);
        let result = output.as_ref().and_then(split_result).map(|(ok, error)| (ok.clone(), error.clone()));
        let args_struct = format_ident!(
            "{}{}Args",
            pascal_case(&service.unraw().to_string()),
            pascal_case(&sig.ident.unraw().to_string())
        );
        Method {
            attrs,
            sig: sig.clone(),
            default,
            wire_name: WireName::new(zrpc.name, &sig.ident),
            idempotent: zrpc.idempotent.is_some(),
            oneway: zrpc.oneway,
            ctx,
            args,
            output,
            fallible,
            result,
            args_struct,
        }
    }

    /// The type of a successful answer's payload: `T` of a `Result<T, Status>`, else the
    /// declared type; `None` for `()`.
    pub(crate) fn payload_type(&self) -> Option<&Type> {
        self.fallible.as_ref().map(|f| &f.ok).or(self.output.as_ref())
    }

    /// The method's Rust name, which the trait and the client use.
    pub(crate) fn ident(&self) -> &Ident {
        &self.sig.ident
    }

    /// The `#[cfg(...)]` attributes: every generated piece of the method carries them.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }

    /// The doc comments.
    pub(crate) fn docs(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|a| a.path().is_ident("doc"))
    }

    /// The doc comment as text.
    pub(crate) fn doc_text(&self) -> String {
        doc_text(&self.attrs)
    }
}

/// The text of the `#[doc = "..."]` attributes (`///` lines), one line each, without the space
/// that follows `///`. Docs written as macros (`#[doc = include_str!(..)]`) are left out.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value: syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(text), .. }),
                ..
            }) => Some(text.value()),
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').map(str::to_owned).unwrap_or(line))
        .collect();
    lines.join("\n").trim().to_owned()
}

/// `T` and `E` of a return type `Result<T, E>`: a path ending in `Result` with two type
/// arguments, decided on the names as written, as macros see no types.
fn split_result(ty: &Type) -> Option<(&Type, &Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last().filter(|_| path.qself.is_none())?;
    let syn::PathArguments::AngleBracketed(generics) = &last.arguments else { return None };
    let mut types = generics.args.iter().map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(Some(ok)), Some(Some(error)), None) if last.ident == "Result" => Some((ok, error)),
        _ => None,
    }
}

/// Whether `ty` is `&Context` or `&some::path::Context`: the per-call context argument.
pub(crate) fn is_context(ty: &Type) -> bool {
    let Type::Reference(reference) = ty else { return false };
    let Type::Path(path) = &*reference.elem else { return false };
    path.qself.is_none()
        && path.path.segments.last().is_some_and(|last| last.ident == "Context" && last.arguments.is_none())
}

impl Fallible {
    /// Splits `Result<T, Status>`: any path ending in `Result` with two type arguments, the
    /// second a path ending in `Status`. Macros see no types, only names, so this is decided on
    /// the names as written: a `Status` of the user's own is caught by the expansion's check,
    /// with a message saying how to return it as an application error instead.
    fn new(ty: &Type) -> Option<Fallible> {
        let (ok, status) = split_result(ty)?;
        let named_status = matches!(status, Type::Path(p) if p.qself.is_none()
            && p.path.segments.last().is_some_and(|s| s.ident == "Status" && s.arguments.is_none()));
        named_status.then(|| Fallible { ok: ok.clone(), status: status.clone() })
    }
}

/// `hello_world` → `HelloWorld`; an already PascalCase name is kept.
fn pascal_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pascal_case_joins_snake_case_words() {
        assert_eq!(pascal_case("hello"), "Hello");
        assert_eq!(pascal_case("get_user_by_id"), "GetUserById");
        assert_eq!(pascal_case("Greeter"), "Greeter");
        assert_eq!(pascal_case("_private__x"), "PrivateX");
    }

    #[test]
    fn a_result_with_a_status_error_is_fallible() {
        let yes: [Type; 3] = [
            syn::parse_quote!(Result<String, Status>),
            syn::parse_quote!(::core::result::Result<(), zrpc::Status>),
            syn::parse_quote!(Result<Result<u8, AppError>, ::zrpc::Status>),
        ];
        let oks: [Type; 3] =
            [syn::parse_quote!(String), syn::parse_quote!(()), syn::parse_quote!(Result<u8, AppError>)];
        for (ty, ok) in yes.iter().zip(oks) {
            let fallible = Fallible::new(ty).expect("fallible");
            assert!(fallible.ok == ok, "the ok type of {}", quote::quote!(#ty));
        }
        let no: [Type; 5] = [
            syn::parse_quote!(Result<String, AppError>),
            syn::parse_quote!(Option<Status>),
            syn::parse_quote!(Result<String>),
            syn::parse_quote!(Result<String, Status<u8>>),
            syn::parse_quote!(Status),
        ];
        assert!(!no.iter().any(|ty| Fallible::new(ty).is_some()));
    }

    #[test]
    fn any_two_argument_result_is_split() {
        let ty: Type = syn::parse_quote!(std::result::Result<Vec<u8>, MathError>);
        let (ok, error) = split_result(&ty).expect("a result");
        assert!(*ok == syn::parse_quote!(Vec<u8>) && *error == syn::parse_quote!(MathError));
        let no: [Type; 3] =
            [syn::parse_quote!(io::Result<u8>), syn::parse_quote!(Option<u8>), syn::parse_quote!(Results<u8, E>)];
        assert!(!no.iter().any(|ty| split_result(ty).is_some()));
    }

    #[test]
    fn doc_text_joins_the_lines_without_the_leading_space() {
        let attrs: Vec<Attribute> = vec![
            syn::parse_quote!(#[doc = " Greets."]),
            syn::parse_quote!(#[cfg(test)]),
            syn::parse_quote!(#[doc = "   indented"]),
        ];
        assert_eq!(doc_text(&attrs), "Greets.\n  indented");
    }

    #[test]
    fn context_is_recognised_by_its_last_segment() {
        let yes: [Type; 3] =
            [syn::parse_quote!(&Context), syn::parse_quote!(&zrpc::Context), syn::parse_quote!(&'a ::zrpc::Context)];
        assert!(yes.iter().all(is_context));
        let no: [Type; 4] = [
            syn::parse_quote!(Context),
            syn::parse_quote!(&str),
            syn::parse_quote!(&Context<u8>),
            syn::parse_quote!(&<T as X>::Context),
        ];
        assert!(!no.iter().any(is_context));
    }
}
