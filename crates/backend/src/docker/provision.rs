//! Provisioning the agent's container before it starts: the skills (see
//! [`crate::provision`]) are copied into the created container's home.

use std::io;

use bollard::Docker;
use bollard::query_parameters::UploadToContainerOptions;
use bottle_manifest::plan::AGENT_HOME;
use bottle_manifest::provision::ProvisionPlan;
use bytes::Bytes;

use crate::BackendError;

/// Copies the skills into the created (not started) `container`.
pub async fn provision(
    docker: &Docker,
    container: &str,
    plan: &ProvisionPlan,
) -> Result<(), BackendError> {
    let plan = plan.clone();
    let tar = tokio::task::spawn_blocking(move || crate::provision::skills(&plan))
        .await
        .map_err(io::Error::other)??;
    if let Some(tar) = tar {
        upload(docker, container, AGENT_HOME, tar, "the skills").await?;
    }
    Ok(())
}

async fn upload(
    docker: &Docker,
    container: &str,
    path: &str,
    tar: Bytes,
    what: &str,
) -> Result<(), BackendError> {
    let options = UploadToContainerOptions {
        path: path.into(),
        ..Default::default()
    };
    docker
        .upload_to_container(container, Some(options), bollard::body_full(tar))
        .await
        .map_err(|e| BackendError::docker(format!("copy {what} into {container}"), e))
}
