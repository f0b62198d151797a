//! WebSocket connections after an upgrade, while the gate holds
//! credentials: every frame's payload is read in both directions. Frames
//! from the agent that carry a secret bound elsewhere end the connection
//! before they go out; frames from the upstream are scrubbed of secrets
//! before the agent reads them.
//!
//! Frames are parsed as RFC 6455 lays them out (the agent's are masked).
//! Extensions are not negotiated (the gate removes
//! `Sec-WebSocket-Extensions` from the upgrade), so every payload is
//! plain; a frame with a reserved bit or opcode set cannot be read and
//! ends the connection.
//!
//! The gate re-fragments messages as it passes them on (RFC 6455 §5.4
//! allows an intermediary to when no extension is in use): what arrives
//! goes out as a fragment of the same message, except the bytes at the
//! end that could still be part of a secret ([`Credentials::hold_back`]),
//! which go out with what follows — so a secret split across the frames
//! of a message is whole before any of it leaves. The end of a message
//! goes out with it, and its tail is searched with the next message, so a
//! secret split across messages ends the connection when its last part
//! arrives. Control frames (at most 125 bytes, never fragmented) are read
//! whole and checked on their own. Frames to the upstream are masked with
//! a fresh key.

use std::sync::Arc;

use bottle_manifest::host::Host;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::credentials::{Credentials, Leak};

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

fn unreadable<T>(why: &str) -> Result<T, Ended> {
    Err(Ended::Unreadable(why.to_owned()))
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: u64 = 125;

enum State {
    /// Reading a frame header (its bytes so far).
    Header(Vec<u8>),
    /// Reading a data frame's payload.
    Data {
        remaining: u64,
        mask: Option<[u8; 4]>,
        /// Offset in the payload of the next byte (for the mask).
        offset: u64,
        fin: bool,
    },
    /// Reading a control frame's payload, kept whole.
    Control {
        opcode: u8,
        remaining: u64,
        mask: Option<[u8; 4]>,
        payload: Vec<u8>,
    },
}

/// The message being passed on.
struct Message {
    opcode: u8,
    /// A fragment of it went out already (the next is a continuation).
    started: bool,
    /// Payload bytes (unmasked) that arrived but wait for more.
    held: Vec<u8>,
}

/// Reads one direction's frames and passes them on.
pub struct Scanner {
    direction: Direction,
    credentials: Arc<Credentials>,
    host: Host,
    state: State,
    message: Option<Message>,
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
            message: None,
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
                    self.begin(&header, out)?;
                }
                State::Data {
                    remaining,
                    mask,
                    offset,
                    fin,
                } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    let mut plain = input[..take].to_vec();
                    apply_mask(&mut plain, *mask, *offset);
                    input = &input[take..];
                    *remaining -= take as u64;
                    *offset += take as u64;
                    let last = *fin && *remaining == 0;
                    if *remaining == 0 {
                        self.state = State::Header(Vec::new());
                    }
                    self.data(plain, last, out)?;
                }
                State::Control {
                    opcode,
                    remaining,
                    mask,
                    payload,
                } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    payload.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        let opcode = *opcode;
                        let mut payload = std::mem::take(payload);
                        apply_mask(&mut payload, *mask, 0);
                        self.state = State::Header(Vec::new());
                        self.control(opcode, payload, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A whole header read: what its frame is, and what reading it means.
    fn begin(&mut self, header: &[u8], out: &mut Vec<u8>) -> Result<(), Ended> {
        if header[0] & 0x70 != 0 {
            return unreadable(
                "a WebSocket frame with a reserved bit set (a compressed or extended frame)",
            );
        }
        let fin = header[0] & 0x80 != 0;
        let opcode = header[0] & 0x0f;
        let (length, mask) = parse_header(header);
        match opcode {
            OP_CONTINUATION if self.message.is_none() => {
                return unreadable("a WebSocket continuation frame outside a message");
            }
            OP_TEXT | OP_BINARY if self.message.is_some() => {
                return unreadable("a WebSocket message begun inside another");
            }
            OP_TEXT | OP_BINARY => {
                self.message = Some(Message {
                    opcode,
                    started: false,
                    held: Vec::new(),
                });
            }
            OP_CONTINUATION => {}
            8..=15 => {
                if !fin || length > MAX_CONTROL {
                    return unreadable("a fragmented or oversized WebSocket control frame");
                }
                self.state = State::Control {
                    opcode,
                    remaining: length,
                    mask,
                    payload: Vec::new(),
                };
                if length == 0 {
                    self.state = State::Header(Vec::new());
                    self.control(opcode, Vec::new(), out)?;
                }
                return Ok(());
            }
            _ => return unreadable("a WebSocket frame with a reserved opcode"),
        }
        self.state = State::Data {
            remaining: length,
            mask,
            offset: 0,
            fin,
        };
        if length == 0 {
            self.state = State::Header(Vec::new());
            self.data(Vec::new(), fin, out)?;
        }
        Ok(())
    }

    /// Checks (or scrubs) `plain` with what is held and what went before;
    /// passes on all but what must wait. `last`: the message ends here.
    fn data(&mut self, plain: Vec<u8>, last: bool, out: &mut Vec<u8>) -> Result<(), Ended> {
        let Some(message) = &mut self.message else {
            return unreadable("a WebSocket continuation frame outside a message");
        };
        let mut window = self.tail.clone();
        let before = window.len();
        window.extend_from_slice(&message.held);
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
                self.credentials.scrub(&mut window);
            }
        }
        let fresh = window.len() - before;
        let hold = if last {
            0
        } else {
            self.credentials.hold_back(&window).min(fresh)
        };
        let release = window.len() - hold;
        let payload = &window[before..release];
        if last || !payload.is_empty() {
            let opcode = if message.started {
                OP_CONTINUATION
            } else {
                message.opcode
            };
            write_frame(out, last, opcode, payload, self.direction);
            message.started = true;
        }
        message.held = window[release..].to_vec();
        if last {
            self.message = None;
        }
        // What was passed on is kept, as much as any view needs, to search
        // with what comes next.
        let mut passed = window;
        passed.truncate(release);
        let keep = self.credentials.hold_back(&passed);
        self.tail = passed.split_off(passed.len() - keep);
        Ok(())
    }

    /// A control frame, checked (or scrubbed) on its own and passed on.
    fn control(
        &mut self,
        opcode: u8,
        mut payload: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), Ended> {
        match self.direction {
            Direction::ToUpstream => {
                if let Some(leak) =
                    self.credentials
                        .find_leak(&payload, &self.host, "WebSocket control frame")
                {
                    return Err(Ended::Leak(leak));
                }
            }
            Direction::ToAgent => {
                self.credentials.scrub(&mut payload);
            }
        }
        write_frame(out, true, opcode, &payload, self.direction);
        Ok(())
    }
}

/// Appends one frame: masked with a fresh key toward the upstream (a
/// client's frames are masked), plain toward the agent.
fn write_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], direction: Direction) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let masked = direction == Direction::ToUpstream;
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let start = out.len();
    if masked {
        let key: [u8; 4] = rand::random();
        out.extend_from_slice(&key);
        out.extend_from_slice(payload);
        apply_mask(&mut out[start + 4..], Some(key), 0);
    } else {
        out.extend_from_slice(payload);
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
            Credentials::new(vec![Route::whole_host(
                Host::Name("route.test".into()),
                http::header::AUTHORIZATION,
                "Bearer".into(),
                Secret::new(SECRET.into()),
            )])
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

    /// The frames on the wire: (fin, opcode, unmasked payload, masked).
    fn frames(mut wire: &[u8]) -> Vec<(bool, u8, Vec<u8>, bool)> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let len = header_len(&wire[..2]);
            let (length, mask) = parse_header(&wire[..len]);
            let mut payload = wire[len..len + length as usize].to_vec();
            apply_mask(&mut payload, mask, 0);
            out.push((wire[0] & 0x80 != 0, wire[0] & 0x0f, payload, mask.is_some()));
            wire = &wire[len + length as usize..];
        }
        out
    }

    /// The messages on the wire, each (opcode, payload), checking that
    /// fragments follow the rules and every frame is masked or not.
    fn messages(wire: &[u8], masked: bool) -> Vec<(u8, Vec<u8>)> {
        let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut open = false;
        for (fin, opcode, payload, is_masked) in frames(wire) {
            assert_eq!(is_masked, masked);
            if opcode >= 8 {
                out.push((opcode, payload));
                continue;
            }
            if open {
                assert_eq!(opcode, 0, "a continuation");
                out.last_mut().unwrap().1.extend(payload);
            } else {
                assert_ne!(opcode, 0, "a message begins");
                out.push((opcode, payload));
            }
            open = !fin;
        }
        assert!(!open, "every message ends");
        out
    }

    fn frame_op(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, fin: bool) -> Vec<u8> {
        let mut wire = frame(payload, mask, fin);
        wire[0] = (wire[0] & 0x80) | opcode;
        wire
    }

    #[test]
    fn clean_messages_pass_unchanged_however_they_arrive() {
        let big = vec![b'a'; 70_000];
        let mut wire = frame(b"hello", Some([1, 2, 3, 4]), true);
        wire.extend(frame(&big, Some([9, 8, 7, 6]), true));
        wire.extend(frame(b"", Some([0, 0, 0, 0]), true));
        // A fragmented binary message with a ping inside it.
        wire.extend(frame_op(2, b"part one, ", Some([5, 5, 5, 5]), false));
        wire.extend(frame_op(9, b"ping", Some([6, 6, 6, 6]), true));
        wire.extend(frame_op(0, b"part two", Some([7, 7, 7, 7]), true));
        let expected = vec![
            (1, b"hello".to_vec()),
            (1, big.clone()),
            (1, Vec::new()),
            (9, b"ping".to_vec()),
            (2, b"part one, part two".to_vec()),
        ];
        for piece in [1, 3, 7, 1000, 1 << 20] {
            let (out, ended) = scan(Direction::ToUpstream, &wire, piece);
            assert_eq!(ended, Ok(()));
            assert_eq!(messages(&out, true), expected, "piece {piece}");
        }
        let plain: Vec<u8> = frames(&wire)
            .into_iter()
            .flat_map(|(fin, op, payload, _)| frame_op(op, &payload, None, fin))
            .collect();
        let (out, ended) = scan(Direction::ToAgent, &plain, 4096);
        assert_eq!(ended, Ok(()));
        assert_eq!(messages(&out, false), expected);
    }

    #[test]
    fn a_masked_secret_from_the_agent_ends_the_connection_before_it_goes() {
        let payload = format!("{{\"token\":\"{SECRET}\"}}");
        let wire = frame(payload.as_bytes(), Some([0x11, 0x22, 0x33, 0x44]), true);
        for piece in [1, 2, 5, 9, 64] {
            let (out, ended) = scan(Direction::ToUpstream, &wire, piece);
            assert!(matches!(ended, Err(Ended::Leak(_))), "piece {piece}");
            let sent: Vec<u8> = frames(&out).into_iter().flat_map(|f| f.2).collect();
            assert!(
                !String::from_utf8_lossy(&sent).contains("bbtest"),
                "piece {piece}: {sent:?}"
            );
        }
    }

    #[test]
    fn no_part_of_a_secret_split_across_frames_goes_out() {
        for at in 1..SECRET.len() {
            let (a, b) = SECRET.split_at(at);
            let mut wire = frame(format!("id={a}").as_bytes(), Some([1, 1, 1, 1]), false);
            let first = wire.len();
            wire.extend(frame_op(0, b.as_bytes(), Some([2, 2, 2, 2]), true));
            // The first frame alone: nothing of the secret leaves yet.
            let (out, ended) = scan(Direction::ToUpstream, &wire[..first], 4096);
            assert_eq!(ended, Ok(()));
            let sent: Vec<u8> = frames(&out).into_iter().flat_map(|f| f.2).collect();
            assert!(
                !String::from_utf8_lossy(&sent).contains(&a[..1]),
                "split at {at}: {sent:?}"
            );
            let (_, ended) = scan(Direction::ToUpstream, &wire, 4096);
            assert!(matches!(ended, Err(Ended::Leak(_))), "split at {at}");
        }
    }

    #[test]
    fn a_secret_split_across_frames_from_the_upstream_is_overwritten_whole() {
        for at in 1..SECRET.len() {
            let (a, b) = SECRET.split_at(at);
            let mut wire = frame(format!("you sent {a}").as_bytes(), None, false);
            wire.extend(frame_op(0, format!("{b}!").as_bytes(), None, true));
            let (out, ended) = scan(Direction::ToAgent, &wire, 4096);
            assert_eq!(ended, Ok(()));
            let got = messages(&out, false);
            assert_eq!(
                String::from_utf8_lossy(&got[0].1),
                format!("you sent {}!", "x".repeat(SECRET.len())),
                "split at {at}"
            );
        }
    }

    #[test]
    fn a_secret_in_a_control_frame_is_caught() {
        let wire = frame_op(9, SECRET.as_bytes(), Some([3, 3, 3, 3]), true);
        let (out, ended) = scan(Direction::ToUpstream, &wire, 4096);
        assert!(matches!(ended, Err(Ended::Leak(_))));
        assert!(out.is_empty());
        let wire = frame_op(10, SECRET.as_bytes(), None, true);
        let (out, _) = scan(Direction::ToAgent, &wire, 4096);
        assert_eq!(messages(&out, false)[0].1, vec![b'x'; SECRET.len()]);
    }

    #[test]
    fn secrets_from_the_upstream_are_overwritten() {
        let payload = format!("you sent {SECRET}!");
        let wire = frame(payload.as_bytes(), None, true);
        for piece in [1, 4, 4096] {
            let (out, ended) = scan(Direction::ToAgent, &wire, piece);
            assert_eq!(ended, Ok(()));
            let got = messages(&out, false);
            assert_eq!(
                String::from_utf8_lossy(&got[0].1),
                format!("you sent {}!", "x".repeat(SECRET.len())),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn unreadable_frames_are_refused() {
        let mut compressed = frame(b"x", None, true);
        compressed[0] |= 0x40;
        let reserved = frame_op(3, b"x", None, true);
        let stray = frame_op(0, b"x", None, true);
        let mut nested = frame_op(1, b"x", None, false);
        nested.extend(frame_op(1, b"y", None, true));
        let big_ping = frame_op(9, &[b'p'; 126], None, true);
        for wire in [compressed, reserved, stray, nested, big_ping] {
            let (_, ended) = scan(Direction::ToAgent, &wire, 4096);
            assert!(matches!(ended, Err(Ended::Unreadable(_))), "{wire:?}");
        }
    }
}
