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

use super::build::BuildPolicy;
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

/// What a bottle's own image is built from, and under what policy.
#[derive(Debug, Clone)]
pub struct BottleImage {
    pub identity: String,
    /// The image the agent runs without changes (see [`agent_run_tag`]).
    pub agent_tag: String,
    pub granted: GrantedImage,
    /// The bottle's allowlist, address checks and limits, which the build
    /// runs under (see [`super::build`]).
    pub policy: BuildPolicy,
}

impl BottleImage {
    fn spec(&self) -> ImageSpec {
        ImageSpec {
            fragment: Some(self.granted.fragment()),
            gated: Some((self.granted.fragments.clone(), self.policy.clone())),
            labels: vec![(IDENTITY_LABEL.to_owned(), self.identity.clone())],
            ..ImageSpec::new(ImageKind::Bottle, &self.granted.tag, &self.agent_tag)
        }
    }

    /// The Dockerfile that describes what is built (kept on record for the
    /// person; the build carries the parsed steps out itself).
    pub fn dockerfile(&self) -> String {
        self.spec().dockerfile()
    }
}

/// The build policy of a plan: its allowlist (with the rules `approved`
/// since), private ranges, gate network and limits. Read through the same
/// view as a recorded plan, so a plan and its record cannot disagree.
pub fn build_policy(plan: &Plan, approved: &[String]) -> Result<BuildPolicy, String> {
    let value = serde_json::to_value(plan).map_err(|e| e.to_string())?;
    let recorded: RecordedPlan = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok(recorded.policy(approved))
}

/// The part of a recorded plan (`metadata.json`'s `plan`) a build needs.
#[derive(Debug, Deserialize)]
struct RecordedPlan {
    identity: String,
    state_dir: PathBuf,
    gate_network: Option<String>,
    images: RecordedImages,
    egress: RecordedEgress,
    resources: RecordedResources,
}

#[derive(Debug, Deserialize)]
struct RecordedImages {
    agent: String,
    agent_is_default: bool,
    gate: String,
}

#[derive(Debug, Deserialize)]
struct RecordedEgress {
    allow: Vec<RecordedRule>,
    allow_private: Vec<String>,
    upstream_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct RecordedRule {
    text: String,
}

#[derive(Debug, Deserialize)]
struct RecordedResources {
    memory_bytes: u64,
    pids: i64,
    cpus: Option<f64>,
    #[serde(default = "default_build_timeout")]
    build_timeout_secs: u64,
}

fn default_build_timeout() -> u64 {
    bottle_manifest::validate::DEFAULT_BUILD_TIMEOUT_SECS
}

/// A bottle's own image with `granted`, from the plan its `metadata.json`
/// recorded and the rules approved since (`approved`). Returns the image
/// and the agent image it is built on.
pub fn recorded_image(
    plan: &serde_json::Value,
    granted: GrantedImage,
    approved: &[String],
) -> Result<(BottleImage, String), String> {
    let plan: RecordedPlan = serde_json::from_value(plan.clone())
        .map_err(|e| format!("the recorded plan does not say what a build needs: {e}"))?;
    let policy = plan.policy(approved);
    let agent_tag = agent_run_tag(&plan.images.agent, plan.images.agent_is_default);
    Ok((
        BottleImage {
            identity: plan.identity,
            agent_tag,
            granted,
            policy,
        },
        plan.images.agent,
    ))
}

impl RecordedPlan {
    fn policy(&self, approved: &[String]) -> BuildPolicy {
        BuildPolicy {
            identity: self.identity.clone(),
            dir: BottleDir::new(&self.state_dir),
            egress: crate::gate_config::policy(
                self.egress
                    .allow
                    .iter()
                    .map(|r| r.text.clone())
                    .chain(approved.iter().cloned()),
                &self.egress.allow_private,
            ),
            gate_network: self.gate_network.clone(),
            gate_image: self.images.gate.clone(),
            upstream_ca: self.egress.upstream_ca.is_some(),
            memory_bytes: self.resources.memory_bytes,
            pids: self.resources.pids,
            cpus: self.resources.cpus,
            timeout: Duration::from_secs(self.resources.build_timeout_secs),
        }
    }
}

/// The image spec of a plan's own image.
pub(super) fn bottle_image(
    plan: &Plan,
    agent_tag: &str,
    granted: &GrantedImage,
) -> Result<ImageSpec, BackendError> {
    let policy = build_policy(plan, &[]).map_err(|e| BackendError::Build {
        image: granted.tag.clone(),
        message: format!("the plan does not say what a build needs: {e}"),
        log: String::new(),
    })?;
    Ok(BottleImage {
        identity: plan.identity.clone(),
        agent_tag: agent_tag.to_owned(),
        granted: granted.clone(),
        policy,
    }
    .spec())
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
