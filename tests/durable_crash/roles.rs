//! The two child processes: the sender (an outbox and a destination) and the receiver (a
//! server with an inbox whose handler writes the journal). The driver starts this test binary
//! again with [`ROLE_ENV`] set, and the test function hands over to [`run`], which never
//! returns.
//!
//! Both print their protocol lines on stdout (each line one `write` to a pipe, which a kill
//! cannot cut short), prefixed by a newline of their own since the test harness may have printed
//! part of a line before:
//!
//! - receiver: `listening <address>`, then a copy of each journal line after it is in the file
//!   (the driver counts them as progress; the checker reads the file);
//! - sender: `ready <next n>`, `logged <n>` after each call returned, `done` after the last.
//!
//! Each exits when its stdin closes (the driver is done, or died).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use zrpc::durable::{Durability, Inbox, InboxConfig, Outbox, OutboxConfig};
use zrpc::{Channel, Context, Server};

use crate::driver::JOURNAL;
use crate::plan::{LEVEL_ENV, Level, MESSAGES_ENV};

/// Which role a child plays: `sender` or `receiver`.
pub(crate) const ROLE_ENV: &str = "ZRPC_CRASH_ROLE";
/// The run's directory (outbox, inbox, journal, socket).
pub(crate) const DIR_ENV: &str = "ZRPC_CRASH_DIR";
/// Where the receiver listens: a Unix socket in the run's directory, the same for every
/// receiver process, so the sender's channel finds a restarted receiver where it was.
pub(crate) const ADDRESS_ENV: &str = "ZRPC_CRASH_ADDRESS";

/// The sender's name, in its outbox and in the ids.
const SENDER: &str = "sender";
/// The receiver's name: its HELLO name, which the outbox's destination must match.
const RECEIVER: &str = "receiver";
/// Segments of both logs: small, so that kills land while a log rolls to a new segment or
/// compacts, and a reopen replays one small segment after its checkpoint (with the default
/// 64 MiB, a long run's restarts each replayed tens of MB, and the other process's progress
/// during them used up the kills' share of the run).
const SEGMENT_BYTES: u64 = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A child's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Sender,
    Receiver,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// What the receiver serves: the durable `add`.
#[zrpc::service]
pub trait Counter {
    /// Message `n`: journals its start and end.
    #[zrpc(oneway)]
    async fn add(&self, ctx: &Context, n: u64);
}

/// Plays `role` (from [`ROLE_ENV`]) and exits the process.
pub(crate) fn run(role: &str) -> ! {
    // The driver's lines (`fence`) reach the role through `told`; the child exits when the
    // driver closes its stdin, or dies.
    let (tell, told) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            let _ = tell.send(line);
        }
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(async {
            match role {
                "sender" => sender(told).await,
                "receiver" => receiver().await,
                other => Err(format!("{ROLE_ENV}={other:?}: expected sender or receiver").into()),
            }
        }),
        Err(e) => Err(e.into()),
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("the {role} failed: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|e| format!("{name}: {e}").into())
}

fn level() -> Result<Durability, BoxError> {
    Ok(match Level::parse(&env(LEVEL_ENV)?)? {
        Level::Process => Durability::Process,
        Level::Power => Durability::Power,
    })
}

/// One protocol line on stdout, in one `write`.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// The sender: resumes after the last message its outbox logged, sends up to the total, then
/// the fence (message `total + 1`) when the driver says `fence`, and stays until the driver is
/// done (its delivery task is still sending).
///
/// Where to resume is the crux. The call returns once the message is logged, and the process
/// may be killed before it prints `logged n`; a sender that resumed after the last `n` it
/// printed would send that `n` again as a new message, under a new sequence. So `n` is never
/// chosen by the sender: message `n` is the `n`th message of the outbox to the receiver, at
/// sequence `n`, and a restarted sender resumes at the outbox's next sequence
/// ([`Outbox::next_sequence`]). The checker verifies it: each journal line's `n` must equal its
/// sequence.
async fn sender(mut told: tokio::sync::mpsc::UnboundedReceiver<String>) -> Result<(), BoxError> {
    say("");
    let dir = PathBuf::from(env(DIR_ENV)?);
    let address = env(ADDRESS_ENV)?;
    let total: u64 = env(MESSAGES_ENV)?.parse()?;
    let outbox =
        Outbox::open(dir.join("outbox"), OutboxConfig::new(SENDER).durability(level()?).segment_bytes(SEGMENT_BYTES))
            .await?;
    let next = outbox.next_sequence(RECEIVER).await?;
    say(&format!("ready {next}"));

    let channel = Channel::builder(address.parse()?).name(SENDER).connect_lazy();
    let counter = CounterClient::new(outbox.destination(RECEIVER, channel));
    for n in next..=total {
        counter.add(n).await?;
        say(&format!("logged {n}"));
    }
    say("done");
    // Only the last sender is told (after the kills), once; it resumed at most at the fence.
    while let Some(line) = told.recv().await {
        if line == "fence" && next <= total + 1 {
            counter.add(total + 1).await?;
            say(&format!("logged {}", total + 1));
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// The receiver: a server named [`RECEIVER`] with an inbox, on the run's Unix socket.
async fn receiver() -> Result<(), BoxError> {
    say("");
    let dir = PathBuf::from(env(DIR_ENV)?);
    let address = env(ADDRESS_ENV)?;
    let journal = Journal::open(&dir.join(JOURNAL))?;
    let inbox =
        Inbox::open(dir.join("inbox"), InboxConfig::default().durability(level()?).segment_bytes(SEGMENT_BYTES))
            .await?;
    // The socket file of a receiver that was SIGKILLed stays behind (its listener never
    // dropped): the bind finds nobody accepting on it and replaces it.
    let handler = Handler { journal: std::sync::Arc::new(journal), pid: std::process::id() };
    let server = Server::builder()
        .name(RECEIVER)
        .inbox(inbox)
        .add_service(CounterServer::new(handler))
        .bind(address.as_str())
        .await?;
    say(&format!("listening {}", server.local_addr()));
    server.serve().await?;
    Ok(())
}

/// The receiver's journal: one `write` per line to a file opened with `O_APPEND`.
#[derive(Debug)]
struct Journal(File);

impl Journal {
    /// Opens (creates) the journal; a line the previous receiver's kill cut short is ended
    /// with a newline, so that it stays a line of its own (the checker counts it as torn).
    fn open(path: &Path) -> Result<Journal, BoxError> {
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(Journal(file))
    }

    /// Appends `line` in one `write`, then copies it to stdout for the driver. A journal that
    /// cannot be written ends the receiver (the driver fails the run): a handler must not go
    /// on as if it had recorded its start.
    fn line(&self, line: &str) {
        let bytes = format!("{line}\n");
        match (&self.0).write(bytes.as_bytes()) {
            Ok(written) if written == bytes.len() => say(line),
            Ok(written) => fail(&format!("the journal took {written} of {} bytes", bytes.len())),
            Err(e) => fail(&format!("writing the journal: {e}")),
        }
    }
}

fn fail(why: &str) -> ! {
    eprintln!("the receiver stops: {why}");
    std::process::exit(2)
}

#[derive(Clone, Debug)]
struct Handler {
    journal: std::sync::Arc<Journal>,
    pid: u32,
}

impl Counter for Handler {
    async fn add(&self, ctx: &Context, n: u64) {
        // Not durable: the checker fails `none/0` (an id must be `sender/outbox/sequence`).
        let id = ctx.durable_id().map_or_else(|| "none/0".to_owned(), ToString::to_string);
        self.journal.line(&format!("start {id} {n} {} .", self.pid));
        // A kill between the two lines is a kill inside the handler.
        tokio::task::yield_now().await;
        self.journal.line(&format!("end {id} {n} {} .", self.pid));
    }
}
