//! WebSocket connections after an upgrade, while the gate holds
//! credentials: every frame's payload is read in both directions. Frames
//! from the agent that carry a secret bound elsewhere end the connection
//! before they go out; frames from the upstream are scrubbed of secrets
//! before the agent reads them.
//!
//! Frames are parsed as RFC 6455 lays them out (the agent's are masked).
//! Extensions are not negotiated (the gate removes
//! `Sec-WebSocket-Extensions` from the upgrade), so every payload is
//! plain; a frame with a reserved bit set cannot be read and ends the
//! connection. Within a frame, bytes that could begin a secret wait for
//! the rest of the frame. A frame ends what it holds back — bytes of the
//! next frame may not overtake it — but the end of each frame is kept and
//! searched with the next, so a secret split across frames ends the
//! connection when its last part arrives.

use std::sync::Arc;

use bottle_manifest::host::Host;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::credentials::{Credentials, Leak};
use super::leak::MAX_EXPANSION;

/// Which way frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the agent: a secret refuses the connection.
    ToUpstream,
    /// From the upstream: secrets are overwritten.
    ToAgent,
}

/// Why a connection was ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Leak(Leak),
    /// A frame the gate cannot read (a reserved bit, a compressed frame).
    Unreadable(String),
}

enum State {
    /// Reading a frame header (its bytes so far).
    Header(Vec<u8>),
    Payload {
        remaining: u64,
        mask: Option<[u8; 4]>,
        /// Offset in the payload of the next byte (for the mask).
        offset: u64,
        /// Payload bytes (as sent) held back within the frame.
        held: Vec<u8>,
    },
}

/// Reads one direction's frames and passes them on.
pub struct Scanner {
    direction: Direction,
    credentials: Arc<Credentials>,
    host: Host,
    state: State,
    /// The end of the payloads passed on, unmasked.
    tail: Vec<u8>,
}

impl Scanner {
    pub fn new(direction: Direction, credentials: Arc<Credentials>, host: Host) -> Scanner {
        Scanner {
            direction,
            credentials,
            host,
            state: State::Header(Vec::new()),
            tail: Vec::new(),
        }
    }

    /// Takes `input` and appends what may be passed on to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Ended> {
        while !input.is_empty() {
            match &mut self.state {
                State::Header(bytes) => {
                    let need = header_len(bytes);
                    let take = need.saturating_sub(bytes.len()).min(input.len()).max(1);
                    bytes.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if bytes.len() < header_len(bytes) {
                        continue;
                    }
                    let header = std::mem::take(bytes);
                    if header[0] & 0x70 != 0 {
                        return Err(Ended::Unreadable(
                            "a WebSocket frame with a reserved bit set (a compressed or extended frame)"
                                .to_owned(),
                        ));
                    }
                    let (length, mask) = parse_header(&header);
                    out.extend_from_slice(&header);
                    self.state = State::Payload {
                        remaining: length,
                        mask,
                        offset: 0,
                        held: Vec::new(),
                    };
                    if length == 0 {
                        self.state = State::Header(Vec::new());
                    }
                }
                State::Payload {
                    remaining,
                    mask,
                    offset,
                    held,
                } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    let mut raw = std::mem::take(held);
                    let start = *offset - raw.len() as u64;
                    raw.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *remaining -= take as u64;
                    let mut plain = raw.clone();
                    apply_mask(&mut plain, *mask, start);
                    let mut window = self.tail.clone();
                    let before = window.len();
                    window.extend_from_slice(&plain);
                    match self.direction {
                        Direction::ToUpstream => {
                            if let Some(leak) =
                                self.credentials
                                    .find_leak(&window, &self.host, "WebSocket frame")
                            {
                                return Err(Ended::Leak(leak));
                            }
                        }
                        Direction::ToAgent => {
                            if self.credentials.scrub(&mut window) {
                                raw = window[before..].to_vec();
                                apply_mask(&mut raw, *mask, start);
                            }
                        }
                    }
                    let hold = if *remaining > 0 {
                        self.credentials.hold_back(&window).min(raw.len())
                    } else {
                        0
                    };
                    let release = raw.len() - hold;
                    out.extend_from_slice(&raw[..release]);
                    *held = raw[release..].to_vec();
                    *offset = start + raw.len() as u64;
                    // What was passed on is kept, as long as a secret in
                    // any view can be, to search with what comes next.
                    let mut passed = window[..before + release].to_vec();
                    let keep = self.credentials.longest() * MAX_EXPANSION;
                    self.tail = passed.split_off(passed.len().saturating_sub(keep));
                    if *remaining == 0 {
                        self.state = State::Header(Vec::new());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Bytes of a frame header, once its first two bytes are known.
fn header_len(bytes: &[u8]) -> usize {
    let Some(&second) = bytes.get(1) else {
        return 2;
    };
    let masked = second & 0x80 != 0;
    let ext = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if masked { 4 } else { 0 }
}

/// The payload length and masking key of a complete header.
fn parse_header(header: &[u8]) -> (u64, Option<[u8; 4]>) {
    let masked = header[1] & 0x80 != 0;
    let (length, at) = match header[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[2..10]);
            (u64::from_be_bytes(bytes), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = masked.then(|| [header[at], header[at + 1], header[at + 2], header[at + 3]]);
    (length, mask)
}

/// XORs `bytes` (which start at payload offset `start`) with the mask.
fn apply_mask(bytes: &mut [u8], mask: Option<[u8; 4]>, start: u64) {
    if let Some(key) = mask {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b ^= key[((start + i as u64) % 4) as usize];
        }
    }
}

/// Relays a WebSocket connection between the agent and the upstream,
/// reading every frame both ways, until either side closes or a frame
/// from the agent carries a secret (then the agent is sent a close frame
/// saying why, and both sides are closed).
pub async fn relay<A, U>(
    agent: A,
    upstream: U,
    credentials: Arc<Credentials>,
    host: Host,
) -> Result<(), Ended>
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut agent_read, mut agent_write) = tokio::io::split(agent);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut up = Scanner::new(
        Direction::ToUpstream,
        Arc::clone(&credentials),
        host.clone(),
    );
    let mut down = Scanner::new(Direction::ToAgent, credentials, host);
    let mut from_agent = vec![0u8; 16 << 10];
    let mut from_upstream = vec![0u8; 16 << 10];
    let mut out = Vec::new();
    let ended = loop {
        out.clear();
        tokio::select! {
            read = agent_read.read(&mut from_agent) => {
                let n = match read { Ok(0) | Err(_) => break Ok(()), Ok(n) => n };
                if let Err(ended) = up.push(&from_agent[..n], &mut out) {
                    break Err(ended);
                }
                if upstream_write.write_all(&out).await.is_err() {
                    break Ok(());
                }
            }
            read = upstream_read.read(&mut from_upstream) => {
                let n = match read { Ok(0) | Err(_) => break Ok(()), Ok(n) => n };
                if let Err(ended) = down.push(&from_upstream[..n], &mut out) {
                    break Err(ended);
                }
                if agent_write.write_all(&out).await.is_err() {
                    break Ok(());
                }
            }
        }
    };
    if let Err(why) = &ended {
        let reason = match why {
            Ended::Leak(_) => "blocked by bottle policy: credential leak",
            Ended::Unreadable(_) => "blocked by bottle policy: unreadable frame",
        };
        // Close, status 1008 (policy violation), unmasked (server to client).
        let mut close = vec![0x88, (reason.len() + 2) as u8];
        close.extend_from_slice(&1008u16.to_be_bytes());
        close.extend_from_slice(reason.as_bytes());
        let _ = agent_write.write_all(&close).await;
    }
    let _ = agent_write.shutdown().await;
    let _ = upstream_write.shutdown().await;
    ended
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::egress::credentials::{Route, Secret};

    const SECRET: &str = "bbtest-ws-secret-0042";

    fn creds() -> Arc<Credentials> {
        Arc::new(
            Credentials::new(vec![Route {
                host: Host::Name("route.test".into()),
                header: http::header::AUTHORIZATION,
                scheme: "Bearer".into(),
                secret: Secret::new(SECRET.into()),
            }])
            .unwrap(),
        )
    }

    fn frame(payload: &[u8], mask: Option<[u8; 4]>, fin: bool) -> Vec<u8> {
        let mut out = vec![if fin { 0x81 } else { 0x01 }];
        let bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(bit | n as u8),
            n if n < 65536 => {
                out.push(bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if let Some(key) = mask {
            out.extend_from_slice(&key);
            apply_mask(&mut body, Some(key), 0);
        }
        out.extend_from_slice(&body);
        out
    }

    fn scan(direction: Direction, wire: &[u8], piece: usize) -> (Vec<u8>, Result<(), Ended>) {
        let mut scanner = Scanner::new(direction, creds(), Host::Name("other.test".into()));
        let mut out = Vec::new();
        for chunk in wire.chunks(piece) {
            if let Err(e) = scanner.push(chunk, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn clean_frames_pass_unchanged_however_they_arrive() {
        let mut wire = frame(b"hello", Some([1, 2, 3, 4]), true);
        wire.extend(frame(&vec![b'a'; 70_000], Some([9, 8, 7, 6]), true));
        wire.extend(frame(b"", Some([0, 0, 0, 0]), true));
        for piece in [1, 3, 7, 1000, 1 << 20] {
            let (out, ended) = scan(Direction::ToUpstream, &wire, piece);
            assert_eq!(ended, Ok(()));
            assert_eq!(out, wire, "piece {piece}");
        }
    }

    #[test]
    fn a_masked_secret_from_the_agent_ends_the_connection_before_it_goes() {
        let payload = format!("{{\"token\":\"{SECRET}\"}}");
        let wire = frame(payload.as_bytes(), Some([0x11, 0x22, 0x33, 0x44]), true);
        for piece in [1, 2, 5, 9, 64] {
            let (out, ended) = scan(Direction::ToUpstream, &wire, piece);
            assert!(matches!(ended, Err(Ended::Leak(_))), "piece {piece}");
            let header = 6;
            let mut sent = out[header.min(out.len())..].to_vec();
            apply_mask(&mut sent, Some([0x11, 0x22, 0x33, 0x44]), 0);
            assert!(
                !String::from_utf8_lossy(&sent).contains("bbtest"),
                "piece {piece}: {sent:?}"
            );
        }
    }

    #[test]
    fn a_secret_split_across_frames_is_found() {
        let (a, b) = SECRET.split_at(9);
        let mut wire = frame(a.as_bytes(), Some([1, 1, 1, 1]), false);
        wire.extend(frame(b.as_bytes(), Some([2, 2, 2, 2]), true));
        let (_, ended) = scan(Direction::ToUpstream, &wire, 4096);
        assert!(matches!(ended, Err(Ended::Leak(_))));
    }

    #[test]
    fn secrets_from_the_upstream_are_overwritten() {
        let payload = format!("you sent {SECRET}!");
        let wire = frame(payload.as_bytes(), None, true);
        for piece in [1, 4, 4096] {
            let (out, ended) = scan(Direction::ToAgent, &wire, piece);
            assert_eq!(ended, Ok(()));
            assert_eq!(out.len(), wire.len());
            let text = String::from_utf8_lossy(&out[2..]);
            assert_eq!(
                text,
                format!("you sent {}!", "x".repeat(SECRET.len())),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn compressed_frames_are_refused() {
        let mut wire = frame(b"x", None, true);
        wire[0] |= 0x40;
        let (_, ended) = scan(Direction::ToAgent, &wire, 4096);
        assert!(matches!(ended, Err(Ended::Unreadable(_))));
    }
}
