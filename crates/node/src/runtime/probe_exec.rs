//! Probe executors, thin IO around [`ProbeAction`]: `exec` in the container (exit 0 is
//! success), an HTTP/1.1 GET to the pod IP (status 200..=399 is success) and a TCP connect.
//! Every executor is bounded by the probe's timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::container::ContainerId;
use super::probe::ProbeOutcome;
use super::service::Runtime;

/// Most bytes of an HTTP response read to find its status line.
pub const MAX_HTTP_STATUS_BYTES: usize = 4096;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Exec { argv: Vec<String> },
    HttpGet { port: u16, path: String },
    TcpSocket { port: u16 },
}

/// Runs one probe against container `id` whose pod has address `pod_ip`.
pub async fn run_probe(
    runtime: &Runtime,
    id: &ContainerId,
    pod_ip: IpAddr,
    action: &ProbeAction,
    timeout: Duration,
) -> ProbeOutcome {
    let success = match action {
        ProbeAction::Exec { argv } => runtime
            .exec(id, argv, timeout)
            .await
            .is_ok_and(|out| out.exit_code == 0 && !out.timed_out),
        ProbeAction::HttpGet { port, path } => {
            let addr = SocketAddr::new(pod_ip, *port);
            http_get_status(addr, path, timeout)
                .await
                .is_some_and(|status| (200..=399).contains(&status))
        }
        ProbeAction::TcpSocket { port } => {
            let addr = SocketAddr::new(pod_ip, *port);
            tcp_connects(addr, timeout).await
        }
    };
    match success {
        true => ProbeOutcome::Success,
        false => ProbeOutcome::Failure,
    }
}

/// Whether a TCP connection to `addr` is accepted within `timeout`.
pub async fn tcp_connects(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The status code of `GET path` on `addr`, or `None` on any error or timeout.
pub async fn http_get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    tokio::time::timeout(timeout, http_get(addr, path))
        .await
        .ok()
        .flatten()
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let path = if path.starts_with('/') { path } else { "/" };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return None;
    }
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: flotilla-probe\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < MAX_HTTP_STATUS_BYTES {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head)
}

/// `HTTP/1.x <code> <reason>` → code.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..=999).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn check(head: &str, expected: Option<u16>) {
        assert_eq!(parse_status_line(head.as_bytes()), expected, "{head:?}");
    }

    #[test]
    fn status_lines_are_parsed() {
        check("HTTP/1.1 200 OK\r\n", Some(200));
        check("HTTP/1.0 302 Found\r\nLocation: /\r\n", Some(302));
        check("HTTP/1.1 503\r\n", Some(503));
        check("SSH-2.0-OpenSSH\r\n", None);
        check("HTTP/1.1 abc OK\r\n", None);
        check("", None);
    }

    /// Serves one connection on loopback with `response`, returns its address.
    async fn serve_once(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_and_tcp_probes_talk_to_a_loopback_server() {
        let timeout = Duration::from_secs(5);
        let ok = serve_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(http_get_status(ok, "/healthz", timeout).await, Some(204));
        let bad = serve_once("HTTP/1.1 500 Oops\r\n\r\n").await;
        assert_eq!(http_get_status(bad, "/", timeout).await, Some(500));
        let open = serve_once("").await;
        assert!(tcp_connects(open, timeout).await);
        // A port nobody listens on: bind, note the port, close.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!tcp_connects(closed, timeout).await);
        assert_eq!(http_get_status(closed, "/", timeout).await, None);
    }
}
