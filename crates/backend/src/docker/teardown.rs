//! Tearing a bottle down: by label, whatever this process recorded.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StopContainerOptions,
};
use futures_util::future::join_all;

use super::{IDENTITY_LABEL, LAUNCHER_LABEL, ROLE_LABEL, is_conflict, is_not_found};

use crate::{BackendError, Scope};

/// Removes every container (and, as `scope` says, network and volume)
/// labelled with `identity`, whether or not this process recorded creating
/// it: an interrupt can land between the engine creating a container and
/// the reply.
pub async fn teardown(
    docker: &Docker,
    identity: &str,
    scope: Scope<'_>,
) -> Result<(), BackendError> {
    let filter = HashMap::from([(
        "label".to_owned(),
        vec![format!("{IDENTITY_LABEL}={identity}")],
    )]);
    let mut run_filter = filter.clone();
    if let Some(launcher) = scope.launcher
        && let Some(labels) = run_filter.get_mut("label")
    {
        labels.push(format!("{LAUNCHER_LABEL}={launcher}"));
    }
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(run_filter.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| BackendError::docker("list containers", e))?;
    // A gate stopped by SIGTERM writes what its audit log still has
    // queued (and the counts of refusals it held back); one removed by
    // force would lose the last few milliseconds of decisions.
    let gates = containers.iter().filter(|c| {
        c.state.as_ref().is_some_and(|s| s.to_string() == "running")
            && c.labels
                .as_ref()
                .and_then(|l| l.get(ROLE_LABEL))
                .is_some_and(|role| role != "agent")
    });
    join_all(gates.filter_map(|c| c.id.as_deref()).map(|id| async move {
        let options = StopContainerOptions {
            t: i32::try_from(crate::GATE_STOP_GRACE.as_secs()).ok(),
            ..Default::default()
        };
        let _ = tokio::time::timeout(
            crate::GATE_STOP_GRACE + Duration::from_secs(5),
            docker.stop_container(id, Some(options)),
        )
        .await;
    }))
    .await;
    let removals = containers
        .iter()
        .filter_map(|c| c.id.as_deref())
        .map(|id| async move {
            docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
        });
    let mut errors: Vec<String> = join_all(removals)
        .await
        .into_iter()
        .filter_map(|r| {
            r.err()
                .filter(|e| !is_not_found(e) && !is_conflict(e))
                .map(|e| e.to_string())
        })
        .collect();
    if scope.data {
        let volumes = docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filter.clone()),
            }))
            .await
            .map_err(|e| BackendError::docker("list volumes", e))?;
        for volume in volumes.volumes.unwrap_or_default() {
            if let Err(e) = docker
                .remove_volume(&volume.name, None::<RemoveVolumeOptions>)
                .await
                && !is_not_found(&e)
            {
                errors.push(e.to_string());
            }
        }
    }
    if !scope.network {
        return finish_teardown(identity, errors);
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(run_filter),
        }))
        .await
        .map_err(|e| BackendError::docker("list networks", e))?;
    for network in networks {
        if let Some(id) = network.id
            && let Err(e) = docker.remove_network(&id).await
            && !is_not_found(&e)
        {
            errors.push(e.to_string());
        }
    }
    finish_teardown(identity, errors)
}

fn finish_teardown(identity: &str, errors: Vec<String>) -> Result<(), BackendError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BackendError::docker(
            format!("tear down {identity} (run `bottle cleanup` to retry)"),
            errors.join("; "),
        ))
    }
}
