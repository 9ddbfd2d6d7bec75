//! The `#[zrpc::service]` attribute macro (placeholder while the macro is written).
use proc_macro::TokenStream;

/// Turns a trait into a zrpc service.
#[proc_macro_attribute]
pub fn service(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}
