//! A userspace TCP proxy that delays peer-to-peer traffic (the kernel here has no `netem`).
//!
//! When a run uses it, every peer advertises `<harness>:PROXY_PORT_BASE + n` instead of its own
//! address, so each peer-to-peer connection to peer `n` passes through a listener of this proxy
//! in the root namespace. Clients of the harness still dial peers directly. Each chunk read from
//! either side waits its link's delay (plus jitter) before it is written on, in order. With no
//! delay set the proxy only forwards.
//!
//! A link's delay is the larger of its two ends' delays, so "slow host 2" delays everything host
//! 2 sends and receives.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::ChaosError;
use crate::net::ensure_allowed_destination;

/// The proxy's listener for peer `n` is on this port plus `n`.
pub const PROXY_PORT_BASE: u16 = 17000;

/// Most connections one listener forwards at once.
pub const MAX_CONNECTIONS_PER_TARGET: usize = 256;

/// Chunks queued per direction of one connection (each at most [`CHUNK_BYTES`]).
pub const PIPE_QUEUE_CHUNKS: usize = 64;

const CHUNK_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A delay with random jitter on top.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkDelay {
    pub delay_ms: u32,
    pub jitter_ms: u32,
}

/// Delays per host number; hosts not listed add none.
#[derive(Default)]
struct DelayTable {
    per_host: Mutex<BTreeMap<u16, LinkDelay>>,
}

impl DelayTable {
    fn for_link(&self, a: Option<u16>, b: u16) -> LinkDelay {
        let table = self.per_host.lock().unwrap_or_else(|e| e.into_inner());
        let of = |host: Option<u16>| {
            host.and_then(|h| table.get(&h).copied())
                .unwrap_or_default()
        };
        let (x, y) = (of(a), of(Some(b)));
        LinkDelay {
            delay_ms: x.delay_ms.max(y.delay_ms),
            jitter_ms: x.jitter_ms.max(y.jitter_ms),
        }
    }
}

pub struct DelayProxy {
    listen_ip: Ipv4Addr,
    delays: Arc<DelayTable>,
    listeners: JoinSet<()>,
}

impl DelayProxy {
    pub fn new(listen_ip: Ipv4Addr) -> Self {
        DelayProxy {
            listen_ip,
            delays: Arc::default(),
            listeners: JoinSet::new(),
        }
    }

    /// The address peers dial to reach peer `number` through the proxy.
    pub fn address_for(&self, number: u16) -> SocketAddr {
        SocketAddr::from((self.listen_ip, PROXY_PORT_BASE + number))
    }

    /// Starts forwarding `address_for(number)` to `target`.
    pub async fn add_target(&mut self, number: u16, target: SocketAddr) -> Result<(), ChaosError> {
        if let SocketAddr::V4(v4) = target {
            ensure_allowed_destination(*v4.ip())?;
        }
        let listen = self.address_for(number);
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| ChaosError::io(format!("proxy listening on {listen}"), e))?;
        let delays = self.delays.clone();
        self.listeners
            .spawn(serve(listener, number, target, delays));
        Ok(())
    }

    /// Sets (or with `None` clears) the delay of every link that touches host `number`.
    pub fn set_delay(&self, number: u16, delay: Option<LinkDelay>) {
        let mut table = self
            .delays
            .per_host
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match delay {
            Some(delay) => table.insert(number, delay),
            None => table.remove(&number),
        };
    }

    pub fn clear_delays(&self) {
        self.delays
            .per_host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

async fn serve(
    listener: TcpListener,
    target_host: u16,
    target: SocketAddr,
    delays: Arc<DelayTable>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_TARGET));
    let mut connections = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((inbound, from)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            continue;
        };
        let source_host = match from {
            SocketAddr::V4(v4) => Some(u16::from(v4.ip().octets()[3])),
            SocketAddr::V6(_) => None,
        };
        let delays = delays.clone();
        connections.spawn(async move {
            let _permit = permit;
            let Ok(Ok(outbound)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
            else {
                return;
            };
            let link = (source_host, target_host);
            forward(inbound, outbound, link, delays).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn forward(a: TcpStream, b: TcpStream, link: (Option<u16>, u16), delays: Arc<DelayTable>) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (a_read, a_write) = a.into_split();
    let (b_read, b_write) = b.into_split();
    let there = pipe(a_read, b_write, link, delays.clone());
    let back = pipe(b_read, a_write, link, delays);
    tokio::join!(there, back);
}

/// Copies `from` to `to`, holding each chunk back by the link's delay at the time it was read.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: (Option<u16>, u16),
    delays: Arc<DelayTable>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(PIPE_QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = delays.for_link(link.0, link.1);
            let jitter = if delay.jitter_ms > 0 {
                rand::thread_rng().gen_range(0..=delay.jitter_ms)
            } else {
                0
            };
            let due = Instant::now() + Duration::from_millis(u64::from(delay.delay_ms + jitter));
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_takes_the_larger_delay_of_its_ends() {
        let table = DelayTable::default();
        table.per_host.lock().unwrap().insert(
            2,
            LinkDelay {
                delay_ms: 100,
                jitter_ms: 10,
            },
        );
        let check = |a: Option<u16>, b: u16, expected_ms: u32| {
            assert_eq!(table.for_link(a, b).delay_ms, expected_ms, "{a:?} -> {b}");
        };
        check(Some(1), 3, 0);
        check(Some(2), 3, 100);
        check(Some(1), 2, 100);
        check(None, 3, 0);
    }

    #[tokio::test]
    async fn forwards_bytes_both_ways_after_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let delays = Arc::new(DelayTable::default());
        delays.per_host.lock().unwrap().insert(
            9,
            LinkDelay {
                delay_ms: 150,
                jitter_ms: 0,
            },
        );
        tokio::spawn(serve(listener, 9, echo_addr, delays));
        let started = Instant::now();
        let mut client = TcpStream::connect(proxy_addr).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"hello");
        // Delayed on the way there and on the way back.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
