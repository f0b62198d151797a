//! `bottle health`: a container's health check. Each gate socket (or the
//! shim's loopback port, which reaches the gate) must answer an HTTP
//! `OPTIONS *` within a few seconds; the gate answers it without a record
//! in the audit log.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::anyhow;

use crate::cli::HealthArgs;
use crate::{Failure, exit};

/// How long each check may take.
const TIMEOUT: Duration = Duration::from_secs(3);
const PROBE: &[u8] = b"OPTIONS * HTTP/1.1\r\nHost: health\r\nConnection: close\r\n\r\n";

pub fn run(args: HealthArgs) -> Result<i32, Failure> {
    if let Some(spec) = &args.user {
        let (uid, gid) = super::shim::user(spec)?;
        bottle_shim::drop_privileges(uid, gid).map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    }
    for socket in &args.sockets {
        let stream = std::os::unix::net::UnixStream::connect(socket)
            .map_err(|e| unhealthy(format!("{}: {e}", socket.display())))?;
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream.set_write_timeout(Some(TIMEOUT)).ok();
        answers(stream).map_err(|e| unhealthy(format!("{}: {e}", socket.display())))?;
    }
    for port in &args.ports {
        let stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], *port).into(), TIMEOUT)
            .map_err(|e| unhealthy(format!("127.0.0.1:{port}: {e}")))?;
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream.set_write_timeout(Some(TIMEOUT)).ok();
        answers(stream).map_err(|e| unhealthy(format!("127.0.0.1:{port}: {e}")))?;
    }
    Ok(0)
}

fn answers(mut stream: impl Read + Write) -> std::io::Result<()> {
    stream.write_all(PROBE)?;
    let mut head = [0u8; 8];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(std::io::Error::other("not an HTTP answer"))
    }
}

fn unhealthy(message: String) -> Failure {
    Failure::new(exit::UNAVAILABLE, anyhow!("unhealthy: {message}"))
}
