//! Endpoint addresses: `tcp://host:port`, `unix:///path/to.sock`, `mem://name`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where an endpoint listens.
///
/// Parsed from a URL-like string; a bare `host:port` means TCP. `Display` gives back a string
/// that parses to the same address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP address, `host:port`; the host is resolved when connecting.
    Tcp(String),
    /// A Unix-domain socket path.
    Unix(PathBuf),
    /// An in-memory endpoint of this process, by name.
    Memory(String),
}

/// Why a string is not an [`Address`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason}")]
pub struct InvalidAddress {
    input: String,
    reason: &'static str,
}

impl FromStr for Address {
    type Err = InvalidAddress;

    fn from_str(s: &str) -> Result<Address, InvalidAddress> {
        let invalid = |reason| InvalidAddress { input: s.to_owned(), reason };
        if let Some(rest) = s.strip_prefix("unix://") {
            return if rest.is_empty() {
                Err(invalid("a unix address needs a path"))
            } else {
                Ok(Address::Unix(rest.into()))
            };
        }
        if let Some(rest) = s.strip_prefix("mem://") {
            return Ok(Address::Memory(rest.to_owned()));
        }
        let hostport = s.strip_prefix("tcp://").unwrap_or(s);
        if hostport.contains("://") {
            return Err(invalid("unknown scheme; use tcp://, unix:// or mem://"));
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Address::Tcp(hostport.to_owned()))
            }
            _ => Err(invalid("a tcp address is host:port")),
        }
    }
}

/// Anything that names an [`Address`]: strings (`"tcp://127.0.0.1:80"`), socket addresses, or an
/// `Address`. What `Server::bind` and `Channel::connect` accept.
pub trait ToAddress {
    /// The address, or why this is not one.
    ///
    /// # Errors
    /// When a string does not parse.
    fn to_address(self) -> Result<Address, InvalidAddress>;
}

macro_rules! to_address_by_parsing {
    ($($t:ty),*) => {$(
        impl ToAddress for $t {
            fn to_address(self) -> Result<Address, InvalidAddress> {
                self.parse()
            }
        }
    )*};
}

to_address_by_parsing!(&str, String, &String);

impl ToAddress for std::net::SocketAddr {
    fn to_address(self) -> Result<Address, InvalidAddress> {
        Ok(self.into())
    }
}

impl ToAddress for Address {
    fn to_address(self) -> Result<Address, InvalidAddress> {
        Ok(self)
    }
}

impl ToAddress for &Address {
    fn to_address(self) -> Result<Address, InvalidAddress> {
        Ok(self.clone())
    }
}

impl Address {
    /// The socket address of a TCP address given as `ip:port` (no name to resolve).
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Address::Tcp(hostport) => hostport.parse().ok(),
            _ => None,
        }
    }
}

impl TryFrom<&str> for Address {
    type Error = InvalidAddress;

    fn try_from(s: &str) -> Result<Address, InvalidAddress> {
        s.parse()
    }
}

impl TryFrom<String> for Address {
    type Error = InvalidAddress;

    fn try_from(s: String) -> Result<Address, InvalidAddress> {
        s.parse()
    }
}

impl TryFrom<&String> for Address {
    type Error = InvalidAddress;

    fn try_from(s: &String) -> Result<Address, InvalidAddress> {
        s.parse()
    }
}

impl From<std::net::SocketAddr> for Address {
    fn from(addr: std::net::SocketAddr) -> Address {
        Address::Tcp(addr.to_string())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(hostport) => write!(f, "tcp://{hostport}"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Memory(name) => write!(f, "mem://{name}"),
        }
    }
}

impl From<Address> for zrpc_core::discover::Instance {
    /// An instance at the address's string form (`tcp://127.0.0.1:4000`), which a
    /// [`Client`](crate::Client) parses back to connect.
    fn from(address: Address) -> zrpc_core::discover::Instance {
        zrpc_core::discover::Instance::new(address.to_string())
    }
}

impl From<&Address> for zrpc_core::discover::Instance {
    /// An instance at the address's string form; see `From<Address>`.
    fn from(address: &Address) -> zrpc_core::discover::Instance {
        zrpc_core::discover::Instance::new(address.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_every_scheme() {
        for text in ["tcp://127.0.0.1:80", "tcp://[::1]:9000", "tcp://localhost:1", "unix:///tmp/a.sock", "mem://x"] {
            let addr: Address = text.parse().expect(text);
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!("127.0.0.1:5".parse::<Address>(), Ok(Address::Tcp("127.0.0.1:5".into())));
    }

    #[test]
    fn socket_addresses_convert_both_ways() {
        let socket: std::net::SocketAddr = "127.0.0.1:4000".parse().expect("valid");
        let address = socket.to_address().expect("always an address");
        assert_eq!(address.to_string(), "tcp://127.0.0.1:4000");
        assert_eq!(address.socket_addr(), Some(socket));
        assert_eq!(Address::Memory("x".into()).socket_addr(), None);
    }

    #[test]
    fn refuses_what_it_cannot_connect_to() {
        for bad in ["", "127.0.0.1", "tcp://:80", "tcp://host:port", "tcp://h:70000", "http://a:1", "unix://"] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?}");
        }
    }
}
