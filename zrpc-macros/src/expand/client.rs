//! The client stub, `XClient<S>`: one method per service method, which encodes the arguments
//! and sends them through any `tower::Service<Request>` (a connection, a balanced channel with
//! retries, or an `XServer` called in-process).
//!
//! The per-call `Context` is not an argument of the client methods: it
//! comes from `with_context`, so that call sites stay as short as the trait's signature.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

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
    let broadcast = format_ident!("{}Broadcast", trait_ident);
    let fork = format_ident!("{}Fork", trait_ident);
    let spread = spread_views(service, &broadcast, &fork);
    let oneway = format_ident!("{}Oneway", trait_ident);
    let oneway_view = oneway_view(service, &oneway);
    let call_bounds = call_bounds(service);
    let client_struct = view_struct(service, &doc, &client, quote!());
    quote! {
        #client_struct

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

            /// A view of this client whose calls go to every endpoint at once, each answering
            /// for itself: over a `zrpc::Client`, every endpoint discovery gives it; over a
            /// `zrpc::Peers`, every connected peer. See `zrpc::spread`.
            #vis fn broadcast(&self) -> #broadcast<S>
            where
                S: ::core::clone::Clone,
            {
                #broadcast { inner: ::core::clone::Clone::clone(&self.inner), ctx: ::core::clone::Clone::clone(&self.ctx), codec: self.codec }
            }

            /// A view of this client with its oneway methods only: what an outbox's destination
            /// takes (`zrpc::durable`), so that a two-way call through one is a compile error
            /// rather than an `InvalidArgument` at run time.
            #vis fn oneway(&self) -> #oneway<S>
            where
                S: ::core::clone::Clone,
            {
                #oneway { inner: ::core::clone::Clone::clone(&self.inner), ctx: ::core::clone::Clone::clone(&self.ctx), codec: self.codec }
            }

            /// A view of this client whose calls go to `n` endpoints at once (all when `n` is 0)
            /// and answer with the first success and the endpoint that gave it; the other calls
            /// are cancelled. See `zrpc::spread`.
            #vis fn fork(&self, n: usize) -> #fork<S>
            where
                S: ::core::clone::Clone,
            {
                #fork { inner: ::core::clone::Clone::clone(&self.inner), ctx: ::core::clone::Clone::clone(&self.ctx), codec: self.codec, n }
            }
        }

        impl<S> #client<S> #call_bounds {
            #(#methods)*
        }

        #spread

        #oneway_view
    }
}

/// `XOneway<S>`: the client's oneway methods, and no other.
fn oneway_view(service: &Service, oneway: &Ident) -> TokenStream {
    let trait_ident = service.ident();
    let client = format_ident!("{}Client", trait_ident);
    let doc = format!(
        "[`{client}`]'s oneway methods and no other, from [`{client}::oneway`]: for a service that takes only \
         oneway calls, such as an outbox's destination (`zrpc::durable`)."
    );
    let methods =
        service.methods.iter().filter(|method| method.oneway.is_some()).map(|method| call_method(service, method));
    let call_bounds = call_bounds(service);
    let oneway_struct = view_struct(service, &doc, oneway, quote!());
    quote! {
        #oneway_struct

        impl<S> #oneway<S> #call_bounds {
            #(#methods)*
        }
    }
}

/// The struct of the client or one of its views: the service calls go through, the context
/// and codec they carry, then `extra` fields.
fn view_struct(service: &Service, doc: &str, ident: &Ident, extra: TokenStream) -> TokenStream {
    let private = private(service);
    let vis = service.vis();
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #ident<S> {
            inner: S,
            ctx: #private::Context,
            codec: #private::CodecId,
            #extra
        }
    }
}

/// The `where` clause of the views that call through `S`: a cloneable `Send` service of
/// requests.
fn call_bounds(service: &Service) -> TokenStream {
    let private = private(service);
    quote! {
        where
            S: #private::tower::Service<#private::Request, Response = #private::Response, Error = #private::Status>
                + ::core::clone::Clone
                + ::core::marker::Send
                + 'static,
            <S as #private::tower::Service<#private::Request>>::Future: ::core::marker::Send,
    }
}

/// One call method: builds the arguments struct and hands it to `__private::call`.
fn call_method(service: &Service, method: &Method) -> TokenStream {
    let private = private(service);
    let vis = service.vis();
    let cfgs = method.cfgs();
    let name = method.ident();
    let mut docs: Vec<TokenStream> = method.docs().map(|doc| quote!(#doc)).collect();
    if docs.is_empty() {
        let doc =
            format!("Calls [`{}::{name}`] (`{}`) on the server.", service.ident(), service.full_name(method).value());
        docs.push(quote!(#[doc = #doc]));
    }
    let (params, sent) = call_pieces(service, method);
    let call = if method.oneway.is_some() { quote!(call_oneway) } else { quote!(call) };
    let output = answer_type(method);
    quote! {
        #(#cfgs)*
        #(#docs)*
        #vis fn #name(&self, #(#params),*)
            -> impl ::core::future::Future<Output = ::core::result::Result<#output, #private::Status>>
                + ::core::marker::Send
                + 'static
        {
            #private::#call(#sent)
        }
    }
}

/// What a successful call answers: the payload's type, `()` for a oneway method.
fn answer_type(method: &Method) -> TokenStream {
    match (method.payload_type(), method.oneway) {
        (Some(ty), None) => quote!(#ty),
        _ => quote!(()),
    }
}

/// What every view's call method shares: its parameters, and the arguments every `__private`
/// call function starts with (`&self.inner, &self.ctx, self.codec, &MethodInfo, ArgsStruct`).
fn call_pieces(service: &Service, method: &Method) -> (Vec<TokenStream>, TokenStream) {
    let private = private(service);
    let full = service.full_name(method);
    let params = method
        .args
        .iter()
        .map(|arg| {
            let (ident, ty) = (&arg.name, &arg.ty);
            quote!(#ident: #ty)
        })
        .collect();
    let fields = method.args.iter().map(|arg| &arg.name);
    let args_struct = &method.args_struct;
    let (idempotent, oneway) = (method.idempotent, method.oneway.is_some());
    let sent = quote! {
        &self.inner,
        &self.ctx,
        self.codec,
        &#private::MethodInfo { name: #full, idempotent: #idempotent, oneway: #oneway },
        #args_struct { #(#fields),* },
    };
    (params, sent)
}

/// `XBroadcast<S>` and `XFork<S>`: the client's methods over a `Spread`, answering per endpoint.
fn spread_views(service: &Service, broadcast: &Ident, fork: &Ident) -> TokenStream {
    let private = private(service);
    let trait_ident = service.ident();
    let client = format_ident!("{}Client", trait_ident);
    let broadcast_doc = format!(
        "[`{client}`]'s calls sent to every endpoint at once, from [`{client}::broadcast`]: each method answers with \
         every endpoint's name and result."
    );
    let fork_doc = format!(
        "[`{client}`]'s calls sent to several endpoints at once, from [`{client}::fork`]: each method answers with \
         the first success and the endpoint that gave it."
    );
    let broadcasts = service.methods.iter().map(|method| spread_method(service, method, Spread::Broadcast));
    let forks = service.methods.iter().map(|method| spread_method(service, method, Spread::Fork));
    let bounds = quote!(S: #private::Spread);
    let broadcast_struct = view_struct(service, &broadcast_doc, broadcast, quote!());
    let fork_struct = view_struct(service, &fork_doc, fork, quote!(n: usize,));
    quote! {
        #broadcast_struct

        impl<S> #broadcast<S> where #bounds {
            #(#broadcasts)*
        }

        #fork_struct

        impl<S> #fork<S> where #bounds {
            #(#forks)*
        }
    }
}

#[derive(Clone, Copy)]
enum Spread {
    Broadcast,
    Fork,
}

/// One method of a spread view: as the client's, answering per endpoint.
fn spread_method(service: &Service, method: &Method, spread: Spread) -> TokenStream {
    let private = private(service);
    let vis = service.vis();
    let cfgs = method.cfgs();
    let name = method.ident();
    let full = service.full_name(method).value();
    let (params, sent) = call_pieces(service, method);
    let answer = answer_type(method);
    let (output, call, doc) = match spread {
        Spread::Broadcast => (
            quote!(#private::Answers<#answer>),
            quote!(#private::broadcast(#sent)),
            format!("Calls `{full}` on every endpoint at once: each endpoint's name with its result."),
        ),
        Spread::Fork => (
            quote!(::core::result::Result<(::std::sync::Arc<str>, #answer), #private::Status>),
            quote!(#private::fork(#sent self.n)),
            format!("Calls `{full}` on several endpoints at once: the first success and its endpoint."),
        ),
    };
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #vis fn #name(&self, #(#params),*) -> impl ::core::future::Future<Output = #output> + ::core::marker::Send + 'static {
            #call
        }
    }
}
