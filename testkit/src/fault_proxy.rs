//! A fault-injecting HTTP proxy between a tool and a [`TestRegistry`]: it
//! forwards every request unchanged unless a test-provided [`Fault`]
//! matches, and then answers an error status, cuts the response or the
//! request body with a TCP reset, or corrupts one byte of the response.
//!
//! Each client request gets its own upstream connection and both sides are
//! told `Connection: close`, so a request is one connection: the proxy can
//! cut it without disturbing anything else, and the answer to a request
//! depends only on the faults, never on timing. The `Host` header passes
//! through unchanged, so the `Location` of an upload session points back at
//! the proxy and the whole upload goes through it.
//!
//! Every request is logged (method, target, `Authorization`, which fault
//! acted, when), so a test can prove a retry really happened.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::registry::TestRegistry;

/// Long enough for any test request; short enough that a stuck connection
/// cannot hold a test forever.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// What a matching fault does to the request.
#[derive(Clone, Debug)]
enum Action {
    /// Answer without forwarding (the request body is read first, so the
    /// client always gets to read the answer).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forward, pass the response head and this many body bytes on, then
    /// reset the client connection.
    ResetResponseAfter(usize),
    /// Forward the request head and this many body bytes, then reset both
    /// connections: the upstream sees an upload break off, the client never
    /// gets an answer.
    ResetRequestAfter(usize),
    /// Forward, but flip the bits of the response body byte at this offset.
    CorruptResponseAt(usize),
}

/// A rule: requests whose method and target match get the action, `times`
/// times (forever when `None`), in the order the faults were added.
#[derive(Clone, Debug)]
pub struct Fault {
    /// `*` for any method.
    method: String,
    /// Matched against the request target (path and query).
    target: TargetMatch,
    times: Option<usize>,
    action: Action,
}

#[derive(Clone, Debug)]
enum TargetMatch {
    Contains(String),
    Exact(String),
}

impl TargetMatch {
    fn matches(&self, target: &str) -> bool {
        match self {
            TargetMatch::Contains(fragment) => target.contains(fragment.as_str()),
            TargetMatch::Exact(exact) => target == exact,
        }
    }
}

impl Fault {
    fn new(method: &str, target_fragment: &str, action: Action) -> Fault {
        Fault {
            method: method.to_string(),
            target: TargetMatch::Contains(target_fragment.to_string()),
            times: None,
            action,
        }
    }

    /// Answers `status` (with an OCI error envelope as the body) instead of
    /// forwarding.
    pub fn status(method: &str, target_fragment: &str, status: u16) -> Fault {
        let body =
            format!(r#"{{"errors":[{{"code":"FAULT","message":"injected {status} by the fault proxy"}}]}}"#);
        Fault::new(
            method,
            target_fragment,
            Action::Respond {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.into_bytes(),
            },
        )
    }

    /// Answers `status` with this body and content type instead of
    /// forwarding: what a registry with a feature the upstream lacks would
    /// answer (the Referrers API, for one digest).
    pub fn answer(
        method: &str,
        target_fragment: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Fault {
        Fault::new(
            method,
            target_fragment,
            Action::Respond {
                status,
                headers: vec![("Content-Type".into(), content_type.into())],
                body: body.to_vec(),
            },
        )
    }

    /// Forwards, then resets the connection after `bytes` bytes of the
    /// response body (a connection reset mid-blob).
    pub fn reset_response(method: &str, target_fragment: &str, bytes: usize) -> Fault {
        Fault::new(method, target_fragment, Action::ResetResponseAfter(bytes))
    }

    /// Forwards the first `bytes` bytes of the request body, then resets
    /// both connections (an interrupted upload).
    pub fn reset_request(method: &str, target_fragment: &str, bytes: usize) -> Fault {
        Fault::new(method, target_fragment, Action::ResetRequestAfter(bytes))
    }

    /// Forwards with the response body's byte at `offset` bit-flipped.
    pub fn corrupt_response(method: &str, target_fragment: &str, offset: usize) -> Fault {
        Fault::new(method, target_fragment, Action::CorruptResponseAt(offset))
    }

    /// Matches only this exact request target (`/v2/`), not a fragment.
    pub fn exact(mut self) -> Fault {
        if let TargetMatch::Contains(fragment) = self.target {
            self.target = TargetMatch::Exact(fragment);
        }
        self
    }

    /// Acts on the first `n` matching requests only.
    pub fn times(mut self, n: usize) -> Fault {
        self.times = Some(n);
        self
    }

    /// An extra header on a [`Fault::status`] answer (`Retry-After`,
    /// `WWW-Authenticate`).
    pub fn header(mut self, name: &str, value: &str) -> Fault {
        match &mut self.action {
            Action::Respond { headers, .. } => headers.push((name.to_string(), value.to_string())),
            other => panic!("a header only goes on a status answer, not on {other:?}"),
        }
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && self.target.matches(target)
            && self.times != Some(0)
    }
}

/// Names a fault added to a proxy, to ask how often it acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultId(usize);

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as the client sent them.
    pub target: String,
    pub authorization: Option<String>,
    /// The fault that acted on it, if any.
    pub fault: Option<FaultId>,
    /// When its head had been read.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    fired: Vec<usize>,
    seen: Vec<Seen>,
    /// Bytes forwarded from clients to the registry, and back.
    bytes_up: u64,
    bytes_down: u64,
}

/// A running proxy on `127.0.0.1:<free port>` in front of one registry;
/// stops accepting on drop.
pub struct FaultProxy {
    host: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accepter: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Forwards to `registry` (plain HTTP only: the proxy reads the requests).
    pub fn start(registry: &TestRegistry) -> FaultProxy {
        assert!(!registry.is_tls(), "the fault proxy speaks plain HTTP only");
        FaultProxy::to(registry.host())
    }

    /// Forwards to the plain-HTTP server at `upstream` (`HOST:PORT`), a
    /// registry this process did not start (bench-env's, for one).
    pub fn to(upstream: &str) -> FaultProxy {
        let upstream = upstream.to_string();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the fault proxy");
        let host = format!(
            "127.0.0.1:{}",
            listener.local_addr().expect("proxy address").port()
        );
        let state: Arc<Mutex<State>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let accepter = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let (state, upstream) = (state.clone(), upstream.clone());
                    // A connection that breaks is part of the test; there
                    // is nobody to report its error to.
                    std::thread::spawn(move || {
                        let _ = serve(client, &upstream, &state);
                    });
                }
            })
        };
        FaultProxy {
            host,
            state,
            stop,
            accepter: Some(accepter),
        }
    }

    /// `127.0.0.1:PORT`: use it in place of the registry's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn add(&self, fault: Fault) -> FaultId {
        let mut state = self.state.lock().unwrap();
        state.faults.push(fault);
        state.fired.push(0);
        FaultId(state.faults.len() - 1)
    }

    /// How many requests `fault` acted on.
    pub fn fired(&self, fault: FaultId) -> usize {
        self.state.lock().unwrap().fired[fault.0]
    }

    /// Drops every fault: from now on the proxy only forwards. The counts
    /// of what already fired stay.
    pub fn heal(&self) {
        for fault in &mut self.state.lock().unwrap().faults {
            fault.times = Some(0);
        }
    }

    /// Every request so far, in the order their heads arrived.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Forgets the request log and the byte counts (not the faults).
    pub fn clear_seen(&self) {
        let mut state = self.state.lock().unwrap();
        state.seen.clear();
        (state.bytes_up, state.bytes_down) = (0, 0);
    }

    /// Bytes forwarded so far (heads and bodies): from the clients to the
    /// registry, and from the registry to the clients.
    pub fn bytes(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap();
        (state.bytes_up, state.bytes_down)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepter so it sees the flag.
        let _ = TcpStream::connect(&self.host);
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

/// A request or response head: the first line and the headers.
struct Head {
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(reader: &mut impl BufRead) -> io::Result<Head> {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a head",
            ));
        }
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "head cut short"));
            }
            let header = header.trim_end_matches(['\r', '\n']);
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Head {
            line: line.trim_end_matches(['\r', '\n']).to_string(),
            headers,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head as bytes, with `Connection: close` in place of whatever the
    /// peer asked for (one request per connection).
    fn to_bytes_closing(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.line);
        for (name, value) in &self.headers {
            let hop_by_hop = ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h));
            if !hop_by_hop {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }

    fn body_framing(&self) -> Framing {
        if self
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else {
            Framing::Length(
                self.get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )
        }
    }
}

enum Framing {
    Length(u64),
    Chunked,
}

/// Serves one client connection: one request, one answer.
fn serve(client: TcpStream, upstream: &str, state: &Mutex<State>) -> io::Result<()> {
    // Without Nagle every write leaves at once, so what was written before
    // a reset reaches the client ahead of the RST.
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    client.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let request = Head::read(&mut reader)?;
    let mut parts = request.line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let action = {
        let mut state = state.lock().unwrap();
        let chosen = state.faults.iter().position(|f| f.matches(&method, &target));
        if let Some(index) = chosen {
            if let Some(times) = &mut state.faults[index].times {
                *times -= 1;
            }
            state.fired[index] += 1;
        }
        state.seen.push(Seen {
            method: method.clone(),
            target,
            authorization: request.get("authorization").map(str::to_string),
            fault: chosen.map(FaultId),
            at: Instant::now(),
        });
        chosen.map(|index| state.faults[index].action.clone())
    };
    let mut client = client;
    if let Some(Action::Respond {
        status,
        headers,
        body,
    }) = &action
    {
        copy_body(&mut reader, &mut io::sink(), request.body_framing(), None)?;
        let mut head = format!("HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        client.write_all(head.as_bytes())?;
        if method != "HEAD" {
            client.write_all(body)?;
        }
        return client.flush();
    }

    let mut upstream = TcpStream::connect(upstream)?;
    upstream.set_nodelay(true)?;
    upstream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    upstream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let head = request.to_bytes_closing();
    upstream.write_all(&head)?;
    let request_cut = match action {
        Some(Action::ResetRequestAfter(bytes)) => Some(bytes as u64),
        _ => None,
    };
    let mut counted = Counted {
        inner: &mut upstream,
        bytes: head.len() as u64,
    };
    let complete = copy_body(&mut reader, &mut counted, request.body_framing(), request_cut)?;
    state.lock().unwrap().bytes_up += counted.bytes;
    if !complete {
        reset(&upstream);
        reset(&client);
        return Ok(());
    }

    let mut from_upstream = BufReader::new(upstream);
    let response = Head::read(&mut from_upstream)?;
    let head = response.to_bytes_closing();
    client.write_all(&head)?;
    state.lock().unwrap().bytes_down += head.len() as u64;
    // The response runs until the upstream closes (it was asked to).
    let mut offset = 0usize;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = from_upstream.read(&mut buffer)?;
        if read == 0 {
            return client.flush();
        }
        state.lock().unwrap().bytes_down += read as u64;
        let chunk = &mut buffer[..read];
        match action {
            Some(Action::ResetResponseAfter(limit)) if offset + read >= limit => {
                client.write_all(&chunk[..limit - offset])?;
                reset(&client);
                return Ok(());
            }
            Some(Action::CorruptResponseAt(at)) if (offset..offset + read).contains(&at) => {
                chunk[at - offset] ^= 0xff;
            }
            _ => {}
        }
        client.write_all(chunk)?;
        offset += read;
    }
}

/// A writer that counts what passes.
struct Counted<'a, W> {
    inner: &'a mut W,
    bytes: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies a message body as framed; with `limit`, stops after that many
/// bytes of it. Returns whether the whole body was copied.
fn copy_body(
    from: &mut impl BufRead,
    to: &mut impl Write,
    framing: Framing,
    limit: Option<u64>,
) -> io::Result<bool> {
    let mut out = Budget {
        to,
        left: limit.unwrap_or(u64::MAX),
    };
    match framing {
        Framing::Length(length) => out.pass(from, length),
        // Chunk framing passes through raw; the limit counts raw bytes.
        Framing::Chunked => loop {
            let mut size_line = String::new();
            from.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or_default();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if !out.pass(&mut size_line.as_bytes(), size_line.len() as u64)? {
                return Ok(false);
            }
            if size == 0 {
                // Trailers, then the empty line that ends the body.
                loop {
                    let mut line = String::new();
                    from.read_line(&mut line)?;
                    if !out.pass(&mut line.as_bytes(), line.len() as u64)? {
                        return Ok(false);
                    }
                    if line.trim().is_empty() {
                        return Ok(true);
                    }
                }
            }
            // The data and its CRLF.
            if !out.pass(from, size + 2)? {
                return Ok(false);
            }
        },
    }
}

/// A writer that takes only so many bytes more.
struct Budget<'a, W> {
    to: &'a mut W,
    left: u64,
}

impl<W: Write> Budget<'_, W> {
    /// Copies `n` bytes, or as many as are left; returns whether all `n` went.
    fn pass(&mut self, from: &mut impl Read, n: u64) -> io::Result<bool> {
        let allowed = n.min(self.left);
        let copied = io::copy(&mut from.take(allowed), self.to)?;
        if copied < allowed {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short"));
        }
        self.left -= allowed;
        Ok(allowed == n)
    }
}

/// Closes with a TCP reset (SO_LINGER 0) instead of an orderly FIN: what a
/// peer sees when a connection breaks.
fn reset(stream: &TcpStream) {
    // The socket closes when its last handle drops (at the end of the
    // connection's thread); SO_LINGER 0 makes that close send RST.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
