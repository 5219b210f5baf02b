//! A fault-injecting TCP proxy: one listener per link, forwarding every accepted connection to
//! an upstream address that may change at runtime (a restarted replica's new port).
//!
//! Modes, switchable at any time with [`Proxy::set_mode`]:
//!
//! - [`Mode::Pass`]: bytes flow both ways unchanged.
//! - [`Mode::Partition`]: live connections are dropped at once; new ones are accepted but never
//!   forwarded nor answered (a black hole: callers hit their own timeouts) until the mode
//!   changes, then they are closed.
//! - [`Mode::Latency`]: every chunk read in either direction is held for `fixed` plus a seeded
//!   random jitter in `[0, jitter]` before it is written on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward unchanged.
    Pass,
    /// Drop live connections; black-hole new ones.
    Partition,
    /// Delay every chunk by `fixed` + uniform `[0, jitter]`.
    Latency {
        /// Delay added to every chunk.
        fixed: Duration,
        /// Upper bound of the seeded random extra delay.
        jitter: Duration,
    },
}

struct Shared {
    mode: watch::Sender<Mode>,
    upstream: Mutex<SocketAddr>,
    seed: u64,
    conns: AtomicU64,
}

/// One proxied link. Dropping it stops the listener and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`; `seed` seeds the
    /// latency jitter. Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The listener could not be bound.
    pub async fn start(upstream: SocketAddr, seed: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind proxy listener")?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let shared = Arc::new(Shared {
            mode,
            upstream: Mutex::new(upstream),
            seed,
            conns: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// The address callers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points new connections at `upstream`; live ones keep their old upstream.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        if let Ok(mut u) = self.shared.upstream.lock() {
            *u = upstream;
        }
    }

    /// Switches the mode; a switch to [`Mode::Partition`] drops every live connection.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here: aborting the accept loop drops the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve(stream, shared.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Resolves when the mode becomes [`Mode::Partition`] (or the proxy is gone).
async fn partitioned(rx: &mut watch::Receiver<Mode>) {
    let _ = rx.wait_for(|m| *m == Mode::Partition).await;
}

async fn serve(inbound: TcpStream, shared: Arc<Shared>) {
    let mut rx = shared.mode.subscribe();
    if *rx.borrow_and_update() == Mode::Partition {
        // Black hole: hold the connection unanswered until the partition heals, then close it.
        let _ = rx.wait_for(|m| *m != Mode::Partition).await;
        return;
    }
    let upstream = match shared.upstream.lock() {
        Ok(u) => *u,
        Err(_) => return,
    };
    let n = shared.conns.fetch_add(1, Ordering::Relaxed);
    let connect = tokio::select! {
        c = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)) => c,
        () = partitioned(&mut rx) => return,
    };
    let Ok(Ok(outbound)) = connect else { return };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    let seed = shared.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let up = pump(ri, wo, shared.mode.subscribe(), seed);
    let down = pump(ro, wi, shared.mode.subscribe(), seed ^ 1);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = partitioned(&mut rx) => {}
    }
}

/// Copies one direction chunk by chunk, delaying each chunk while in latency mode.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let current = *mode.borrow();
        if let Mode::Latency { fixed, jitter } = current {
            let extra = if jitter.is_zero() {
                Duration::ZERO
            } else {
                jitter.mul_f64(rng.random::<f64>())
            };
            tokio::time::sleep(fixed + extra).await;
        }
        let Some(chunk) = buf.get(..n) else { break };
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An upstream that echoes every byte back, upper-cased when `upper`.
    async fn echo_server(upper: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0_u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        let mut chunk = buf[..n].to_vec();
                        if upper {
                            chunk.make_ascii_uppercase();
                        }
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn bytes_pass_partition_blocks_heal_restores() {
        let (echo, _e) = echo_server(false).await;
        let proxy = Proxy::start(echo, 7).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut c, b"hello").await.unwrap(), b"hello");

        // Partition: the live connection is dropped...
        proxy.set_mode(Mode::Partition);
        let mut buf = [0_u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = c.write_all(b"x").await;
            c.read(&mut buf).await
        })
        .await
        .unwrap();
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "live connection survived: {r:?}"
        );
        // ...and a new one is accepted but never answered.
        let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
        d.write_all(b"ping").await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(300), d.read(&mut buf)).await;
        assert!(
            blocked.is_err(),
            "black-holed connection answered: {blocked:?}"
        );

        // Heal: the held connection is closed, new connections pass again.
        proxy.set_mode(Mode::Pass);
        let closed = tokio::time::timeout(Duration::from_secs(5), d.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        let mut e = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut e, b"again").await.unwrap(), b"again");
    }

    #[tokio::test]
    async fn latency_delays_each_chunk_and_upstream_can_move() {
        let (echo1, _e1) = echo_server(false).await;
        let (echo2, _e2) = echo_server(true).await;
        let proxy = Proxy::start(echo1, 7).await.unwrap();
        proxy.set_mode(Mode::Latency {
            fixed: Duration::from_millis(100),
            jitter: Duration::from_millis(50),
        });
        assert!(matches!(proxy.mode(), Mode::Latency { .. }));
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let t = Instant::now();
        assert_eq!(roundtrip(&mut c, b"slow").await.unwrap(), b"slow");
        // one chunk each way, each held at least `fixed`
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );

        proxy.set_mode(Mode::Pass);
        proxy.set_upstream(echo2);
        let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut d, b"moved").await.unwrap(), b"MOVED");
        // the live connection keeps its old upstream
        assert_eq!(roundtrip(&mut c, b"old").await.unwrap(), b"old");
    }
}
