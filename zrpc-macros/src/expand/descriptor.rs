//! `NamedService::descriptor` for `XServer<T>`: the service described as data (wire names, Rust
//! names, docs, flags, arguments, result and error types), which reflection answers with.
//!
//! Types are described as written and by [`std::any::type_name`]; with
//! `#[zrpc::service(schema)]` also by their JSON Schema, through `__private::schema_of`, whose
//! `HasSchema` bound is spanned on each type so that one without `schemars::JsonSchema` is
//! reported there, as [`message`](super::message) does for serde.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::Type;
use syn::spanned::Spanned;

use super::private;
use crate::ast::{Method, Service};
use crate::valid::tokens;

/// `fn descriptor() -> ServiceDescriptor`, an item of the `NamedService` impl.
pub(crate) fn descriptor(service: &Service) -> TokenStream {
    let private = private(service);
    let wire = &service.wire_name.value;
    let rust_name = service.ident().to_string();
    let docs = service.doc_text();
    let feature_check = service.schema.map(|span| {
        quote_spanned! {span=>
            #private::require_schema_feature::<()>();
        }
    });
    let methods = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let described = method_descriptor(service, method);
        quote! {
            #(#cfgs)*
            service.methods.push(#described);
        }
    });
    quote! {
        fn descriptor() -> #private::ServiceDescriptor {
            #feature_check
            let mut service = #private::ServiceDescriptor::new(#wire, #rust_name).with_docs(#docs);
            #(#methods)*
            service
        }
    }
}

/// `MethodDescriptor::new(..).with_docs(..).with_flags(..).with_arg(..)…`
fn method_descriptor(service: &Service, method: &Method) -> TokenStream {
    let private = private(service);
    let wire = &method.wire_name.value;
    let rust_name = method.ident().to_string();
    let docs = method.doc_text();
    let (idempotent, oneway) = (method.idempotent, method.oneway.is_some());
    let unit: Type = syn::parse_quote!(());
    let result = type_descriptor(service, method.payload_type().unwrap_or(&unit), true);
    let args = method.args.iter().map(|arg| {
        let name = arg.name.to_string();
        let ty = type_descriptor(service, &arg.ty, true);
        quote!(.with_arg(#name, #ty))
    });
    let errors = method.result.as_ref().map(|(ok, error)| {
        // `Status` is zrpc's error, not a payload: it has no schema.
        let (kind, error_schema) = match method.fallible {
            Some(_) => (quote!(Status), false),
            None => (quote!(Application), true),
        };
        let ok = type_descriptor(service, ok, true);
        let error = type_descriptor(service, error, error_schema);
        quote!(.with_errors(#private::ErrorKind::#kind, #ok, #error))
    });
    quote! {
        #private::MethodDescriptor::new(#wire, #rust_name, #result)
            .with_docs(#docs)
            .with_flags(#idempotent, #oneway)
            #(#args)*
            #errors
    }
}

/// `TypeDescriptor::of::<T>("T")`, with its schema when the service asks for schemas and `schema`
/// allows.
fn type_descriptor(service: &Service, ty: &Type, schema: bool) -> TokenStream {
    let private = private(service);
    let written = tokens(ty);
    let described = quote!(#private::TypeDescriptor::of::<#ty>(#written));
    if service.schema.is_none() || !schema {
        return described;
    }
    let schema = quote_spanned! {ty.span()=>
        #private::schema_of::<#ty>()
    };
    quote!(#described.with_schema(#schema))
}
