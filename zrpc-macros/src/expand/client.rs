//! The client stub, `XClient<S>`: one method per service method, which encodes the arguments
//! and sends them through any `tower::Service<Request>` (a connection, a balanced channel with
//! retries, or an `XServer` called in-process).
//!
//! The per-call `Context` is not an argument of the client methods: it
//! comes from `with_context`, so that call sites stay as short as the trait's signature.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::private;
use crate::ast::{Method, Service};

/// `XClient<S>`, its constructors and its call methods.
pub(crate) fn client(service: &Service) -> TokenStream {
    let private = private(service);
    let (vis, trait_ident) = (service.vis(), service.ident());
    let client = format_ident!("{}Client", trait_ident);
    let server = format_ident!("{}Server", trait_ident);
    let doc = format!(
        "Calls the [`{trait_ident}`] service (wire name `{}`) through any `tower::Service<Request>`: a \
         connection, a balanced channel, or a [`{server}`] in-process.",
        service.wire_name.value
    );
    let methods = service.methods.iter().map(|method| call_method(service, method));
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client<S> {
            inner: S,
            ctx: #private::Context,
            codec: #private::CodecId,
        }

        impl<S> #client<S> {
            /// A client that sends its calls through `inner`, with an empty context and the
            /// default codec.
            #vis fn new(inner: S) -> Self {
                Self {
                    inner,
                    ctx: #private::Context::new(),
                    codec: <#private::CodecId as ::core::default::Default>::default(),
                }
            }

            /// A copy of this client whose calls carry `ctx`: deadline, metadata, trace and
            /// balancing hints.
            #vis fn with_context(&self, ctx: #private::Context) -> Self
            where
                S: ::core::clone::Clone,
            {
                Self { inner: ::core::clone::Clone::clone(&self.inner), ctx, codec: self.codec }
            }

            /// A copy of this client that encodes its calls with `codec`.
            #vis fn with_codec(&self, codec: #private::CodecId) -> Self
            where
                S: ::core::clone::Clone,
            {
                Self {
                    inner: ::core::clone::Clone::clone(&self.inner),
                    ctx: ::core::clone::Clone::clone(&self.ctx),
                    codec,
                }
            }

            /// The service calls are sent through.
            #vis fn inner(&self) -> &S {
                &self.inner
            }

            /// Takes the service calls are sent through.
            #vis fn into_inner(self) -> S {
                self.inner
            }
        }

        impl<S> #client<S>
        where
            S: #private::tower::Service<#private::Request, Response = #private::Response, Error = #private::Status>
                + ::core::clone::Clone
                + ::core::marker::Send
                + 'static,
            <S as #private::tower::Service<#private::Request>>::Future: ::core::marker::Send,
        {
            #(#methods)*
        }
    }
}

/// One call method: builds the arguments struct and hands it to `__private::call`.
fn call_method(service: &Service, method: &Method) -> TokenStream {
    let private = private(service);
    let vis = service.vis();
    let cfgs = method.cfgs();
    let name = method.ident();
    let full = service.full_name(method);
    let mut docs: Vec<TokenStream> = method.docs().map(|doc| quote!(#doc)).collect();
    if docs.is_empty() {
        let doc = format!("Calls [`{}::{name}`] (`{}`) on the server.", service.ident(), full.value());
        docs.push(quote!(#[doc = #doc]));
    }
    let params = method.args.iter().map(|arg| {
        let (ident, ty) = (&arg.name, &arg.ty);
        quote!(#ident: #ty)
    });
    let fields = method.args.iter().map(|arg| &arg.name);
    let args_struct = &method.args_struct;
    let idempotent = method.idempotent;
    let oneway = method.oneway.is_some();
    let (output, call) = match (method.payload_type(), oneway) {
        (_, true) => (quote!(()), quote!(call_oneway)),
        (Some(ty), false) => (quote!(#ty), quote!(call)),
        (None, false) => (quote!(()), quote!(call)),
    };
    quote! {
        #(#cfgs)*
        #(#docs)*
        #vis fn #name(&self, #(#params),*)
            -> impl ::core::future::Future<Output = ::core::result::Result<#output, #private::Status>>
                + ::core::marker::Send
                + 'static
        {
            #private::#call(
                &self.inner,
                &self.ctx,
                self.codec,
                &#private::MethodInfo { name: #full, idempotent: #idempotent, oneway: #oneway },
                #args_struct { #(#fields),* },
            )
        }
    }
}
