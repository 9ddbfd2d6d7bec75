//! The expansion names everything by absolute path: it compiles without the prelude.
#![no_implicit_prelude]

/// A service whose own types are spelled out, as the prelude is gone.
#[::zrpc::service]
pub trait Echo {
    /// Echoes `text`, `times` times.
    async fn echo(&self, ctx: &::zrpc::Context, text: ::std::string::String, times: u32) -> ::std::string::String;
    /// Fails when asked to.
    #[zrpc(idempotent)]
    async fn check(&self, fail: bool) -> ::core::result::Result<u8, ::std::string::String>;
    /// Nothing back.
    #[zrpc(oneway, name = "fire")]
    async fn forget(&self);
    /// Fails the call with a status when asked to.
    async fn refuse(&self, refuse: bool) -> ::core::result::Result<u8, ::zrpc::Status>;
}

struct Impl;

impl Echo for Impl {
    async fn echo(&self, _ctx: &::zrpc::Context, text: ::std::string::String, times: u32) -> ::std::string::String {
        text.repeat(times as usize)
    }

    async fn check(&self, fail: bool) -> ::core::result::Result<u8, ::std::string::String> {
        if fail {
            ::core::result::Result::Err(::std::convert::From::from("asked to"))
        } else {
            ::core::result::Result::Ok(1)
        }
    }

    async fn forget(&self) {}

    async fn refuse(&self, refuse: bool) -> ::core::result::Result<u8, ::zrpc::Status> {
        if refuse {
            ::core::result::Result::Err(::zrpc::Status::aborted("asked to"))
        } else {
            ::core::result::Result::Ok(2)
        }
    }
}

#[::core::prelude::v1::test]
fn calls_work_without_the_prelude() {
    let runtime = ::tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async {
        let client = EchoClient::new(EchoServer::new(Impl));
        let echoed = client.echo(::std::convert::From::from("ab"), 3).await.expect("call succeeds");
        ::std::assert_eq!(echoed, "ababab");
        ::std::assert_eq!(
            client.check(true).await.expect("call succeeds"),
            ::core::result::Result::Err(::std::convert::From::from("asked to"))
        );
        client.forget().await.expect("call succeeds");
        ::std::assert_eq!(client.refuse(false).await, ::core::result::Result::Ok(2));
        let refused = client.refuse(true).await.expect_err("the handler refuses");
        ::std::assert_eq!((refused.code(), refused.message()), (::zrpc::Code::Aborted, "asked to"));
    });
}
