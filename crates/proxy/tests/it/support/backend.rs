//! Scriptable HTTP/1.1 backends on `127.0.0.1:0`, written on raw TCP so a test can make
//! them misbehave in ways a real HTTP library would refuse to: drop the connection
//! after reading the request, reset it, hang, or answer with bytes that are not HTTP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// What a backend does with each request.
#[derive(Clone, Debug, PartialEq)]
pub enum Behavior {
    /// 200 with the backend's name as the body.
    Ok,
    /// This status, the backend's name as the body.
    Status(u16),
    /// Wait, then 200.
    Delay(Duration),
    /// Read the request and never answer.
    Hang,
    /// Read only the request head, then neither read the body nor answer.
    StallBody,
    /// Read the request and close the connection without a byte.
    Drop,
    /// Read the request and reset the connection (RST).
    Reset,
    /// Answer with bytes that are not HTTP.
    Garbage,
    /// 200 whose body is the request head as received.
    Echo,
    /// Promise a long body, send part of it, then close.
    Truncated,
}

struct State {
    name: String,
    behavior: Mutex<Behavior>,
    hits: AtomicU64,
    connections: AtomicU64,
}

/// A running backend.
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    pub async fn start(name: &str, behavior: Behavior) -> Backend {
        Backend::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), name, behavior).await
    }

    /// A backend on a chosen loopback address, e.g. `127.0.0.2` on another backend's
    /// port: DNS tests need several A records sharing one port.
    pub async fn start_at(addr: SocketAddr, name: &str, behavior: Behavior) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            name: name.to_owned(),
            behavior: Mutex::new(behavior),
            hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Backend {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn set(&self, behavior: Behavior) {
        *self.state.behavior.lock().unwrap() = behavior;
    }

    /// Stop listening and close every connection: connects are refused afterwards.
    pub fn kill(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listen again on the same port.
    pub async fn revive(&self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(1024).unwrap();
        let task = tokio::spawn(accept_loop(listener, self.state.clone()));
        *self.task.lock().unwrap() = Some(task);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port with nothing listening (connects are refused).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        connections.spawn(serve(stream, state.clone()));
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        if *state.behavior.lock().unwrap() == Behavior::StallBody {
            state.hits.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        let content_length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + content_length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + content_length);
        state.hits.fetch_add(1, Ordering::SeqCst);
        let behavior = state.behavior.lock().unwrap().clone();
        let (status, body) = match behavior {
            Behavior::Ok => (200, state.name.clone()),
            Behavior::Status(code) => (code, state.name.clone()),
            Behavior::Delay(d) => {
                tokio::time::sleep(d).await;
                (200, state.name.clone())
            }
            Behavior::Hang | Behavior::StallBody => {
                std::future::pending::<()>().await;
                return;
            }
            Behavior::Drop => return,
            Behavior::Reset => {
                // SO_LINGER 0 makes the close send RST instead of FIN.
                if let Ok(std_stream) = stream.into_std() {
                    let _ = socket2::SockRef::from(&std_stream).set_linger(Some(Duration::ZERO));
                }
                return;
            }
            Behavior::Garbage => {
                let _ = stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
                return;
            }
            Behavior::Echo => (200, head),
            Behavior::Truncated => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial")
                    .await;
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-backend: {}\r\nconnection: keep-alive\r\n\r\n{body}",
            body.len(),
            state.name
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
