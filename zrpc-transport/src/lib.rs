//! zrpc transport (placeholder).
