//! A `tracing` span per call on both sides over a real connection: the fields OpenTelemetry's
//! RPC conventions name, the outcome, and one W3C trace joining a client, its server, and the
//! server's own call downstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use zrpc::{Channel, Context, Server, Status};

/// The back office, called by the front desk.
#[zrpc::service]
pub trait Back {
    /// Looks `key` up; `NotFound` for anything but 1.
    async fn lookup(&self, key: u64) -> Result<String, Status>;
}

/// A handler that waits until its caller gives up.
#[zrpc::service]
pub trait Slow {
    /// Never answers.
    async fn wait(&self);
}

/// Says when its handler started and when the handler's future was dropped, which it logs.
struct Waiter {
    started: Arc<tokio::sync::Notify>,
    dropped: Arc<tokio::sync::Notify>,
}

/// Logs, and says, that the handler holding it was dropped.
struct LogOnDrop(Arc<tokio::sync::Notify>);

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        tracing::info!("handler dropped");
        self.0.notify_one();
    }
}

impl Slow for Waiter {
    async fn wait(&self) {
        let _guard = LogOnDrop(self.dropped.clone());
        self.started.notify_one();
        std::future::pending::<()>().await;
    }
}

/// The front desk, which asks the back office.
#[zrpc::service]
pub trait Front {
    /// Asks the back office for `key`, continuing the caller's trace.
    async fn ask(&self, ctx: &Context, key: u64) -> Result<String, Status>;
}

struct Office;

impl Back for Office {
    async fn lookup(&self, key: u64) -> Result<String, Status> {
        tracing::info!(key, "looking up");
        match key {
            1 => Ok("one".to_owned()),
            _ => Err(Status::not_found(format!("no {key}"))),
        }
    }
}

struct Desk {
    back: BackClient<Channel>,
}

impl Front for Desk {
    async fn ask(&self, ctx: &Context, key: u64) -> Result<String, Status> {
        self.back.with_context(ctx.child()).lookup(key).await
    }
}

/// A span as it closed: its name and every field recorded on it.
#[derive(Clone, Debug)]
struct Closed {
    name: &'static str,
    fields: HashMap<String, String>,
    /// Messages of the events recorded inside it.
    events: Vec<String>,
}

impl Closed {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Records every span's fields, and the spans in the order they closed.
#[derive(Clone, Default)]
struct Recorder {
    open: Arc<Mutex<HashMap<u64, Closed>>>,
    closed: Arc<Mutex<Vec<Closed>>>,
    /// Notified each time a span closes.
    closing: Arc<tokio::sync::Notify>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: LayerContext<'_, S>) {
        let mut span = Closed { name: attrs.metadata().name(), fields: HashMap::new(), events: Vec::new() };
        attrs.record(&mut Fields(&mut span.fields));
        self.open.lock().expect("not poisoned").insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        if let Some(span) = self.open.lock().expect("not poisoned").get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        if let Some(open) = self.open.lock().expect("not poisoned").get_mut(&span.id().into_u64()) {
            open.events.push(fields.remove("message").unwrap_or_default());
        }
    }

    fn on_close(&self, id: Id, _: LayerContext<'_, S>) {
        if let Some(span) = self.open.lock().expect("not poisoned").remove(&id.into_u64()) {
            self.closed.lock().expect("not poisoned").push(span);
        }
        self.closing.notify_waiters();
    }
}

impl Recorder {
    /// The closed spans named `name` whose `otel.name` is `otel_name`.
    fn spans(&self, name: &str, otel_name: &str) -> Vec<Closed> {
        let closed = self.closed.lock().expect("not poisoned");
        closed.iter().filter(|s| s.name == name && s.field("otel.name") == otel_name).cloned().collect()
    }

    /// Waits until a span named `name` whose `otel.name` is `otel_name` has closed, and returns
    /// the first.
    async fn closed(&self, name: &str, otel_name: &str) -> Closed {
        loop {
            // Listening before looking, so that a close in between is not missed.
            let closing = self.closing.notified();
            if let Some(span) = self.spans(name, otel_name).into_iter().next() {
                return span;
            }
            closing.await;
        }
    }
}

#[tokio::test]
async fn each_side_has_a_span_and_one_trace_joins_client_server_and_downstream() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));

    let back = Server::builder().name("back-1").add_service(BackServer::new(Office)).bind("tcp://127.0.0.1:0");
    let back = back.await.expect("bind");
    let back_channel = Channel::builder(back.local_addr().clone()).name("desk").connect_lazy();
    tokio::spawn(back.serve());
    let desk = Desk { back: BackClient::new(back_channel) };
    let front = Server::builder().name("front-1").add_service(FrontServer::new(desk)).bind("tcp://127.0.0.1:0");
    let front = front.await.expect("bind");
    let front_at = front.local_addr().clone();
    tokio::spawn(front.serve());
    let client = FrontClient::new(Channel::builder(front_at.clone()).name("visitor").connect_lazy());

    assert_eq!(client.ask(1).await.as_deref(), Ok("one"));
    let status = client.ask(2).await.expect_err("no 2");
    assert_eq!(status.message(), "no 2");

    let calls = recorder.spans("zrpc.client", "Front/ask");
    let served = recorder.spans("zrpc.server", "Front/ask");
    let downstream = recorder.spans("zrpc.client", "Back/lookup");
    let looked_up = recorder.spans("zrpc.server", "Back/lookup");
    assert_eq!([calls.len(), served.len(), downstream.len(), looked_up.len()], [2, 2, 2, 2]);

    for (i, code) in ["Ok", "NotFound"].into_iter().enumerate() {
        let (call, serve, down, lookup) = (&calls[i], &served[i], &downstream[i], &looked_up[i]);
        assert_eq!(
            [call.field("otel.kind"), call.field("rpc.system"), call.field("rpc.service"), call.field("rpc.method")],
            ["client", "zrpc", "Front", "ask"]
        );
        assert_eq!(call.field("peer"), front_at.to_string(), "a channel's calls name its endpoint");
        assert_eq!(serve.field("otel.kind"), "server");
        assert_eq!(serve.field("peer"), "visitor", "the server names the caller");
        for span in [call, serve, down, lookup] {
            assert_eq!(span.field("rpc.code"), code, "{span:?}");
            assert_eq!(span.field("otel.status_code"), if code == "Ok" { "" } else { "ERROR" }, "{span:?}");
            assert!(span.field("latency_us").parse::<u64>().is_ok(), "{span:?}");
            assert_eq!(span.field("trace_id"), call.field("trace_id"), "one trace: {span:?}");
        }
        assert_eq!(call.field("trace_id").len(), 32);
        // Each server's parent is the span of the client call that reached it.
        assert_eq!(serve.field("parent_span_id"), call.field("span_id"));
        assert_eq!(lookup.field("parent_span_id"), down.field("span_id"));
        assert_ne!(down.field("span_id"), serve.field("span_id"), "the downstream call is a span of its own");
        assert_eq!(lookup.events, ["looking up"], "the handler's events are inside its server span");
    }
    assert_ne!(calls[0].field("trace_id"), calls[1].field("trace_id"), "each call without a trace starts one");
}

#[tokio::test]
async fn a_handler_cut_short_is_dropped_inside_its_call_s_span() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let (started, dropped) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let waiter = Waiter { started: started.clone(), dropped: dropped.clone() };
    let server = Server::builder().name("slow-1").add_service(SlowServer::new(waiter)).bind("tcp://127.0.0.1:0");
    let server = server.await.expect("bind");
    let client = SlowClient::new(Channel::builder(server.local_addr().clone()).name("impatient").connect_lazy());
    tokio::spawn(server.serve());

    // The caller gives up once the handler runs: its CANCEL makes the server drop the handler.
    let call = tokio::spawn(async move { client.wait().await });
    started.notified().await;
    call.abort();
    dropped.notified().await;

    let served = recorder.closed("zrpc.server", "Slow/wait").await;
    assert_eq!(served.field("rpc.code"), "Cancelled", "{served:?}");
    assert_eq!(served.events, ["handler dropped"], "the handler's drop logs inside its span");
}

/// A durable receiver, whose handler logs one event.
#[cfg(feature = "durable")]
#[zrpc::service]
pub trait Ledger {
    /// Records entry `n`.
    #[zrpc(oneway)]
    async fn record(&self, n: u64);
}

#[cfg(feature = "durable")]
struct Books(tokio::sync::mpsc::UnboundedSender<u64>);

#[cfg(feature = "durable")]
impl Ledger for Books {
    async fn record(&self, n: u64) {
        tracing::info!("recording");
        let _ = self.0.send(n);
    }
}

#[cfg(feature = "durable")]
#[tokio::test]
async fn a_durable_message_is_handled_inside_a_server_span_naming_its_sender() {
    use zrpc::durable::{Inbox, InboxConfig, Outbox, OutboxConfig};

    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let dir = tempfile::tempdir().expect("temp dir");
    let inbox = Inbox::open(dir.path().join("inbox"), InboxConfig::default()).await.expect("inbox");
    let (handled, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::builder().name("ledger").inbox(inbox).add_service(LedgerServer::new(Books(handled)));
    let server = server.bind("tcp://127.0.0.1:0").await.expect("bind");
    let channel = Channel::builder(server.local_addr().clone()).name("shop-1").connect_lazy();
    tokio::spawn(server.serve());
    let outbox = Outbox::open(dir.path().join("outbox"), OutboxConfig::new("shop-1")).await.expect("outbox");
    LedgerClient::new(outbox.destination("ledger", channel)).record(7).await.expect("logged");
    assert_eq!(reports.recv().await, Some(7));

    let span = recorder.closed("zrpc.server", "Ledger/record");
    let handled = tokio::time::timeout(std::time::Duration::from_secs(60), span).await.expect("a server span closed");
    assert_eq!(handled.field("peer"), "shop-1", "the sender is the caller: {handled:?}");
    assert_eq!(handled.field("rpc.code"), "Ok", "{handled:?}");
    assert_eq!(handled.events, ["recording"], "the handler's events are inside its span");
}
