//! One loopback connection relayed to its gate socket.
//!
//! Each direction ends on its own. A gate may answer and close before it
//! has read all of a request (a refusal, a 404, a 403 for the wrong
//! `Host`): its answer must still reach the client. So a write towards the
//! gate that fails stops only that direction, and the rest of what the
//! client sends is read and dropped, never left unread to reset the
//! connection under an answer not yet read.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// How long a client may go on sending once the gate has closed its side.
const LINGER: Duration = Duration::from_secs(10);

/// Relays `client` and `gate` until both directions have ended.
pub async fn relay(client: TcpStream, gate: UnixStream) {
    let (client_read, client_write) = client.into_split();
    let (gate_read, gate_write) = gate.into_split();
    let towards_gate = forward_or_drain(client_read, gate_write);
    let towards_client = forward(gate_read, client_write);
    tokio::pin!(towards_gate, towards_client);
    tokio::select! {
        () = &mut towards_gate => towards_client.await,
        () = &mut towards_client => {
            let _ = tokio::time::timeout(LINGER, towards_gate).await;
        }
    }
}

/// Copies `from` to `to`, then closes `to`'s writing side.
async fn forward(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Copies `from` to `to` while `to` takes it, then reads `from` to its end.
async fn forward_or_drain(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut open = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if open && to.write_all(&buf[..n]).await.is_err() {
            open = false;
        }
    }
    if open {
        let _ = to.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::net::{TcpListener, UnixListener};

    /// A bridge on loopback to a gate that answers `answer` after reading
    /// `head_len` bytes, then closes.
    async fn bridge_to_hasty_gate(head_len: usize, answer: &'static [u8]) -> std::net::SocketAddr {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.sock");
        let gate = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = gate.accept().await.unwrap();
            let mut head = vec![0u8; head_len];
            conn.read_exact(&mut head).await.unwrap();
            conn.write_all(answer).await.unwrap();
            drop(conn);
        });
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move {
            let _dir = dir;
            let (client, _) = tcp.accept().await.unwrap();
            let gate = UnixStream::connect(&path).await.unwrap();
            relay(client, gate).await;
        });
        addr
    }

    #[tokio::test]
    async fn an_answer_given_before_the_whole_request_was_read_still_arrives() {
        let head = b"POST /elsewhere HTTP/1.1\r\nContent-Length: 4194304\r\n\r\n";
        let answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let addr = bridge_to_hasty_gate(head.len(), answer).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(head).await.unwrap();
        // The body goes on well after the gate has answered and closed,
        // as a client that sends its whole request before reading does.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = vec![b'x'; 4 << 20];
        client.write_all(&body).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, answer);
    }

    #[tokio::test]
    async fn both_directions_pass_whole() {
        let head = b"GET / HTTP/1.1\r\n\r\n";
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let addr = bridge_to_hasty_gate(head.len(), answer).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(head).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, answer);
    }
}
