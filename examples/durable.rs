//! Durable calls: kill this program whenever you like, start it again, and nothing is lost or
//! done twice.
//!
//! One process plays both ends. A receiver (a server named `receiver` with an inbox) counts
//! messages; a sender logs numbered messages in its outbox, and the outbox's delivery task
//! delivers them to the receiver in order. Everything lives in one directory
//! (`target/durable-example/` unless `--dir` says otherwise): the outbox, the inbox, and
//! `handled.log`, the receiver's effect, one line per message.
//!
//! ```text
//! cargo run --example durable --features durable                 # press Ctrl-C mid-run
//! cargo run --example durable --features durable                 # and start it again
//! cargo run --example durable --features durable -- --messages 1000 --fresh    # as CI runs it
//! ```
//!
//! Ctrl-C ends the process at once, as a crash would: the example installs no handler. Each
//! start prints what was still waiting in the outbox and what the receiver had handled, sends
//! the rest up to `--messages` (20,000 by default; counted over every run in the directory),
//! waits until every message is handled and acknowledged, and ends by checking `handled.log`:
//! every message in it exactly once.
//!
//! Why that holds (the module docs of `zrpc::durable`, "The exact guarantee"):
//!
//! - a call returns once its message is in the outbox's log, and the delivery task resends from
//!   the first unacknowledged message after any crash, so nothing logged is lost;
//! - the inbox records each message (sender, outbox, sequence) before acknowledging it and
//!   ignores a redelivered one, so a message is handled once, except that
//! - a handler the crash interrupted runs again, with the same id. This handler is idempotent
//!   the way the docs advise: its effect (a line in `handled.log`) carries the message's
//!   sequence, and a message at or below the last sequence in the file is recognised and
//!   skipped. The example counts those reruns.
//!
//! The sender numbers messages by their sequence: message `n` is the outbox's `n`th message. A
//! restarted sender resumes at the outbox's next sequence (`Outbox::next_sequence`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use zrpc::durable::{Inbox, InboxConfig, Outbox, OutboxConfig};
use zrpc::{Channel, Context, Server};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A counter that is told numbers.
#[zrpc::service]
pub trait Counter {
    /// Counts message `n`. Oneway: only oneway methods can be called durably.
    #[zrpc(oneway)]
    async fn add(&self, ctx: &Context, n: u64);
}

/// The receiver's state: `handled.log` and the last sequence in it.
struct Handled {
    file: File,
    last: u64,
    /// Handlers that ran again after a crash inside them, recognised by their id.
    reruns: u64,
}

#[derive(Clone)]
struct Receiver {
    handled: Arc<Mutex<Handled>>,
    /// The last sequence handled, for the sender's side to wait on.
    progress: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Counter for Receiver {
    async fn add(&self, ctx: &Context, n: u64) {
        let Some(id) = ctx.durable_id() else {
            eprintln!("message {n} was not sent through an outbox; ignored");
            return;
        };
        let mut handled = match self.handled.lock() {
            Ok(handled) => handled,
            Err(poisoned) => poisoned.into_inner(),
        };
        if id.sequence() <= handled.last {
            // Already in handled.log: the process stopped after the effect and before the
            // inbox recorded that the handler had returned.
            handled.reruns += 1;
            println!("{id} ran again after a crash inside its handler: already handled, skipped");
            return;
        }
        // The effect and the id in one write, so that neither is on disk without the other.
        if let Err(e) = handled.file.write_all(format!("{} {n}\n", id.sequence()).as_bytes()) {
            eprintln!("writing handled.log: {e}");
            std::process::exit(1);
        }
        handled.last = id.sequence();
        self.progress.send_replace(id.sequence());
    }
}

/// The command line: `--messages N`, `--dir DIR`, `--fresh`.
struct Args {
    messages: u64,
    dir: PathBuf,
    fresh: bool,
}

fn args() -> Result<Args, BoxError> {
    let mut args = Args { messages: 20_000, dir: PathBuf::from("target/durable-example"), fresh: false };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--messages" => args.messages = words.next().ok_or("--messages needs a number")?.parse()?,
            "--dir" => args.dir = words.next().ok_or("--dir needs a path")?.into(),
            "--fresh" => args.fresh = true,
            other => return Err(format!("unknown argument {other:?}: use --messages N, --dir DIR, --fresh").into()),
        }
    }
    Ok(args)
}

/// `handled.log` as (sequence → how many lines), how many lines did not parse (a line a
/// crash cut short: its handler had not returned, so it runs again), and whether the file
/// ends in a newline.
fn read_handled(path: &Path) -> Result<(BTreeMap<u64, u64>, usize, bool), BoxError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let mut seen = BTreeMap::new();
    let mut torn = 0;
    for line in text.lines().filter(|line| !line.is_empty()) {
        match line.split_once(' ').map(|(sequence, n)| (sequence.parse::<u64>(), n.parse::<u64>())) {
            Some((Ok(sequence), Ok(n))) if sequence == n => *seen.entry(n).or_insert(0) += 1,
            _ => torn += 1,
        }
    }
    Ok((seen, torn, text.is_empty() || text.ends_with('\n')))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = args()?;
    if args.fresh {
        match std::fs::remove_dir_all(&args.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    std::fs::create_dir_all(&args.dir)?;
    let log = args.dir.join("handled.log");

    // What the last run left.
    let (seen, torn, whole) = read_handled(&log)?;
    let last = seen.keys().next_back().copied().unwrap_or(0);
    println!("directory {}", args.dir.display());
    println!("receiver: {} messages handled so far (the last {last})", seen.len());
    if torn > 0 {
        println!("receiver: {torn} lines of handled.log cut short by a crash (their messages run again)");
    }

    // The receiver.
    let inbox = Inbox::open(args.dir.join("inbox"), InboxConfig::default()).await?;
    let mut file = OpenOptions::new().create(true).append(true).open(&log)?;
    if !whole {
        // The last line was cut short: what follows starts a line of its own.
        file.write_all(b"\n")?;
    }
    let (progress, mut handled_up_to) = tokio::sync::watch::channel(last);
    let receiver =
        Receiver { handled: Arc::new(Mutex::new(Handled { file, last, reruns: 0 })), progress: Arc::new(progress) };
    let server = Server::builder()
        .name("receiver")
        .inbox(inbox.clone())
        .add_service(CounterServer::new(receiver.clone()))
        .bind("tcp://127.0.0.1:0")
        .await?;
    let address = server.local_addr().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));

    // The sender.
    let outbox = Outbox::open(args.dir.join("outbox"), OutboxConfig::new("sender")).await?;
    let next = outbox.next_sequence("receiver").await?;
    match outbox.pending().await?.iter().find(|pending| pending.destination == "receiver") {
        Some(pending) => println!(
            "outbox: {} messages were waiting for receiver (sequences {} to {}): delivering them",
            pending.next_sequence - pending.first_unacknowledged,
            pending.first_unacknowledged,
            pending.next_sequence - 1
        ),
        None => println!("outbox: nothing waiting"),
    }
    let channel = Channel::builder(address).name("sender").connect_lazy();
    let destination = outbox.destination("receiver", channel);
    let counter = CounterClient::new(destination.clone());
    if next <= args.messages {
        println!("sender: sending messages {next} to {} (Ctrl-C at any time, then run again)", args.messages);
    }
    let step = (args.messages / 10).max(1);
    for n in next..=args.messages {
        counter.add(n).await?;
        if n % step == 0 {
            println!("sender: {n} messages logged in the outbox, receiver has handled {}", *handled_up_to.borrow());
        }
    }

    // Every message handled, and every acknowledgement in the outbox's log (a receiver in
    // another process would make this wait for the network; here it is a moment).
    handled_up_to.wait_for(|handled| *handled >= args.messages).await?;
    destination.delivered().await?;
    let _ = stop.send(());
    serving.await??;
    outbox.close().await?;
    inbox.close().await?;

    // The check: every message in handled.log, once.
    let reruns = receiver.handled.lock().map_or_else(|poisoned| poisoned.into_inner().reruns, |h| h.reruns);
    let (seen, _, _) = read_handled(&log)?;
    let twice: Vec<u64> = seen.iter().filter(|(_, count)| **count > 1).map(|(n, _)| *n).collect();
    let missing = (1..=args.messages).filter(|n| !seen.contains_key(n)).count();
    if twice.is_empty() && missing == 0 {
        println!(
            "every one of the {} messages sent was handled exactly once (this run recognised {reruns} handler \
             runs after a crash by their id and skipped them)",
            args.messages
        );
        Ok(())
    } else {
        Err(format!("{missing} messages never handled; handled twice: {twice:?}").into())
    }
}
