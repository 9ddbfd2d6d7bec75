//! What the commands that call share: the target, metadata, the deadline, and the client built
//! from them.

use std::time::Duration;

use bytes::Bytes;
use zrpc::dynamic::{DynamicClient, Target, parse_duration};
use zrpc::{Client, Context};

use crate::Failure;

/// The name the command announces to servers, which handlers read as `ctx.caller()`.
pub(crate) const CALLER: &str = "zrpc-cli";

/// What `call` and `bench` take first: ADDR, the method and its JSON arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct MethodCall {
    /// Where the server is (see zrpc --help).
    #[arg(value_name = "ADDR", value_parser = target)]
    pub(crate) target: Target,

    /// The method: `Service.method`.
    #[arg(value_name = "SERVICE.METHOD", value_parser = method)]
    pub(crate) method: String,

    /// The arguments, in JSON: `{"name":"zrpc"}` or `["zrpc"]`; `@-` reads them from standard
    /// input, `@path` from a file; none for a method without arguments.
    #[arg(value_name = "JSON")]
    pub(crate) args: Option<String>,
}

/// Options of every command that calls a server.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CallOptions {
    /// Metadata sent with each call, as `key:value` (the value may be empty); repeat for more.
    /// A key given twice sends both values.
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE", value_parser = header)]
    pub(crate) headers: Vec<(String, String)>,

    /// The deadline of each call: `250ms`, `2s`, `1.5s`, `1m`, `100us`. Without it, a call
    /// may take 10 s (a client's default deadline).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) timeout: Option<Duration>,
}

impl CallOptions {
    /// A context for one call: the deadline (from now) and the metadata.
    pub(crate) fn context(&self) -> Context {
        self.deadline(self.metadata())
    }

    /// A context with the metadata and no deadline yet, to clone for each of many calls.
    pub(crate) fn metadata(&self) -> Context {
        let mut ctx = Context::new();
        let metadata = ctx.metadata_mut();
        for (key, value) in &self.headers {
            metadata.append(key.clone(), Bytes::from(value.clone()));
        }
        ctx
    }

    /// `ctx` with the deadline, from now.
    pub(crate) fn deadline(&self, ctx: Context) -> Context {
        match self.timeout {
            Some(timeout) => ctx.with_timeout(timeout),
            None => ctx,
        }
    }
}

/// A client of `target`, `connections` connections per endpoint, calling in JSON.
///
/// # Errors
/// The status of a target that cannot be reached before the first call (an etcd that does not
/// answer; a DNS name that does not resolve).
pub(crate) async fn connect(target: &Target, connections: usize) -> Result<DynamicClient<Client>, Failure> {
    let builder = Client::builder().name(CALLER).connections_per_endpoint(connections);
    Ok(DynamicClient::new(target.client(builder).await?))
}

/// Parses ADDR for clap.
pub(crate) fn target(s: &str) -> Result<Target, String> {
    Target::parse(s).map_err(|error| error.to_string())
}

/// Parses a `Service.method` for clap: a dot with something either side.
pub(crate) fn method(s: &str) -> Result<String, String> {
    match s.rsplit_once('.') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not Service.method")),
    }
}

/// Parses a duration for clap.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|error| error.to_string())
}

/// Parses `key:value` for clap; the value's leading spaces are dropped, as curl does.
fn header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim_start().to_owned())),
        _ => Err(format!("{s:?} is not key:value")),
    }
}

/// The JSON arguments of a call: the text itself, `@-` for standard input, `@path` for a file;
/// none means no arguments. Checked to be JSON here, so that a typo is a usage mistake rather
/// than a round trip; the server checks it against the method.
///
/// # Errors
/// A usage failure for a file that cannot be read or text that is not JSON.
pub(crate) fn arguments(given: Option<&str>) -> Result<Bytes, Failure> {
    let text = match given {
        None => return Ok(Bytes::new()),
        Some("@-") => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
                .map_err(|error| Failure::Usage(format!("cannot read the arguments from standard input: {error}")))?;
            text
        }
        Some(path) if path.starts_with('@') => std::fs::read(&path[1..])
            .map_err(|error| Failure::Usage(format!("cannot read the arguments from {:?}: {error}", &path[1..])))?,
        Some(text) => text.as_bytes().to_vec(),
    };
    if let Err(error) = serde_json::from_slice::<serde_json::Value>(&text) {
        return Err(Failure::Usage(format!("the arguments are not JSON: {error}")));
    }
    Ok(Bytes::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_splits_at_its_first_colon() {
        assert_eq!(header("tenant: a:b"), Ok(("tenant".to_owned(), "a:b".to_owned())));
        assert_eq!(header("empty:"), Ok(("empty".to_owned(), String::new())));
        assert!(header(":value").is_err());
        assert!(header("novalue").is_err());
    }

    #[test]
    fn a_method_needs_a_service_and_a_name() {
        assert_eq!(method("pkg.Greeter.hello").as_deref(), Ok("pkg.Greeter.hello"));
        assert!(method("Greeter").is_err());
        assert!(method("Greeter.").is_err());
        assert!(method(".hello").is_err());
    }

    #[test]
    fn arguments_must_be_json() {
        assert_eq!(arguments(Some(r#"{"a":1}"#)).ok(), Some(Bytes::from_static(br#"{"a":1}"#)));
        assert_eq!(arguments(None).ok(), Some(Bytes::new()));
        assert!(
            matches!(arguments(Some("{a:1}")), Err(Failure::Usage(m)) if m.starts_with("the arguments are not JSON"))
        );
    }
}
