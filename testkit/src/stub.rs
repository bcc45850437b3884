//! A deliberately misbehaving registry for negative tests: each request is
//! answered by a test-provided function, so a test can lie about digests,
//! fail on a schedule or hang up, and count what the client asked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the stub saw: method and URL of each request, in order.
pub type Seen = Arc<Mutex<Vec<String>>>;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }
}

pub struct StubRegistry {
    host: String,
    seen: Seen,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl StubRegistry {
    /// Serves on 127.0.0.1:<free port>; `answer(method, url, n)` gets the
    /// 0-based index of the request.
    pub fn start(answer: impl Fn(&str, &str, usize) -> Reply + Send + 'static) -> StubRegistry {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind stub registry"));
        let host = format!(
            "127.0.0.1:{}",
            server.server_addr().to_ip().expect("ip listener").port()
        );
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, seen, stop) = (server.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(request) = server.recv() else { return };
                    let method = request.method().to_string();
                    let url = request.url().to_string();
                    let index = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(format!("{method} {url}"));
                        seen.len() - 1
                    };
                    let reply = answer(&method, &url, index);
                    let length = reply.body.len();
                    let mut response = tiny_http::Response::new(
                        tiny_http::StatusCode(reply.status),
                        vec![],
                        reply.body.as_slice(),
                        Some(length),
                        None,
                    );
                    for (name, value) in &reply.headers {
                        response.add_header(
                            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header"),
                        );
                    }
                    let _ = request.respond(response);
                }
            })
        };
        StubRegistry {
            host,
            seen,
            stop,
            server,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for StubRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
