//! Capability blocks (DESIGN.md §7), the part every backend shares: an
//! approved image change is recorded in the bottle's grants; `bottle
//! approve` has the backend build the bottle's own image while the agent
//! keeps working, and only when the build succeeded leaves a restart note
//! and stops the agent. The launcher, which holds the person's terminal,
//! sees the note when the agent exits and starts it again on the new
//! image (see [`crate::lifecycle`]). A backend that cannot build images
//! refuses, and the agent is told why.

use std::path::PathBuf;

use bottle_manifest::provision::GrantedImage;
use serde::{Deserialize, Serialize};

use crate::BackendError;
use crate::state::BottleDir;

/// The tag of a bottle's own image.
pub fn bottle_tag(identity: &str) -> String {
    format!("bot-bottle/bottle-{identity}:latest")
}

/// How `show_policy` names a bottle's own image.
pub fn describe(granted: &GrantedImage, agent_image: &str) -> String {
    format!(
        "{} ({agent_image} plus {} approved change{})",
        granted.tag,
        granted.fragments.len(),
        if granted.fragments.len() == 1 {
            ""
        } else {
            "s"
        }
    )
}

/// An image change to build: every approved fragment, under the bottle's
/// policy with the rules approved since it started.
#[derive(Debug, Clone)]
pub struct ImageChange {
    pub granted: GrantedImage,
    /// Allow rules a person approved since the plan was made.
    pub approved: Vec<String>,
}

/// The note `bottle approve` leaves for the launcher: come back on this
/// image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restart {
    pub request: String,
    pub image: GrantedImage,
}

fn restart_path(dir: &BottleDir) -> PathBuf {
    dir.root.join("restart.json")
}

fn preserved_path(dir: &BottleDir) -> PathBuf {
    dir.root.join("preserved")
}

/// Leaves the restart note.
pub fn request_restart(dir: &BottleDir, restart: &Restart) -> Result<(), BackendError> {
    dir.write_json(&restart_path(dir), restart)
}

/// Takes the restart note, if there is one.
pub fn take_restart(dir: &BottleDir) -> Result<Option<Restart>, BackendError> {
    let path = restart_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BackendError::Io { path, source }),
    };
    let _ = std::fs::remove_file(&path);
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        BackendError::Other(std::io::Error::other(format!(
            "{}: not a restart note: {e}",
            path.display()
        )))
    })
}

/// Marks the bottle preserved: from its first capability block on, its
/// data and state are kept when it stops, even if it was started with
/// `--rm` — it carries changes a person approved.
pub fn mark_preserved(dir: &BottleDir) -> Result<(), BackendError> {
    let path = preserved_path(dir);
    std::fs::write(&path, b"an approved image change: kept until `bottle rm`\n")
        .map_err(|source| BackendError::Io { path, source })
}

/// Whether [`mark_preserved`] was called.
pub fn is_preserved(dir: &BottleDir) -> bool {
    preserved_path(dir).exists()
}
