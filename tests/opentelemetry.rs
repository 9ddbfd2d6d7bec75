//! With `tracing-opentelemetry`'s layer, a client's span and its server's span are exported as
//! one distributed trace: the server span's parent is the client span, across a real connection.

use opentelemetry::trace::{SpanKind, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use zrpc::{Channel, Server};

/// Echoes.
#[zrpc::service]
pub trait Echo {
    /// Returns `text`.
    async fn echo(&self, text: String) -> String;
}

struct Parrot;

impl Echo for Parrot {
    async fn echo(&self, text: String) -> String {
        text
    }
}

#[tokio::test]
async fn a_call_is_exported_as_one_trace_with_the_server_span_under_the_client_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("zrpc-test"));
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let server = Server::builder().name("echo-1").add_service(EchoServer::new(Parrot)).bind("tcp://127.0.0.1:0");
    let server = server.await.expect("bind");
    let client = EchoClient::new(Channel::builder(server.local_addr().clone()).name("caller").connect_lazy());
    tokio::spawn(server.serve());
    assert_eq!(client.echo("hi".into()).await.as_deref(), Ok("hi"));

    provider.force_flush().expect("flushed");
    let spans = exporter.get_finished_spans().expect("exported");
    let named = |kind: SpanKind| {
        let found: Vec<_> = spans.iter().filter(|s| s.span_kind == kind && s.name == "Echo/echo").collect();
        assert_eq!(
            found.len(),
            1,
            "one {kind:?} span named Echo/echo in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found[0]
    };
    let (client_span, server_span) = (named(SpanKind::Client), named(SpanKind::Server));
    assert_eq!(server_span.span_context.trace_id(), client_span.span_context.trace_id(), "one trace");
    assert_eq!(server_span.parent_span_id, client_span.span_context.span_id(), "the server span is the client's child");
    assert!(server_span.parent_span_is_remote, "its parent came over the wire");
}
