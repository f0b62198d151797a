//! Tearing a bottle down: by label, whatever this process recorded, and
//! by a guardian (`bottle reap`) when the launcher itself is gone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use futures_util::future::join_all;

use super::{IDENTITY_LABEL, LAUNCHER_LABEL, capability, connect, is_conflict, is_not_found};
use crate::BackendError;
use crate::state::BottleDir;

/// What a teardown removes besides containers.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub networks: bool,
    /// The bottle's volumes (its workspace): only when nothing is to be
    /// resumed (`--rm`).
    pub volumes: bool,
    /// Only containers and networks of this launcher (`PID:START`): a
    /// guardian must never touch the run that resumed its bottle.
    pub launcher: Option<&'a str>,
}

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
    if scope.volumes {
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
    if !scope.networks {
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

/// Starts the bottle's guardian, `bottle reap`, detached in a session of
/// its own: it outlives the launcher however the launcher ends (even
/// `kill -9`), waits for it to be gone, and then removes whatever of the
/// bottle is left. After a normal exit that is only the bottle's network,
/// whose removal is slow; after a crash it is everything the launcher
/// would have removed.
pub(super) fn spawn_guardian(
    identity: &str,
    state_dir: &std::path::Path,
) -> Result<(), BackendError> {
    use std::os::unix::process::CommandExt;
    let launcher = crate::process::Launcher::current()?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args([
        "reap",
        identity,
        "--launcher",
        &launcher.to_string(),
        "--state",
    ])
    .arg(state_dir)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    // A process group of its own keeps the terminal's signals (Ctrl-C, a
    // hang-up of the launcher's group) away from it.
    cmd.process_group(0);
    cmd.spawn()?;
    Ok(())
}

/// What `bottle reap` does: waits until `launcher` is gone, then removes
/// what is left of `identity`, retrying while the engine still counts a
/// removed container as attached, for up to `patience`.
pub async fn reap(
    identity: &str,
    launcher: Option<crate::process::Launcher>,
    state_dir: Option<&std::path::Path>,
    patience: Duration,
) -> Result<(), BackendError> {
    if let Some(launcher) = launcher {
        while launcher.is_alive() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A launcher that finished its work marked the bottle stopped (or, with
    // --rm, removed its directory); one that crashed left it running.
    let dir = state_dir.map(BottleDir::new);
    let metadata = dir.as_ref().and_then(|d| std::fs::read(d.metadata()).ok());
    let record: Option<serde_json::Value> = metadata.and_then(|m| serde_json::from_slice(&m).ok());
    // Crashed: the record still says running, under this guardian's
    // launcher. A record naming another launcher is a resumed run: not ours.
    let mine = launcher.map(|l| l.to_string());
    let crashed = record
        .as_ref()
        .is_some_and(|r| r["state"] == "running" && r["launcher"].as_str() == mine.as_deref());
    if record
        .as_ref()
        .is_some_and(|r| r["launcher"].as_str() != mine.as_deref())
        && mine.is_some()
    {
        // Resumed since: leave the new run's network alone too.
        return Ok(());
    }
    let remove_all = record
        .as_ref()
        .is_some_and(|r| r["plan"]["remove_on_exit"] == true)
        && !dir.as_ref().is_some_and(capability::is_preserved);
    let docker = connect().await?;
    let deadline = Instant::now() + patience;
    let scope = Scope {
        networks: true,
        volumes: crashed && remove_all,
        launcher: mine.as_deref(),
    };
    loop {
        match teardown(&docker, identity, scope).await {
            Ok(()) => break,
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if crashed && let (Some(dir), Some(mut record)) = (dir, record) {
        if remove_all {
            dir.remove()?;
        } else {
            record["state"] = "stopped".into();
            record["stopped_by"] = "guardian: the launcher ended without tearing down".into();
            dir.write_json(&dir.metadata(), &record)?;
        }
    }
    Ok(())
}
