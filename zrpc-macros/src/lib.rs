//! The `#[zrpc::service]` attribute macro. Use it through the `zrpc` crate, which re-exports it
//! and provides the types the generated code names.
//!
//! On `pub trait Greeter { async fn hello(&self, ctx: &Context, name: String) -> String; }` it
//! generates:
//!
//! | item | what it is |
//! |---|---|
//! | `trait Greeter` | the trait, each method returning a `Send` future; implement it with `async fn` |
//! | `GreeterHelloArgs` | one serde struct per method holding its arguments (not the context) |
//! | `GreeterClient<S>` | the client: `new(service)`, `with_context`, `with_codec`, `broadcast()`, `fork(n)`, `oneway()`, and `hello(name)` returning `Result<String, Status>` |
//! | `GreeterBroadcast<S>`, `GreeterFork<S>` | the client's views from `broadcast()` and `fork(n)` over a `Spread` (a `Client`, a server's `Peers`): `hello(name)` returning every endpoint's `(name, Result<String, Status>)`, or the first success and its endpoint |
//! | `GreeterOneway<S>` | the client's view from `oneway()`: its `#[zrpc(oneway)]` methods only, for a service that takes nothing else (an outbox's destination), so that a two-way call is a compile error |
//! | `GreeterServer<T>` | a `tower::Service<Request>` that calls a `T: Greeter`, and a `NamedService` for routing and reflection (`GreeterServer::<T>::descriptor()`: names, flags, arguments, types, docs) |
//!
//! A method is addressed on the wire as `"Greeter.hello"`. Options:
//!
//! | attribute | effect |
//! |---|---|
//! | `#[zrpc::service(name = "pkg.Greeter")]` | the service's wire name (default: the trait's name) |
//! | `#[zrpc::service(schema)]` | describe every argument, result and error type with its JSON Schema in reflection (zrpc's feature `schema`; the types must implement `schemars::JsonSchema`) |
//! | `#[zrpc::service(crate = "my_zrpc")]` | the path to zrpc in generated code (default: `::zrpc`) |
//! | `#[zrpc(name = "hi")]` on a method | the method's wire name (default: its Rust name) |
//! | `#[zrpc(idempotent)]` | the method may run twice: retries may resend it after a lost response |
//! | `#[zrpc(oneway)]` | no response: the client's future resolves once the request is sent |
//!
//! What a method returns decides what its caller gets:
//!
//! | declared return type | the client method returns | a failure travels as |
//! |---|---|---|
//! | `T` (including `Result<T, AppError>`) | `Result<T, Status>` | the application error inside the payload, typed |
//! | `Result<T, Status>` | `Result<T, Status>` | the handler's `zrpc::Status` as the call's error: code, message, details |
//!
//! Wire names starting with `zrpc.` are reserved for zrpc's built-in services (`zrpc.Reflection`).
//!
//! The second shape is recognised by its names: a path ending in `Result` whose error type is a
//! path ending in `Status`, which must be zrpc's (a compile error says so otherwise). Nest them,
//! `Result<Result<T, AppError>, Status>`, to have both.
//!
//! Doc comments carry over to the generated items and `#[cfg]` on a method gates everything
//! generated for it. Mistakes (a method that is not `async`, patterns as arguments, generics,
//! `self` by value, a method named like a client method, unknown options...) are compile
//! errors on the offending token that say how to fix them.
//!
//! Inside, as in thiserror's macro crate: `ast` reads the trait into one struct per method,
//! `attr` parses the macro's own attributes, `valid` checks everything and `expand` writes the
//! output.

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;
use quote::quote;

/// Turns a trait into a zrpc service: a server trait, a client stub and a server dispatcher.
///
/// See the [crate documentation](crate) for what is generated and the options.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    service_impl(args.into(), input.into()).into()
}

fn service_impl(args: proc_macro2::TokenStream, input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let mut item = match syn::parse2::<syn::Item>(input) {
        Ok(syn::Item::Trait(item)) => item,
        Ok(_) => {
            return syn::Error::new(
                proc_macro2::Span::call_site(),
                "`#[zrpc::service]` goes on a trait: `#[zrpc::service] pub trait Greeter { async fn hello(&self); }`",
            )
            .to_compile_error();
        }
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = valid::Errors::default();
    let args = attr::parse_service_args(args).unwrap_or_else(|e| {
        errors.push(e);
        attr::ServiceArgs::default()
    });
    let service = ast::Service::from_syn(args, &mut item, &mut errors);
    valid::check(&service, &mut errors);
    match errors.finish() {
        Ok(()) => expand::expand(&service),
        Err(e) => {
            let errors = e.to_compile_error();
            let fallback = expand::fallback(item);
            quote!(#errors #fallback)
        }
    }
}
