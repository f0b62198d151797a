//! Another terminal on a native bottle's agent. The launcher serves the
//! sandbox's pseudo-terminal on a Unix socket in the bottle's private
//! state directory (`native/attach.sock`, `0600` in a `0700` tree: the
//! launching user's alone; the agent never sees it), and `bottle
//! native-attach` connects a terminal to it: the agent's output goes to
//! every attached terminal and the launcher's own, keys come from any of
//! them, and Ctrl-P Ctrl-Q detaches, leaving the agent running.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The subcommand that attaches: `bottle native-attach` ([`AttachArgs`]).
pub const SUBCOMMAND: &str = "native-attach";
/// The socket's name in the bottle's `native/` directory.
pub const SOCKET: &str = "attach.sock";
/// The keys that detach a terminal (Ctrl-P Ctrl-Q, as `docker attach`).
pub const DETACH: [u8; 2] = [0x10, 0x11];
/// Largest frame a client may send.
const MAX_FRAME: usize = 64 * 1024;
/// How long an attached terminal may keep the agent's output waiting
/// before it is dropped.
const SLOW_CLIENT: Duration = Duration::from_millis(200);

/// `bottle native-attach SOCKET`: one typed command line, built by the
/// backend's attach argv and parsed by the binary.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AttachArgs {
    /// The bottle's attach socket.
    pub socket: PathBuf,
}

impl AttachArgs {
    /// The arguments after `bottle native-attach`, which parse back to
    /// `self`.
    pub fn to_args(&self) -> Vec<String> {
        vec![self.socket.display().to_string()]
    }
}

/// What an attached terminal sends: keys, or its window's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Keys(Vec<u8>),
    Size { rows: u16, cols: u16 },
}

impl Frame {
    /// `[kind][length, 4 bytes big-endian][payload]`.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload) = match self {
            Frame::Keys(keys) => (0u8, keys.clone()),
            Frame::Size { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend(cols.to_be_bytes());
                (1u8, p)
            }
        };
        let mut out = vec![kind];
        out.extend(
            u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend(payload);
        out
    }

    /// The next frame, or `None` at the end of the stream. A frame of an
    /// unknown kind or past [`MAX_FRAME`] ends the stream with an error.
    pub fn read(r: &mut impl Read) -> std::io::Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            other => other?,
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "a frame of {len} bytes (at most {MAX_FRAME})"
            )));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        match (head[0], payload.as_slice()) {
            (0, _) => Ok(Some(Frame::Keys(payload))),
            (1, [a, b, c, d]) => Ok(Some(Frame::Size {
                rows: u16::from_be_bytes([*a, *b]),
                cols: u16::from_be_bytes([*c, *d]),
            })),
            (kind, _) => Err(std::io::Error::other(format!("a frame of kind {kind}"))),
        }
    }
}

/// The terminals attached to one sandbox's terminal.
#[derive(Clone, Default)]
pub struct Attached {
    clients: Arc<Mutex<Vec<UnixStream>>>,
}

impl Attached {
    /// Copies the agent's output to every attached terminal; one that
    /// cannot take it in time is dropped.
    pub fn broadcast(&self, bytes: &[u8]) {
        let mut clients = match self.clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients.retain_mut(|c| c.write_all(bytes).is_ok());
    }

    /// Ends every attachment (the agent's terminal is gone).
    fn close(&self) {
        let clients = match self.clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        for c in clients.iter() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Serving the sandbox's terminal on the socket; ends (the socket removed,
/// every attached terminal told) when dropped.
pub struct Server {
    path: PathBuf,
    accept: tokio::task::JoinHandle<()>,
    pub attached: Attached,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        self.attached.close();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `master` (the sandbox's terminal) at `path`.
pub fn serve(path: &Path, master: &File) -> std::io::Result<Server> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let attached = Attached::default();
    let clients = attached.clients.clone();
    let master = master.try_clone()?;
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let (Ok(()), Ok(()), Ok(reader), Ok(keys)) = (
                stream.set_nonblocking(false),
                stream.set_write_timeout(Some(SLOW_CLIENT)),
                stream.try_clone(),
                master.try_clone(),
            ) else {
                continue;
            };
            match clients.lock() {
                Ok(mut c) => c.push(stream),
                Err(poisoned) => poisoned.into_inner().push(stream),
            }
            std::thread::spawn(move || take_keys(reader, keys));
        }
    });
    Ok(Server {
        path: path.to_owned(),
        accept,
        attached,
    })
}

/// An attached terminal's keys into the sandbox's terminal, and its size.
fn take_keys(mut from: UnixStream, mut master: File) {
    while let Ok(Some(frame)) = Frame::read(&mut from) {
        match frame {
            Frame::Keys(keys) => {
                if master.write_all(&keys).is_err() {
                    break;
                }
            }
            Frame::Size { rows, cols } => {
                let size = rustix::termios::Winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                let _ = rustix::termios::tcsetwinsize(&master, size);
            }
        }
    }
}

/// `bottle native-attach`: this terminal on the agent's until the agent
/// ends, Ctrl-P Ctrl-Q detaches, or the connection fails ([`Ended`]).
pub fn attach(args: &AttachArgs) -> std::io::Result<Ended> {
    let stream = UnixStream::connect(&args.socket).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "no agent terminal at {}: the bottle is not running, or its launcher has no terminal ({e})",
                args.socket.display()
            ),
        )
    })?;
    let _raw = crate::terminal::RawMode::enter();
    let mut sender = stream.try_clone()?;
    let size = current_size();
    if let Some((rows, cols)) = size {
        sender.write_all(&Frame::Size { rows, cols }.encode())?;
    }
    let detached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&detached);
    let closer = stream.try_clone()?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        // A Ctrl-P that ended a read, held back until the next key shows
        // whether it begins a detach (as docker does).
        let mut held = false;
        let mut last_size = size;
        let detach = |out: &[u8], sender: &mut UnixStream| {
            if !out.is_empty() {
                let _ = sender.write_all(&Frame::Keys(out.to_vec()).encode());
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = closer.shutdown(std::net::Shutdown::Both);
        };
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
            let keys = &buf[..n];
            let mut out = Vec::with_capacity(n + 1);
            if std::mem::take(&mut held) {
                if keys[0] == DETACH[1] {
                    return detach(&out, &mut sender);
                }
                out.push(DETACH[0]);
            }
            for (i, &key) in keys.iter().enumerate() {
                if key != DETACH[0] {
                    out.push(key);
                    continue;
                }
                match keys.get(i + 1) {
                    Some(&next) if next == DETACH[1] => return detach(&out, &mut sender),
                    Some(_) => out.push(key),
                    None => held = true,
                }
            }
            let now = current_size();
            if now != last_size
                && let Some((rows, cols)) = now
            {
                let _ = sender.write_all(&Frame::Size { rows, cols }.encode());
                last_size = now;
            }
            if !out.is_empty() && sender.write_all(&Frame::Keys(out).encode()).is_err() {
                break;
            }
        }
    });
    let mut from = stream;
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 8192];
    let end = loop {
        match from.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = stdout.write_all(&buf[..n]).and(stdout.flush()) {
                    break Err(format!("cannot write to this terminal: {e}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(format!("the connection to the launcher failed: {e}")),
        }
    };
    if detached.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Ended::Detached);
    }
    Ok(match end {
        Ok(()) => Ended::Closed,
        Err(why) => Ended::Lost(why),
    })
}

/// How an attached terminal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Ctrl-P Ctrl-Q: the agent runs on.
    Detached,
    /// The launcher closed the agent's terminal: the agent has ended.
    Closed,
    /// This end failed; the agent may still run.
    Lost(String),
}

fn current_size() -> Option<(u16, u16)> {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|s| (s.ws_row, s.ws_col))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_and_hostile_ones_end_the_stream() {
        let frames = [
            Frame::Keys(b"ls\r".to_vec()),
            Frame::Size {
                rows: 40,
                cols: 120,
            },
            Frame::Keys(Vec::new()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut r = std::io::Cursor::new(bytes);
        for f in &frames {
            assert_eq!(Frame::read(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read(&mut r).unwrap(), None);
        let huge = [0u8, 0xff, 0xff, 0xff, 0xff];
        assert!(Frame::read(&mut std::io::Cursor::new(huge)).is_err());
        let unknown = [9u8, 0, 0, 0, 0];
        assert!(Frame::read(&mut std::io::Cursor::new(unknown)).is_err());
        let short_size = [1u8, 0, 0, 0, 1, 7];
        assert!(Frame::read(&mut std::io::Cursor::new(short_size)).is_err());
    }

    #[test]
    fn the_attach_command_line_parses_back() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: AttachArgs,
        }
        let args = AttachArgs {
            socket: "/state/a b/native/attach.sock".into(),
        };
        let argv = std::iter::once("native-attach".to_owned()).chain(args.to_args());
        assert_eq!(Wrap::try_parse_from(argv).unwrap().args, args);
    }
}
