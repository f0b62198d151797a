//! Whether a gate answers: its socket (or the shim's loopback port, which
//! reaches it) must answer an HTTP `OPTIONS *` within a few seconds; the
//! gate answers it without a record in the audit log. The Docker health
//! checks (`bottle health`) and the native backend's `list` ask the same
//! way.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

const PROBE: &[u8] = b"OPTIONS * HTTP/1.1\r\nHost: health\r\nConnection: close\r\n\r\n";

/// Asks `stream` and checks that an HTTP answer starts.
pub fn answers(mut stream: impl Read + Write) -> std::io::Result<()> {
    stream.write_all(PROBE)?;
    let mut head = [0u8; 8];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(std::io::Error::other("not an HTTP answer"))
    }
}

/// Asks the gate socket at `path`, waiting at most `timeout`.
pub fn socket(path: &Path, timeout: Duration) -> std::io::Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    answers(stream)
}
