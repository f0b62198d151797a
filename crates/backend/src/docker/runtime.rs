//! Which runtime the agent's container runs under: gVisor (`runsc`) when
//! asked for, or under `auto` when the engine has a runsc that works here;
//! the engine's default otherwise.

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptions;
use bottle_manifest::manifest::Runtime;

use super::{create_container, exit_status};
use crate::BackendError;

/// The runtime to give the agent's container (`None`: the engine's default).
pub(super) async fn resolve_runtime(
    docker: &Docker,
    wanted: Runtime,
    base: &str,
) -> Result<Option<String>, BackendError> {
    if wanted == Runtime::Runc {
        return Ok(Some("runc".into()));
    }
    let info = docker
        .info()
        .await
        .map_err(|e| BackendError::docker("read engine info", e))?;
    let has_runsc = info
        .runtimes
        .as_ref()
        .is_some_and(|r| r.contains_key("runsc"));
    match (wanted, has_runsc) {
        (Runtime::Runsc, true) => Ok(Some("runsc".into())),
        (Runtime::Runsc, false) => Err(BackendError::RuntimeMissing),
        // auto: gVisor when it works here, the engine's default otherwise.
        (_, true) if runsc_works(docker, &info, base).await => Ok(Some("runsc".into())),
        _ => Ok(None),
    }
}

/// Whether the engine's runsc can run a basic command (a `stat`, which an
/// old gVisor on a new kernel fails). Probed once per engine and runsc
/// binary, remembered in the temporary directory.
async fn runsc_works(docker: &Docker, info: &bollard::models::SystemInfo, image: &str) -> bool {
    let key = format!(
        "{}-{}",
        info.id.clone().unwrap_or_default(),
        info.server_version.clone().unwrap_or_default()
    );
    // The registered binary (and its modification time): a new gVisor is
    // probed afresh.
    let path = info
        .runtimes
        .as_ref()
        .and_then(|r| r.get("runsc")?.path.clone())
        .unwrap_or_default();
    let runsc = std::fs::metadata(&path)
        .map(|m| format!("{path}:{}", std::os::unix::fs::MetadataExt::mtime(&m)))
        .unwrap_or(path);
    let memo = std::env::temp_dir().join(format!(
        "bot-bottle-{}/runsc-{}.probe",
        nix::unistd::getuid(),
        sha_hex(&format!("{key}:{runsc}"))
    ));
    if let Ok(verdict) = std::fs::read_to_string(&memo) {
        return verdict == "ok";
    }
    let name = format!("bot-bottle-runsc-probe-{}", std::process::id());
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec!["stat".into(), "/".into()]),
        host_config: Some(bollard::models::HostConfig {
            runtime: Some("runsc".into()),
            network_mode: Some("none".into()),
            auto_remove: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ok = async {
        create_container(docker, &name, body).await.ok()?;
        docker.start_container(&name, None).await.ok()?;
        let status = exit_status(docker, &name).await;
        Some(status == "exit 0")
    }
    .await
    .unwrap_or(false);
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    if let Some(dir) = memo.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&memo, if ok { "ok" } else { "broken" });
    ok
}

fn sha_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the agent will run under, said for the preflight: `runsc (gVisor)`
/// or `runc`, and why when `auto` chose.
pub async fn describe_runtime(
    docker: &Docker,
    wanted: Runtime,
    base: &str,
) -> Result<String, BackendError> {
    let chosen = resolve_runtime(docker, wanted, base).await?;
    Ok(match (wanted, chosen.as_deref()) {
        (Runtime::Auto, Some("runsc")) => {
            "runsc (gVisor): the engine has it and runtime is auto".to_owned()
        }
        (Runtime::Auto, _) => {
            "the engine's default (runc): it has no working runsc runtime (see docs/gvisor.md)"
                .to_owned()
        }
        (_, Some("runsc")) => "runsc (gVisor)".to_owned(),
        _ => "runc".to_owned(),
    })
}
