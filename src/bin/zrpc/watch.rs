//! `zrpc watch etcd://host:port/prefix`: the instances registered in etcd under a prefix, then
//! their changes as they come.
//!
//! Only etcd targets: a static list or `dns://` has no registry to watch (and `zrpc call` shows
//! whether an address answers). Watching is `zrpc::etcd::Etcd`, the discovery source a
//! `Client` uses, so what this prints is what a client of the same prefix sees. First a
//! table of the instances present (address, name, weight, group, version, state, metadata;
//! `-` for an empty field), then a line per change until Ctrl-C: `+` an instance that came,
//! `~` one whose details changed, `-` one that left. A lost watch (etcd restarting) is a line
//! on stderr; the source recovers by itself and reports what changed meanwhile.
//!
//! `--once` prints the table and exits: for scripts, and for tests. Ctrl-C exits with status 0:
//! it is how a watch is meant to end.

use zrpc::dynamic::Target;

#[cfg(not(feature = "etcd"))]
use crate::Failure;
use crate::options;

/// Watch the instances registered in etcd (etcd://host:port/prefix) as they come and go.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to watch: `etcd://host:port[,host:port]/prefix`.
    #[arg(value_name = "ADDR", value_parser = options::target)]
    target: Target,

    /// Print the instances present and exit.
    #[arg(long)]
    once: bool,
}

#[cfg(not(feature = "etcd"))]
pub(crate) async fn run(_args: Args) -> Result<(), Failure> {
    Err(Failure::Usage(
        "watch follows etcd, and this zrpc was built without the feature etcd \
         (cargo install zrpc --features cli,etcd)"
            .to_owned(),
    ))
}

#[cfg(feature = "etcd")]
pub(crate) use follow::run;

/// The watch itself, over etcd.
#[cfg(feature = "etcd")]
mod follow {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;

    use futures::{FutureExt as _, StreamExt as _};
    use zrpc::discover::{Change, Instance};

    use super::Args;
    use crate::Failure;

    pub(crate) async fn run(args: Args) -> Result<(), Failure> {
        let Some((endpoints, prefix)) = args.target.etcd() else {
            return Err(Failure::Usage(format!(
                "watch follows a registry: give etcd://host:port/prefix, not {}",
                args.target
            )));
        };
        let mut source = zrpc::etcd::Etcd::watch(endpoints, prefix).await?;
        // The source queues the set it read before it returns: the first polls yield all of it
        // without waiting. Unconstrained, so tokio's cooperative budget cannot cut the drain short.
        let mut present: BTreeMap<String, Instance> = BTreeMap::new();
        tokio::task::unconstrained(async {
            while let Some(Some(item)) = source.next().now_or_never() {
                match item {
                    Ok(change) => {
                        apply(&mut present, change);
                    }
                    Err(status) => eprintln!("zrpc: watch: {}: {status}", status.code().name()),
                }
            }
        })
        .await;
        let mut table = Table::default();
        let instances: Vec<&Instance> = present.values().collect();
        table.fit(&instances);
        print!("{}", table.header());
        for instance in &instances {
            print!("{}", table.row(' ', instance));
        }
        if args.once {
            return Ok(());
        }
        // Polled once now, so Ctrl-C is caught from here on rather than from the first change.
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        if let std::task::Poll::Ready(caught) = futures::poll!(ctrl_c.as_mut()) {
            return caught.map_err(|error| Failure::Failed(format!("cannot catch Ctrl-C: {error}")));
        }
        eprintln!("zrpc: watching {} for changes (Ctrl-C to stop)", args.target);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                item = source.next() => match item {
                    Some(Ok(change)) => {
                        let line = match &change {
                            Change::Insert(address, instance) => {
                                table.fit(&[instance]);
                                let mark = if present.contains_key(&**address) { '~' } else { '+' };
                                table.row(mark, instance)
                            }
                            Change::Remove(address) => match present.get(&**address) {
                                Some(instance) => table.row('-', instance),
                                None => format!("- {address}\n"),
                            },
                        };
                        apply(&mut present, change);
                        print!("{line}");
                    }
                    Some(Err(status)) => eprintln!("zrpc: watch: {}: {status}", status.code().name()),
                    None => return Err(Failure::Failed("the discovery source ended".to_owned())),
                },
            }
        }
    }

    /// Applies `change` to the instances present.
    fn apply(present: &mut BTreeMap<String, Instance>, change: Change) {
        match change {
            Change::Insert(address, instance) => {
                present.insert(address.to_string(), instance);
            }
            Change::Remove(address) => {
                present.remove(&*address);
            }
        }
    }

    /// Column widths, grown to fit every instance shown so far.
    #[derive(Debug)]
    struct Table {
        widths: [usize; 6],
    }

    const HEADERS: [&str; 7] = ["ADDRESS", "NAME", "WEIGHT", "GROUP", "VERSION", "STATE", "METADATA"];

    impl Default for Table {
        fn default() -> Table {
            let mut widths = [0; 6];
            for (width, header) in widths.iter_mut().zip(HEADERS) {
                *width = header.len();
            }
            Table { widths }
        }
    }

    impl Table {
        fn fit(&mut self, instances: &[&Instance]) {
            for instance in instances {
                for (width, cell) in self.widths.iter_mut().zip(cells(instance)) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }

        fn header(&self) -> String {
            self.line(' ', HEADERS.map(str::to_owned))
        }

        fn row(&self, mark: char, instance: &Instance) -> String {
            self.line(mark, cells(instance))
        }

        fn line(&self, mark: char, cells: [String; 7]) -> String {
            let mut out = String::new();
            out.push(mark);
            for (cell, width) in cells.iter().zip(self.widths) {
                let _ = write!(out, " {cell:<width$} ");
            }
            let _ = writeln!(out, " {}", cells[6]);
            out
        }
    }

    /// An instance's fields as the table shows them, `-` for an empty one.
    fn cells(instance: &Instance) -> [String; 7] {
        let or_dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
        let metadata: Vec<String> = instance.metadata.iter().map(|(key, value)| format!("{key}={value}")).collect();
        [
            instance.address.to_string(),
            or_dash(&instance.name),
            instance.weight.to_string(),
            or_dash(&instance.group),
            or_dash(&instance.version),
            instance.state.to_string(),
            or_dash(&metadata.join(",")),
        ]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rows_line_up_under_the_header_and_empty_fields_are_dashes() {
            let instance = Instance::new("tcp://127.0.0.1:4000").with_name("greeter-1").with_version("1.2");
            let mut table = Table::default();
            table.fit(&[&instance]);
            let header = table.header();
            let row = table.row('+', &instance);
            assert_eq!(header.find("NAME"), row.find("greeter-1"));
            assert_eq!(header.find("METADATA"), row.rfind('-'));
            assert!(row.starts_with("+ tcp://127.0.0.1:4000"), "{row}");
            assert!(row.contains(" 1.2 "), "{row}");
        }
    }
}
