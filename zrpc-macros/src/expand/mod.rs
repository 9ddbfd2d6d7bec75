//! Code generation, one file per generated part:
//!
//! | file | generates |
//! |---|---|
//! | [`server`] | the trait users implement, `XServer<T>` and its dispatch on the method name |
//! | [`descriptor`] | `XServer<T>`'s `NamedService::descriptor`: the service as data, for reflection |
//! | [`client`] | `XClient<S>` and one method per service method |
//! | [`message`] | one `XMethodArgs` struct per method, and the checks that every type is serde-able |
//!
//! Every path in the output is absolute (`::core::...`, `::std::...`, `<crate>::__private::...`)
//! so the expansion works whatever the user imported, under `#![no_implicit_prelude]` too. The
//! logic lives in `__private` functions; the expansion only names types and wires them up.

mod client;
mod descriptor;
mod message;
mod server;

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, ItemTrait, Pat, TraitItem};

use crate::ast::Service;

/// Everything `#[zrpc::service]` turns a valid trait into.
pub(crate) fn expand(service: &Service) -> TokenStream {
    let service_trait = server::service_trait(service);
    let messages = message::messages(service);
    let client = client::client(service);
    let server = server::server(service);
    quote! {
        #service_trait
        #messages
        #client
        #server
    }
}

/// What to emit beside the errors when the trait is refused: the trait itself, so that code
/// using it does not add a cascade of "cannot find trait" errors to the real ones.
pub(crate) fn fallback(mut item: ItemTrait) -> TokenStream {
    // Patterns are not allowed in methods without a body; an error says so already.
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            for input in &mut f.sig.inputs {
                if let FnArg::Typed(typed) = input
                    && !matches!(*typed.pat, Pat::Ident(_))
                {
                    *typed.pat = syn::parse_quote!(_);
                }
            }
        }
    }
    quote! {
        #[allow(async_fn_in_trait)]
        #item
    }
}

/// `<crate>::__private`, the root of every path into zrpc.
fn private(service: &Service) -> TokenStream {
    let krate = &service.krate;
    quote!(#krate::__private)
}
