//! The Docker side of a capability block (see [`crate::capability`]): a
//! bottle's own image is `FROM` the image it runs now, plus every
//! approved fragment, with bot-bottle's files laid back on top, built step
//! by step under the bottle's policy (see [`super::build`]).

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, StopContainerOptions};
use bottle_manifest::plan::Plan;
use bottle_manifest::provision::GrantedImage;

use super::build::BuildPolicy;
use super::images::{self, ImageKind, ImageSpec, SelfBinary};
use super::{IDENTITY_LABEL, ROLE_LABEL, STOP_GRACE_SECS};
use crate::state::BottleDir;
use crate::{BackendError, Reporter};

/// The tag the agent container runs for a plan's `images.agent`.
pub fn agent_run_tag(agent_image: &str, is_default: bool) -> String {
    if is_default {
        agent_image.to_owned()
    } else {
        super::derived_tag(agent_image)
    }
}

/// What a bottle's own image is built from, and under what policy.
#[derive(Debug, Clone)]
pub struct BottleImage {
    pub identity: String,
    /// The image the agent runs without changes (see [`agent_run_tag`]).
    pub agent_tag: String,
    pub granted: GrantedImage,
    /// The bottle's allowlist, address checks and limits, which the build
    /// runs under.
    pub policy: BuildPolicy,
}

impl BottleImage {
    /// A plan's own image with `granted`, under its policy plus the rules
    /// `approved` since it started.
    pub fn of(plan: &Plan, granted: &GrantedImage, approved: &[String]) -> BottleImage {
        BottleImage {
            identity: plan.identity.clone(),
            agent_tag: agent_run_tag(&plan.images.agent, plan.images.agent_is_default),
            granted: granted.clone(),
            policy: build_policy(plan, approved),
        }
    }

    pub(super) fn spec(&self) -> ImageSpec {
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
/// since), private ranges, gate network and limits.
fn build_policy(plan: &Plan, approved: &[String]) -> BuildPolicy {
    BuildPolicy {
        identity: plan.identity.clone(),
        dir: BottleDir::new(&plan.state_dir),
        egress: crate::gate_config::policy(
            plan.egress
                .allow
                .iter()
                .map(|r| r.text.clone())
                .chain(approved.iter().cloned()),
            &plan.egress.allow_private,
        ),
        gate_network: plan.gate_network.clone(),
        gate_image: plan.images.gate.clone(),
        upstream_ca: plan.egress.upstream_ca.is_some(),
        memory_bytes: plan.resources.memory_bytes,
        pids: plan.resources.pids,
        cpus: plan.resources.cpus,
        timeout: Duration::from_secs(plan.resources.build_timeout_secs),
    }
}

/// Builds (or finds up to date) a bottle's own image, reporting progress.
pub async fn build(
    docker: &Docker,
    image: &BottleImage,
    lock_dir: &std::path::Path,
    reporter: &dyn Reporter,
) -> Result<(), BackendError> {
    let binary = SelfBinary::current()?;
    images::ensure(docker, &image.spec(), &binary, lock_dir, reporter).await
}

/// Stops the agent's container of `identity` (its volumes stay). Returns
/// whether one was running.
pub async fn stop_agent(docker: &Docker, identity: &str) -> Result<bool, BackendError> {
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
        stop(docker, id).await?;
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
