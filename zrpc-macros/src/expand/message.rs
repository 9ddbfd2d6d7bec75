//! The arguments structs, `XMethodArgs`: all the arguments of one call as one serde value,
//! whether there are several, one or none (in postcard the arguments one after the other, in
//! JSON an object keyed by argument name: `{"name":"zrpc"}` for one, `{}` for none), and the
//! compile-time checks that put a missing `Serialize` on the argument that lacks it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{LitStr, Type};

use super::private;
use crate::ast::{Method, Service};

/// The arguments structs and type checks of every method.
pub(crate) fn messages(service: &Service) -> TokenStream {
    service.methods.iter().map(|method| args_struct(service, method)).collect()
}

fn args_struct(service: &Service, method: &Method) -> TokenStream {
    let private = private(service);
    let krate = &service.krate;
    let serde_path = LitStr::new(&format!("{}::__private::serde", quote!(#krate)).replace(' ', ""), krate.span());
    let vis = service.vis();
    let cfgs: Vec<_> = method.cfgs().collect();
    let name = &method.args_struct;
    let name_str = name.to_string();
    let doc = format!("The arguments of [`{}::{}`], sent together as one value.", service.ident(), method.ident());
    let fields = method.args.iter().map(|arg| {
        let doc = format!("The `{}` argument.", arg.name);
        let (ident, ty) = (&arg.name, &arg.ty);
        quote! {
            #[doc = #doc]
            #vis #ident: #ty,
        }
    });
    let checks = method.args.iter().map(|arg| &arg.ty).chain(method.payload_type()).map(|ty| wire_check(&private, ty));
    // The checks come first: rustc then reports the clear "cannot travel in a zrpc call" before
    // the errors of serde's derives on the same types.
    quote! {
        #(#cfgs)*
        const _: fn() = || {
            #(#checks)*
        };

        #(#cfgs)*
        #[doc = #doc]
        #[derive(#private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #vis struct #name {
            #(#fields)*
        }

        // By hand: a derive would require every argument type to be `Debug`.
        #(#cfgs)*
        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name_str).finish_non_exhaustive()
            }
        }
    }
}

/// `assert_wire::<T>()`, spanned on `T` so that a type without serde is reported there.
fn wire_check(private: &TokenStream, ty: &Type) -> TokenStream {
    quote_spanned! {ty.span()=>
        #private::assert_wire::<#ty>();
    }
}
