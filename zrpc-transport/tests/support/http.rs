//! A minimal HTTP/1.1 client over a `TcpStream`, for the gateway's tests and the console's
//! WebDriver session: one request per connection (`Connection: close`), the answer read until
//! its length is complete. Enough to see exactly what went over the socket, with nothing in between.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(value) => value,
            Err(e) => panic!("the body of a {} answer is not JSON ({e}): {:?}", self.status, self.text()),
        }
    }
}

/// Sends `method path` to `addr` with `headers` and `body`, and reads the whole answer.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut stream = TcpStream::connect(addr).await.expect("connect to the HTTP server");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    exchange(&mut stream, &raw).await
}

/// Writes `raw`, a whole request, on `stream` and reads its answer, leaving the connection
/// open.
pub async fn exchange(stream: &mut TcpStream, raw: &[u8]) -> Answer {
    stream.write_all(raw).await.expect("write the request");
    // Read until the answer is complete: some servers (chromedriver) keep the connection open
    // despite `Connection: close`.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.expect("read the answer");
        raw.extend_from_slice(&buf[..n]);
        if n == 0 || complete(&raw) {
            return parse(&raw);
        }
    }
}

/// Whether `raw` holds a whole answer: its head, and a body as long as its `Content-Length`
/// or ended by the last chunk.
pub fn complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if let Some(length) = head.lines().find_map(|line| line.strip_prefix("content-length:")) {
        return length.trim().parse::<usize>().is_ok_and(|length| body.len() >= length);
    }
    head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n")
}

/// `POST path` with a JSON body.
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], json: &str) -> Answer {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, json.as_bytes()).await
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[], b"").await
}

pub fn parse(raw: &[u8]) -> Answer {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an answer with a complete head");
    let head = std::str::from_utf8(&raw[..split]).expect("a text head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked { unchunk(rest) } else { rest.to_vec() };
    Answer { status, headers, body }
}

/// The data of a chunked body.
fn unchunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size_text = std::str::from_utf8(&rest[..end]).expect("a text chunk size");
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16).expect("a hex size");
        rest = &rest[end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
