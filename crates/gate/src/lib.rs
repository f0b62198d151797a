//! `bottle gate`: one async process per bottle serving its roles on Unix
//! sockets in a directory shared only with that bottle (DESIGN.md §2).
//!
//! Roles: [`egress`] (the HTTP forward proxy). Every decision is appended to
//! the bottle's [`audit`] log. Anything the gate cannot set up makes it
//! exit: a gate that is not serving is a closed door, never an open one.
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod egress;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;

pub use config::GateConfig;

/// Errors that stop the gate from starting.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("gate configuration {}: {message}", .path.display())]
    Config { path: PathBuf, message: String },
    #[error("invalid allow rule in the gate configuration: {0}")]
    Rule(#[from] bottle_manifest::host::RuleError),
}

/// Runs the gate until SIGTERM or SIGINT.
pub async fn run(config: GateConfig) -> Result<(), GateError> {
    let audit = Arc::new(audit::Audit::open(&config.audit_log)?);
    let policy = egress::Policy::new(config.egress.rules()?, &config.egress);
    let listener = bind(&config.socket_dir, config::EGRESS_SOCKET)?;
    let egress = Arc::new(egress::Egress::new(policy, Arc::clone(&audit)));
    tracing::info!(identity = %config.identity, "gate serving");
    audit.record("gate", "start", serde_json::Map::new());

    let serving = tokio::spawn(egress.serve(listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = serving => {}
    }
    audit.record("gate", "stop", serde_json::Map::new());
    Ok(())
}

/// Binds a socket under a temporary name and renames it into place once it
/// listens, so a client never finds a socket that refuses connections
/// because the gate is still starting.
fn bind(dir: &Path, name: &str) -> Result<UnixListener, GateError> {
    let path = dir.join(name);
    let staging = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)?;
    // The agent runs as another user: it must be able to connect.
    fs_err::set_permissions(&staging, std::fs::Permissions::from_mode(0o666))?;
    fs_err::rename(&staging, &path)?;
    Ok(listener)
}
