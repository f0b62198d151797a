//! Small helpers over the Engine API that the backend's parts share:
//! creating and starting containers (the gate with its secrets on stdin),
//! waiting for one, reading its last lines, removing images, and telling
//! the engine's expected errors apart.

use bollard::Docker;
use bollard::query_parameters::{LogsOptions, WaitContainerOptions};
use bottle_contract::config::Secrets;
use futures_util::StreamExt;

use crate::BackendError;

/// Starts the gate; with routes, hands it their secrets on its standard
/// input, which is then closed. Secrets never touch a file, the
/// environment or argv.
pub(super) async fn start_gate(
    docker: &Docker,
    gate: &str,
    secrets: Vec<String>,
) -> Result<(), BackendError> {
    let failed = |e: &dyn std::fmt::Display| BackendError::GateFailed(e.to_string());
    if secrets.is_empty() {
        return docker
            .start_container(gate, None)
            .await
            .map_err(|e| failed(&e));
    }
    let attach = docker
        .attach_container(
            gate,
            Some(
                bollard::query_parameters::AttachContainerOptionsBuilder::new()
                    .stream(true)
                    .stdin(true)
                    .build(),
            ),
        )
        .await
        .map_err(|e| failed(&e))?;
    docker
        .start_container(gate, None)
        .await
        .map_err(|e| failed(&e))?;
    let mut input = attach.input;
    let payload = serde_json::to_vec(&Secrets { secrets }).map_err(|e| failed(&e))?;
    use tokio::io::AsyncWriteExt;
    input.write_all(&payload).await?;
    input.shutdown().await?;
    Ok(())
}

/// Waits for `container` to stop; describes how it ended.
pub(super) async fn exit_status(docker: &Docker, container: &str) -> String {
    let mut wait = docker.wait_container(container, None::<WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(r)) => format!("exit {}", r.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            format!("exit {code}")
        }
        Some(Err(e)) => e.to_string(),
        None => "no status".to_owned(),
    }
}

/// The last lines `container` logged, indented, for a message.
pub(super) async fn log_tail(docker: &Docker, container: &str) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: "10".into(),
        ..Default::default()
    };
    let lines: Vec<String> = docker
        .logs(container, Some(options))
        .filter_map(|item| async move { item.ok().map(|l| l.to_string()) })
        .collect()
        .await;
    let text = lines.concat();
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(
            "; it said:\n{}",
            text.trim_end()
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

pub(super) async fn create_container(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
) -> Result<(), BackendError> {
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
        .name(name)
        .build();
    match docker.create_container(Some(options), body).await {
        Err(e) if is_conflict(&e) => {
            return Err(BackendError::NameTaken {
                name: name.to_owned(),
            });
        }
        other => other.map_err(|e| BackendError::docker(format!("create container {name}"), e))?,
    };
    Ok(())
}

/// Removes an image bot-bottle built.
pub async fn remove_image(docker: &Docker, id: &str) -> Result<(), BackendError> {
    docker
        .remove_image(
            id,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .map(|_| ())
        .map_err(|e| BackendError::docker(format!("remove image {id}"), e))
}

/// A removal already under way (by the guardian, or a concurrent cleanup).
pub(super) fn is_conflict(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

pub(super) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
