//! Validation: everything `#[zrpc::service]` refuses, each reported as a `syn::Error` on the
//! offending token with a message that says how to fix it.
//!
//! All mistakes are collected (see [`Errors`]) rather than stopping at the first, so a user
//! fixing a trait sees every problem in one build.

use std::collections::HashMap;
use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;
use syn::{FnArg, Pat, TraitItem, Type};

use crate::ast::{self, Arg, Method, Service, WireName};

/// Names of the generated client's own methods, which a service method may not take.
const CLIENT_METHODS: [&str; 8] =
    ["new", "with_context", "with_codec", "inner", "into_inner", "broadcast", "fork", "oneway"];

/// The namespace of zrpc's built-in services' wire names. zrpc's own services, which give
/// `crate = "..."`, may use it; a service that names its crate path is trusted to know.
const RESERVED: &str = "zrpc.";

/// Errors collected while reading and checking a service.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    fn at_tokens(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// All the errors recorded, combined into one, if there were any.
    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks everything the expansion relies on.
pub(crate) fn check(service: &Service, errors: &mut Errors) {
    check_trait(service, errors);
    // Both maps keep the first method to use a name, so every later one is reported against it.
    let mut wire_names: HashMap<&str, &syn::Ident> = HashMap::new();
    let mut structs: HashMap<String, &syn::Ident> = HashMap::new();
    for method in &service.methods {
        check_method(method, errors);
        let ident = method.ident();
        let first = *wire_names.entry(&method.wire_name.value).or_insert(ident);
        if !std::ptr::eq(first, ident) {
            errors.at(
                method.wire_name.span,
                format_args!(
                    "the wire name `{}.{}` is already used by `{first}`; give this method another one with \
                     `#[zrpc(name = \"...\")]`",
                    service.wire_name.value, method.wire_name.value
                ),
            );
        }
        let first = *structs.entry(method.args_struct.to_string()).or_insert(ident);
        if !std::ptr::eq(first, ident) {
            errors.at(
                ident.span(),
                format_args!(
                    "the arguments struct `{}` generated for this method is also generated for `{first}`; rename one \
                     of them (keep the wire name with `#[zrpc(name = \"...\")]`)",
                    method.args_struct
                ),
            );
        }
    }
}

fn check_trait(service: &Service, errors: &mut Errors) {
    let item = &service.item;
    if let Some(unsafety) = &item.unsafety {
        errors.at_tokens(unsafety, "a zrpc service cannot be an `unsafe trait`; remove `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        errors.at_tokens(auto, "a zrpc service cannot be an `auto trait`; remove `auto`");
    }
    if !item.generics.params.is_empty() {
        errors.at_tokens(
            &item.generics,
            "a zrpc service cannot be generic: the same trait is served and called from other programs; \
             remove the parameters and use concrete types",
        );
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.at_tokens(where_clause, "a zrpc service cannot have a `where` clause; remove it");
    }
    let name = &service.wire_name;
    if name.explicit {
        if name.value.is_empty() || name.value.split('.').any(str::is_empty) {
            errors.at(
                name.span,
                "the service's wire name must be non-empty dot-separated words, such as `name = \"pkg.Greeter\"`",
            );
        } else if name.value.contains(char::is_whitespace) {
            errors.at(
                name.span,
                "the service's wire name cannot contain whitespace; write e.g. `name = \"pkg.Greeter\"`",
            );
        } else if name.value.starts_with(RESERVED) && !service.krate_explicit {
            errors.at(
                name.span,
                format_args!(
                    "wire names starting with `{RESERVED}` are reserved for zrpc's built-in services (such as \
                     `zrpc.Reflection`); choose another, such as `name = \"pkg.{}\"`",
                    &name.value[RESERVED.len()..]
                ),
            );
        }
    }
    for other in &service.other_items {
        let what = match other {
            TraitItem::Const(_) => "associated constants",
            TraitItem::Type(_) => "associated types",
            TraitItem::Macro(_) => "macro invocations",
            _ => "items other than methods",
        };
        errors.at_tokens(
            other,
            format_args!(
                "a zrpc service contains only `async fn` methods, not {what}; move this item out of the trait"
            ),
        );
    }
}

fn check_method(method: &Method, errors: &mut Errors) {
    let sig = &method.sig;
    let name = &sig.ident;
    if let Some(constness) = &sig.constness {
        errors.at_tokens(constness, "zrpc service methods cannot be `const`; remove `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at_tokens(unsafety, "zrpc service methods cannot be `unsafe`; remove `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.at_tokens(abi, "zrpc service methods cannot declare an ABI; remove it");
    }
    if sig.asyncness.is_none() {
        errors.at_tokens(
            sig.fn_token,
            format_args!("zrpc service methods must be `async fn`; write `async fn {name}(...)`"),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.at_tokens(
            &sig.generics,
            "zrpc service methods cannot be generic: their arguments are decoded from bytes into concrete types; \
             remove the parameters and use concrete types",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.at_tokens(where_clause, "zrpc service methods cannot have a `where` clause; remove it");
    }
    if let Some(variadic) = &sig.variadic {
        errors.at_tokens(variadic, "zrpc service methods cannot be variadic; remove `...`");
    }
    if let Some(body) = &method.default {
        errors.at_tokens(
            body,
            "zrpc service methods cannot have a default body; remove it and write the body in the `impl`",
        );
    }
    check_receiver(method, errors);
    if let Some(ctx) = &method.ctx {
        if let Type::Reference(reference) = &ctx.ty
            && let Some(mutability) = &reference.mutability
        {
            errors.at_tokens(mutability, "the context is shared with the server; take `&Context`, not `&mut Context`");
        }
        check_pattern(ctx, errors);
    }
    for arg in &method.args {
        check_pattern(arg, errors);
        check_arg_type(arg, errors);
    }
    check_output(method, errors);
    if CLIENT_METHODS.contains(&name.to_string().as_str()) {
        errors.at_tokens(
            name,
            format_args!(
                "a method named `{name}` clashes with the generated client's own `{name}`; rename the method and keep \
                 its wire name with `#[zrpc(name = \"{}\")]`",
                method.wire_name.value
            ),
        );
    }
    check_method_wire_name(&method.wire_name, errors);
}

fn check_receiver(method: &Method, errors: &mut Errors) {
    let sig = &method.sig;
    let receiver = match sig.inputs.first() {
        Some(FnArg::Receiver(receiver)) => receiver,
        _ => {
            errors.at(
                sig.paren_token.span.join(),
                format_args!(
                    "zrpc service methods take `&self` first (the implementation is shared by concurrent calls); \
                     write `async fn {}(&self, ...)`",
                    sig.ident
                ),
            );
            return;
        }
    };
    let fix = "zrpc service methods take `&self`: one implementation serves concurrent calls";
    if receiver.colon_token.is_some() {
        errors.at_tokens(receiver, format_args!("{fix}; write `&self` instead of a typed `self`"));
    } else if receiver.reference.is_none() {
        errors.at_tokens(receiver, format_args!("{fix}; write `&self` instead of `self`"));
    } else if let Some(mutability) = &receiver.mutability {
        errors.at_tokens(
            mutability,
            format_args!("{fix}; write `&self` instead of `&mut self` and keep mutable state behind a lock or atomics"),
        );
    }
}

fn check_pattern(arg: &Arg, errors: &mut Errors) {
    for attr in &arg.attrs {
        errors.at_tokens(attr, "zrpc method arguments cannot have attributes; remove it");
    }
    let plain = matches!(&arg.pat, Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none());
    if !plain {
        errors.at_tokens(
            &arg.pat,
            "arguments of zrpc methods must be plain identifiers, which name the fields of the generated arguments \
             struct; write `name: Type` and destructure it in the method's body",
        );
    }
}

fn check_arg_type(arg: &Arg, errors: &mut Errors) {
    match &arg.ty {
        ty if ast::is_context(ty) => errors.at_tokens(
            ty,
            "the context must be the first argument after `&self` (and there is at most one); move it there",
        ),
        Type::Reference(reference) => {
            let owned = match &*reference.elem {
                Type::Path(path) if path.path.is_ident("str") => "`String` instead of `&str`".to_owned(),
                Type::Slice(slice) => format!("`Vec<{0}>` instead of `&[{0}]`", tokens(&slice.elem)),
                inner => format!("`{0}` instead of `&{0}`", tokens(inner)),
            };
            errors.at_tokens(&arg.ty, format_args!("arguments are sent by value; take {owned}"));
        }
        Type::ImplTrait(_) => errors.at_tokens(
            &arg.ty,
            "argument types of zrpc methods must be concrete, as they are decoded from bytes; replace `impl Trait` \
             with a type",
        ),
        _ => {}
    }
}

fn check_output(method: &Method, errors: &mut Errors) {
    let Some(output) = &method.output else { return };
    if let Type::ImplTrait(_) = output {
        errors.at_tokens(
            output,
            "zrpc methods must return a concrete type, as it is encoded to bytes; replace `impl Trait` with a type",
        );
    }
    let unit = matches!(output, Type::Tuple(t) if t.elems.is_empty());
    if method.oneway.is_some() && method.fallible.is_some() {
        errors.at_tokens(
            output,
            "a `#[zrpc(oneway)]` method sends no response, so a status it returned would reach nobody; remove the \
             return type and log the failure in the handler, or remove the `oneway`",
        );
    } else if let (Some(_), false) = (method.oneway, unit) {
        errors.at_tokens(
            output,
            "a `#[zrpc(oneway)]` method sends no response, so it cannot return a value; remove the return type \
             or the `oneway`",
        );
    }
}

fn check_method_wire_name(name: &WireName, errors: &mut Errors) {
    if !name.explicit {
        return;
    }
    if name.value.is_empty() {
        errors.at(name.span, "a method's wire name cannot be empty; write e.g. `#[zrpc(name = \"hello\")]`");
    } else if name.value.contains('.') {
        errors.at(
            name.span,
            "a method's wire name cannot contain `.`, which separates it from the service name; rename the service \
             with `#[zrpc::service(name = \"...\")]` instead",
        );
    } else if name.value.contains(char::is_whitespace) {
        errors.at(name.span, "a method's wire name cannot contain whitespace; write e.g. `#[zrpc(name = \"hello\")]`");
    }
}

/// Tokens as a user would write them, for a message or a descriptor.
pub(crate) fn tokens(tokens: impl ToTokens) -> String {
    let text = tokens.to_token_stream().to_string();
    // `to_string` spaces every token; join the ones a person would not separate.
    [" <", "< ", " >", " ,", ":: ", " ::", "& ", " (", "( ", " )", " [", "[ ", " ]"]
        .iter()
        .fold(text, |text, pattern| text.replace(pattern, pattern.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(item: syn::ItemTrait) -> Vec<String> {
        let mut item = item;
        let mut errors = Errors::default();
        let service = Service::from_syn(crate::attr::ServiceArgs::default(), &mut item, &mut errors);
        check(&service, &mut errors);
        errors.finish().err().into_iter().flatten().map(|e| e.to_string()).collect()
    }

    #[test]
    fn references_suggest_the_owned_type() {
        let errors = errors_of(syn::parse_quote! {
            trait S {
                async fn a(&self, x: &str, y: &[u8], z: &Vec<Option<u8>>);
            }
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].ends_with("take `String` instead of `&str`"), "{}", errors[0]);
        assert!(errors[1].ends_with("take `Vec<u8>` instead of `&[u8]`"), "{}", errors[1]);
        assert!(errors[2].ends_with("take `Vec<Option<u8>>` instead of `&Vec<Option<u8>>`"), "{}", errors[2]);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let errors = errors_of(syn::parse_quote! {
            trait S {
                fn a(&self);
                async fn b(self);
                async fn c<T>(&self, t: T);
                const X: u8;
            }
        });
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn a_valid_service_has_no_errors() {
        let errors = errors_of(syn::parse_quote! {
            trait S {
                async fn a(&self, ctx: &zrpc::Context, mut x: String) -> Result<u8, String>;
                #[zrpc(oneway, idempotent, name = "bb")]
                async fn b(&self) -> ();
            }
        });
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn duplicates_are_reported_against_the_first_use() {
        let errors = errors_of(syn::parse_quote! {
            trait S {
                async fn a(&self);
                #[zrpc(name = "a")]
                async fn b(&self);
                #[zrpc(name = "a")]
                async fn c(&self);
                async fn get_x(&self);
                async fn getX(&self);
            }
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("`S.a` is already used by `a`"), "{}", errors[0]);
        assert!(errors[1].contains("`S.a` is already used by `a`"), "{}", errors[1]);
        assert!(
            errors[2].contains("`SGetXArgs` generated for this method is also generated for `get_x`"),
            "{}",
            errors[2]
        );
    }
}
