//! Where a tool calls: one string naming addresses or a discovery source.

use std::fmt;
use std::str::FromStr;

use zrpc_core::Status;
use zrpc_core::discover::Static;

use crate::address::Address;
use crate::client::{Client, ClientBuilder};
use crate::dns::Dns;

/// Where to call, parsed from one string: what a CLI's `ADDR` or a gateway's `--target` takes.
///
/// | form | discovery |
/// |---|---|
/// | `tcp://127.0.0.1:7000`, `127.0.0.1:7000`, `unix:///run/app.sock` | that one address |
/// | `tcp://10.0.0.1:7000,tcp://10.0.0.2:7000` | those addresses ([`Static`]) |
/// | `dns://app.internal:7000` | the addresses the name resolves to, again every 30 s ([`Dns`]) |
/// | `etcd://127.0.0.1:2379/zrpc/app`, `etcd://h1:2379,h2:2379/zrpc/app` | the instances registered under the prefix `/zrpc/app`, watched (feature `etcd`) |
///
/// `Display` gives back the string it was parsed from.
///
/// # Examples
/// ```
/// use zrpc_transport::dynamic::Target;
///
/// let target: Target = "127.0.0.1:7000,127.0.0.1:7001".parse()?;
/// assert_eq!(target.to_string(), "127.0.0.1:7000,127.0.0.1:7001");
/// assert!(Target::parse("ftp://example.com").is_err());
/// # Ok::<(), zrpc_transport::dynamic::TargetError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    text: String,
    source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Static(Vec<Address>),
    Dns(Address),
    #[cfg(feature = "etcd")]
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

/// Why a string is not a [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {input:?}: {reason}")]
pub struct TargetError {
    input: String,
    reason: String,
}

impl Target {
    /// Parses `input`; see the [type's docs](Target) for the forms.
    ///
    /// # Errors
    /// When an address does not parse, a scheme is unknown, or `etcd://` is used without the
    /// `etcd` feature.
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        let invalid = |reason: String| TargetError { input: input.to_owned(), reason };
        let text = input.trim();
        let source = if let Some(rest) = text.strip_prefix("dns://") {
            match rest.parse::<Address>() {
                Ok(address @ Address::Tcp(_)) => Source::Dns(address),
                _ => return Err(invalid("dns:// takes host:port".to_owned())),
            }
        } else if let Some(rest) = text.strip_prefix("etcd://") {
            etcd_source(rest).map_err(invalid)?
        } else {
            let addresses = text
                .split(',')
                .map(|part| part.trim().parse::<Address>().map_err(|e| invalid(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            Source::Static(addresses)
        };
        Ok(Target { text: text.to_owned(), source })
    }

    /// A [`Client`] over this target's discovery, built from `builder`, whose name, balancer,
    /// fail mode and timeouts are the caller's. Static addresses connect on the first call;
    /// `dns://` resolves and `etcd://` reads the prefix before returning.
    ///
    /// # Errors
    /// `Unavailable` when a name does not resolve or etcd cannot be reached.
    pub async fn client(&self, builder: ClientBuilder) -> Result<Client, Status> {
        let builder = match &self.source {
            Source::Static(addresses) => builder.discover(Static::new(addresses.iter().map(Address::to_string))),
            Source::Dns(address) => builder.discover(Dns::resolve(address.clone()).await?),
            #[cfg(feature = "etcd")]
            Source::Etcd { endpoints, prefix } => builder.discover(crate::etcd::Etcd::watch(endpoints, prefix).await?),
        };
        Ok(builder.build())
    }

    /// The etcd endpoints (`http://host:port`) and prefix of an `etcd://` target.
    #[cfg(feature = "etcd")]
    pub fn etcd(&self) -> Option<(&[String], &str)> {
        match &self.source {
            Source::Etcd { endpoints, prefix } => Some((endpoints, prefix)),
            _ => None,
        }
    }
}

#[cfg(feature = "etcd")]
fn etcd_source(rest: &str) -> Result<Source, String> {
    let (hosts, prefix) = rest.split_once('/').ok_or("etcd:// takes host:port[,host:port]/prefix")?;
    if prefix.is_empty() {
        return Err("etcd:// needs a prefix after the hosts: etcd://127.0.0.1:2379/zrpc/app".to_owned());
    }
    let endpoints = hosts
        .split(',')
        .map(|host| match host.trim().parse::<Address>() {
            Ok(Address::Tcp(hostport)) => Ok(format!("http://{hostport}")),
            _ => Err(format!("etcd host {host:?} is not host:port")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Source::Etcd { endpoints, prefix: format!("/{prefix}") })
}

#[cfg(not(feature = "etcd"))]
fn etcd_source(_rest: &str) -> Result<Source, String> {
    Err("etcd:// needs zrpc's `etcd` feature, which this build lacks".to_owned())
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        Target::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dns_forms() {
        let one = Target::parse("127.0.0.1:7000").expect("parses");
        assert_eq!(one.source, Source::Static(vec![Address::Tcp("127.0.0.1:7000".into())]));
        let two = Target::parse("tcp://a:1, unix:///tmp/s.sock").expect("parses");
        assert_eq!(two.source, Source::Static(vec![Address::Tcp("a:1".into()), Address::Unix("/tmp/s.sock".into())]));
        assert_eq!(
            Target::parse("dns://app:7000").expect("parses").source,
            Source::Dns(Address::Tcp("app:7000".into()))
        );
    }

    #[test]
    fn refusals_say_why() {
        for (input, reason) in [
            ("", "a tcp address is host:port"),
            ("ftp://x:1", "unknown scheme"),
            ("a:1,,b:2", "a tcp address is host:port"),
            ("dns://unix:///x", "dns:// takes host:port"),
            ("127.0.0.1", "a tcp address is host:port"),
        ] {
            let error = Target::parse(input).expect_err(input).to_string();
            assert!(error.contains(reason), "{input}: {error}");
        }
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn etcd_forms() {
        let target = Target::parse("etcd://127.0.0.1:2379,h2:2379/zrpc/app").expect("parses");
        let (endpoints, prefix) = target.etcd().expect("etcd");
        assert_eq!(endpoints, ["http://127.0.0.1:2379", "http://h2:2379"]);
        assert_eq!(prefix, "/zrpc/app");
        for (input, reason) in [
            ("etcd://127.0.0.1:2379", "etcd:// takes"),
            ("etcd://h:1/", "needs a prefix"),
            ("etcd://nope/x", "is not host:port"),
        ] {
            let error = Target::parse(input).expect_err(input).to_string();
            assert!(error.contains(reason), "{input}: {error}");
        }
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn etcd_without_the_feature_says_so() {
        let error = Target::parse("etcd://127.0.0.1:2379/zrpc").expect_err("no etcd").to_string();
        assert!(error.contains("`etcd` feature"), "{error}");
    }
}
