//! Capability blocks (DESIGN.md §7): an approved image change becomes the
//! bottle's own image — `FROM` the image it runs now, plus every approved
//! fragment, with bot-bottle's files laid back on top — and the bottle
//! comes back on it under the same identity with its volumes.
//!
//! `bottle approve` builds the image (with progress) while the agent keeps
//! working; only when the build succeeded does it leave a restart note in
//! the state directory and stop the agent's container. The launcher, which
//! holds the person's terminal, sees the note when the container exits and
//! starts the agent again on the new image. A build that fails changes
//! nothing: the bottle keeps running on its old image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, StopContainerOptions};
use bottle_manifest::plan::Plan;
use bottle_manifest::provision::GrantedImage;
use serde::{Deserialize, Serialize};

use super::images::{self, ImageKind, ImageSpec, SelfBinary};
use super::{IDENTITY_LABEL, ROLE_LABEL, STOP_GRACE_SECS};
use crate::state::BottleDir;
use crate::{BackendError, Reporter};

/// The tag of a bottle's own image.
pub fn bottle_tag(identity: &str) -> String {
    format!("bot-bottle/bottle-{identity}:latest")
}

/// The tag the agent container runs for a plan's `images.agent`.
pub fn agent_run_tag(agent_image: &str, is_default: bool) -> String {
    if is_default {
        agent_image.to_owned()
    } else {
        super::derived_tag(agent_image)
    }
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

/// What a bottle's own image is built from.
#[derive(Debug, Clone)]
pub struct BottleImage {
    pub identity: String,
    /// The image the agent runs without changes (see [`agent_run_tag`]).
    pub agent_tag: String,
    /// The network `RUN` steps use: the bottle's `gate_network`, if any.
    pub network: Option<String>,
    pub granted: GrantedImage,
}

impl BottleImage {
    fn spec(&self) -> ImageSpec {
        ImageSpec {
            fragment: Some(self.granted.fragment()),
            network: self.network.clone(),
            labels: vec![(IDENTITY_LABEL.to_owned(), self.identity.clone())],
            ..ImageSpec::new(ImageKind::Bottle, &self.granted.tag, &self.agent_tag)
        }
    }

    /// The Dockerfile it is built from.
    pub fn dockerfile(&self) -> String {
        self.spec().dockerfile()
    }
}

/// The image spec of a plan's own image.
pub(super) fn bottle_image(plan: &Plan, agent_tag: &str, granted: &GrantedImage) -> ImageSpec {
    BottleImage {
        identity: plan.identity.clone(),
        agent_tag: agent_tag.to_owned(),
        network: plan.gate_network.clone(),
        granted: granted.clone(),
    }
    .spec()
}

/// Builds (or finds up to date) a bottle's own image, reporting progress.
pub async fn build(
    image: &BottleImage,
    lock_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<(), BackendError> {
    let docker = super::connect().await?;
    let binary = SelfBinary::current()?;
    images::ensure(&docker, &image.spec(), &binary, lock_dir, reporter).await
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
/// volumes and state are kept when it stops, even if it was started with
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

/// Stops the agent's container of `identity` (its volumes stay). Returns
/// whether one was running.
pub async fn stop_agent(identity: &str) -> Result<bool, BackendError> {
    let docker = super::connect().await?;
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{IDENTITY_LABEL}={identity}"),
            format!("{ROLE_LABEL}=agent"),
        ],
    )]);
    let running = docker
        .list_containers(Some(ListContainersOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| BackendError::docker("list containers", e))?;
    let mut stopped = false;
    for id in running.iter().filter_map(|c| c.id.as_deref()) {
        stop(&docker, id).await?;
        stopped = true;
    }
    Ok(stopped)
}

async fn stop(docker: &Docker, id: &str) -> Result<(), BackendError> {
    let options = StopContainerOptions {
        t: Some(STOP_GRACE_SECS),
        ..Default::default()
    };
    tokio::time::timeout(
        Duration::from_secs(STOP_GRACE_SECS as u64 + 10),
        docker.stop_container(id, Some(options)),
    )
    .await
    .map_err(|_| BackendError::docker(format!("stop {id}"), "timed out"))?
    .map_err(|e| BackendError::docker(format!("stop {id}"), e))
}
