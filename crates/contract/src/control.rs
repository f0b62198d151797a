//! The gate's control socket: how the person's `bottle approve` widens a
//! running gate, and how the launcher hands it a route's refreshed secret.
//! It lives in the bottle's `supervise/` directory, which is mounted into
//! the egress gate only — never into the agent's sandbox — and is
//! readable by the launching user alone (mode 0600), so nothing inside the
//! bottle can reach it, let alone approve its own requests.
//!
//! One JSON line each way per connection: a [`Change`] in, a [`Reply`] out.
//! The gate serves it; this module is the protocol and its client.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// File name of the control socket in the supervise directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// A change to apply now: one a person approved, or a refreshed secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Allow one more rule.
    Allow {
        rule: String,
        request: String,
        decided_by: String,
    },
    /// Add a credential route (and allow its host on 443).
    Route {
        host: String,
        header: String,
        scheme: String,
        secret: String,
        request: String,
        decided_by: String,
    },
    /// The bottle is being restarted on a rebuilt image.
    Image {
        image: String,
        request: String,
        decided_by: String,
    },
    /// The launcher ran the `token_command` of the route to `host` again:
    /// its secret is now `secret`. Nothing else of the route changes (its
    /// header, scheme, paths and placeholder stay), and the gate keeps
    /// watching for the secret it replaces.
    Rotate { host: String, secret: String },
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Allow { rule, request, .. } => write!(f, "Allow({rule}, {request})"),
            Change::Route {
                host,
                header,
                request,
                ..
            } => {
                write!(f, "Route({host}, {header}, secret ***, {request})")
            }
            Change::Image { image, request, .. } => write!(f, "Image({image}, {request})"),
            Change::Rotate { host, .. } => write!(f, "Rotate({host}, secret ***)"),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

/// Sends `change` to the gate listening on `socket` and waits for its
/// answer. An error means the gate did not apply it.
pub async fn send(socket: &Path, change: &Change) -> std::io::Result<Reply> {
    let exchange = async {
        let mut stream = connect(socket).await?;
        let mut line = serde_json::to_vec(change).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).await?;
        serde_json::from_str::<Reply>(&answer)
            .map_err(|e| std::io::Error::other(format!("the gate answered {answer:?}: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the gate did not answer"))?
}

/// Longest path `connect(2)` takes for a Unix socket, with its NUL.
pub const SUN_PATH_MAX: usize = 108;

/// Connects to `socket`, also when its path is longer than a socket
/// address holds (a deep state directory): through the directory's file
/// descriptor, `/proc/self/fd/N/NAME`.
async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    if socket.as_os_str().len() < SUN_PATH_MAX {
        return UnixStream::connect(socket).await;
    }
    use std::os::fd::AsRawFd;
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return UnixStream::connect(socket).await;
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let stream = UnixStream::connect(&short).await;
    drop(dir);
    stream
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_never_prints_its_secret() {
        let change = Change::Rotate {
            host: "api.example.com".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{change:?}").contains("hunter2"));
        let line = serde_json::to_string(&change).unwrap();
        assert!(line.contains(r#""op":"rotate""#), "{line}");
        let back: Change = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Change::Rotate { host, .. } if host == "api.example.com"));
    }
}
