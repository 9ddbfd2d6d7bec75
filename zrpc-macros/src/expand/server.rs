//! The server side: the trait users implement, rewritten so that its futures are `Send`, and
//! `XServer<T>`, a `tower::Service` that decodes a request's arguments, calls the matching
//! method of `T` and encodes its result.
//!
//! Dispatch is by wire name, `"Service.method"`: a request for another service or an unknown
//! method is answered with `NotFound` naming it, never ignored.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;
use syn::spanned::Spanned;

use super::private;
use crate::ast::{Method, Service};

/// The trait as users implement it: same name, docs and methods, each method returning a
/// `Send` future (an `async fn` in the `impl` satisfies it when its future is `Send`).
pub(crate) fn service_trait(service: &Service) -> TokenStream {
    let item = &service.item;
    let (attrs, vis, ident) = (&item.attrs, &item.vis, &item.ident);
    let supertraits = item.supertraits.iter();
    let methods = service.methods.iter().map(|method| {
        let attrs = &method.attrs;
        let name = method.ident();
        let ctx = method.ctx.as_ref().map(|ctx| {
            let (ident, ty) = (&ctx.name, &ctx.ty);
            quote!(#ident: #ty,)
        });
        let args = method.args.iter().map(|arg| {
            let (ident, ty) = (&arg.name, &arg.ty);
            quote!(#ident: #ty)
        });
        let output = method.output.as_ref().map_or_else(|| quote!(()), |ty| quote!(#ty));
        quote! {
            #(#attrs)*
            fn #name(&self, #ctx #(#args),*)
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
        }
    });
    quote! {
        #(#attrs)*
        #vis trait #ident: #(#supertraits +)* ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
    }
}

/// `XServer<T>` and its `NamedService` and `tower::Service` impls.
pub(crate) fn server(service: &Service) -> TokenStream {
    let private = private(service);
    let (vis, trait_ident) = (service.vis(), service.ident());
    let server = format_ident!("{}Server", trait_ident);
    let client = format_ident!("{}Client", trait_ident);
    let server_name = server.to_string();
    let wire = &service.wire_name.value;
    let doc = format!(
        "Serves an implementation of [`{trait_ident}`]: a `tower::Service` answering the methods of service \
         `{wire}`.\n\nAdd it to a server, or wrap it in [`{client}::new`] to call the implementation in-process."
    );
    let methods = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let full = service.full_name(method);
        quote!(#(#cfgs)* #full,)
    });
    let arms = service.methods.iter().map(|method| arm(service, method));
    let descriptor = super::descriptor::descriptor(service);
    quote! {
        #[doc = #doc]
        #vis struct #server<T> {
            inner: ::std::sync::Arc<T>,
        }

        impl<T> #server<T> {
            /// Serves `inner`.
            #vis fn new(inner: T) -> Self {
                Self::from_arc(::std::sync::Arc::new(inner))
            }

            /// Serves an implementation that is already shared.
            #vis fn from_arc(inner: ::std::sync::Arc<T>) -> Self {
                Self { inner }
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: ::core::clone::Clone::clone(&self.inner) }
            }
        }

        impl<T> ::core::fmt::Debug for #server<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#server_name).finish_non_exhaustive()
            }
        }

        impl<T: #trait_ident> #private::NamedService for #server<T> {
            const NAME: &'static str = #wire;
            const METHODS: &'static [&'static str] = &[#(#methods)*];

            #descriptor
        }

        impl<T: #trait_ident> #private::tower::Service<#private::Request> for #server<T> {
            type Response = #private::Response;
            type Error = #private::Status;
            type Future = #private::futures::future::BoxFuture<
                'static,
                ::core::result::Result<#private::Response, #private::Status>,
            >;

            fn poll_ready(
                &mut self,
                _: &mut ::core::task::Context<'_>,
            ) -> ::core::task::Poll<::core::result::Result<(), #private::Status>> {
                ::core::task::Poll::Ready(::core::result::Result::Ok(()))
            }

            fn call(&mut self, req: #private::Request) -> Self::Future {
                // By the full name: no search for the dot on every call.
                match req.method().as_str() {
                    #(#arms)*
                    _ => #private::unknown_method::<Self>(&req),
                }
            }
        }
    }
}

/// `"method" => boxed(async { decode, call the method, encode })`; see `Served` for why
/// decoding happens inside the future.
fn arm(service: &Service, method: &Method) -> TokenStream {
    let private = private(service);
    let trait_ident = service.ident();
    let cfgs = method.cfgs();
    let full = service.full_name(method);
    let name = method.ident();
    let args_struct = &method.args_struct;
    // The request is taken apart before the future is built: the future keeps the payload
    // (until the arguments are decoded from it) and the context if the method takes one, not
    // the whole request. What the future captures it holds to the end, in every state.
    let (ctx_param, ctx_arg) = match method.ctx {
        Some(_) => (quote!(ctx), quote!(&ctx,)),
        None => (quote!(_), quote!()),
    };
    // The arguments struct is taken apart where it is decoded, each field into a binding of its
    // own that the call then moves out whole. A struct whose fields were moved out one by one
    // kept its storage in the future across the await: for a method of one large argument,
    // the future held it twice. The benchmark's echo future: 960 bytes, 640 with the bindings,
    // 424 with the request taken apart as above. `mixed_site`: the bindings cannot shadow, or
    // be shadowed by, anything the user names.
    let fields: Vec<_> = method.args.iter().map(|arg| &arg.name).collect();
    let bindings: Vec<_> = (0..fields.len()).map(|i| Ident::new(&format!("arg{i}"), Span::mixed_site())).collect();
    let args_param = quote!(#args_struct { #(#fields: #bindings),* });
    let output = quote!(<T as #trait_ident>::#name(&*inner, #ctx_arg #(#bindings),*).await);
    // A `Result<T, Status>` answers `T` or fails the call with the status; any other type is
    // the answer, application errors included, encoded where the await left it (by reference).
    // The name is spanned on `Status` as written: when it is not zrpc's, the error points there.
    let respond = match &method.fallible {
        Some(fallible) => {
            let respond = Ident::new("respond_fallible", fallible.status.span());
            quote!(served.#respond(#output))
        }
        None => quote!(served.respond(&#output)),
    };
    quote! {
        #(#cfgs)*
        #full => {
            let inner = ::core::clone::Clone::clone(&self.inner);
            let served = #private::Served::new(&req);
            let (#ctx_param, payload) = req.into_parts();
            #private::boxed(#full, async move {
                let #args_param = served.decode::<#args_struct>(&payload)?;
                ::core::mem::drop(payload);
                #respond
            })
        }
    }
}
