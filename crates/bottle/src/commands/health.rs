//! `bottle health`: a container's health check. Each gate socket (or the
//! shim's loopback port, which reaches the gate) must answer an HTTP
//! `OPTIONS *` within a few seconds; the gate answers it without a record
//! in the audit log.

use std::time::Duration;

use anyhow::anyhow;

use crate::cli::HealthArgs;
use crate::{Failure, exit};

/// How long each check may take.
const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(args: HealthArgs) -> Result<i32, Failure> {
    if let Some(spec) = &args.user {
        let (uid, gid) = super::shim::user(spec)?;
        bottle_shim::drop_privileges(uid, gid).map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    }
    for socket in &args.sockets {
        bottle_backend::health::socket(socket, TIMEOUT)
            .map_err(|e| unhealthy(format!("{}: {e}", socket.display())))?;
    }
    for port in &args.ports {
        let stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], *port).into(), TIMEOUT)
            .map_err(|e| unhealthy(format!("127.0.0.1:{port}: {e}")))?;
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream.set_write_timeout(Some(TIMEOUT)).ok();
        bottle_backend::health::answers(stream)
            .map_err(|e| unhealthy(format!("127.0.0.1:{port}: {e}")))?;
    }
    Ok(0)
}

fn unhealthy(message: String) -> Failure {
    Failure::new(exit::UNAVAILABLE, anyhow!("unhealthy: {message}"))
}
