//! The build's containers: its gate, the container the steps run in,
//! the one that lays bot-bottle's files over the result, the commits, and
//! the clean-up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CommitContainerOptions, KillContainerOptions, RemoveContainerOptions, UploadToContainerOptions,
};
use bottle_contract::config::{EGRESS_SOCKET, GateConfig, GateRole, TlsConfig};
use bottle_manifest::plan::{PROXY_PORT, TRUST_TMPFS};

use super::{BUILD_CAPS, Build, GATE_AUDIT_LOG, GATE_BUILD_DIR, GATE_DIR, SOCKETS, State, TOOLS};
use crate::BackendError;
use crate::docker::{create_container, is_not_found, start_gate};

impl Build<'_> {
    /// Kills the steps' container, saves it as a staging image, lays
    /// bot-bottle's files over it and prepares the trust stores in a fresh
    /// container (bot-bottle's static binary, nothing of the image's run),
    /// and commits that as `tag` with the configuration the steps made.
    pub(super) async fn finish(
        &self,
        tag: &str,
        image: &bollard::models::ImageConfig,
        state: &State,
        labels: &[(String, String)],
    ) -> Result<(), BackendError> {
        let _ = self
            .docker
            .kill_container(&self.container, None::<KillContainerOptions>)
            .await;
        let (repo, _) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let staging = format!("{repo}:staging");
        self.commit(&self.container, &staging, image, state, &[])
            .await?;
        if let Ok(mut saved) = self.staging.lock() {
            *saved = Some(staging.clone());
        }
        let body = ContainerCreateBody {
            image: Some(staging.clone()),
            entrypoint: Some(vec![format!("{TOOLS}/bottle"), "prepare-trust".into()]),
            user: Some("0:0".into()),
            labels: Some(self.labels("build")),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                binds: Some(vec![format!(
                    "{}:{TOOLS}/bottle:ro",
                    self.binary.path.display()
                )]),
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        create_container(self.docker, &self.finisher, body).await?;
        let tar = crate::docker::images::overlay_tar(&self.binary.path)?;
        self.docker
            .upload_to_container(
                &self.finisher,
                Some(UploadToContainerOptions {
                    path: "/".into(),
                    ..Default::default()
                }),
                bollard::body_full(tar),
            )
            .await
            .map_err(|e| BackendError::docker("copy bot-bottle's files into the build", e))?;
        self.docker
            .start_container(&self.finisher, None)
            .await
            .map_err(|e| BackendError::docker(format!("start {}", self.finisher), e))?;
        let status = crate::docker::exit_status(self.docker, &self.finisher).await;
        if status != "exit 0" {
            return Err(BackendError::Build {
                image: tag.to_owned(),
                message: format!("preparing the trust stores ended with {status}"),
                log: crate::docker::log_tail(self.docker, &self.finisher).await,
            });
        }
        self.commit(&self.finisher, tag, image, state, labels)
            .await?;
        Ok(())
    }

    pub(super) async fn start_gate(&self) -> Result<(), BackendError> {
        let policy = self.policy;
        let network = match &policy.gate_network {
            Some(name) => name.clone(),
            None => {
                let name = format!("{}-build", policy.identity);
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".into()),
                        internal: Some(false),
                        labels: Some(self.labels("build")),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| BackendError::docker(format!("create network {name}"), e))?;
                if let Ok(mut made) = self.network.lock() {
                    *made = Some(name.clone());
                }
                name
            }
        };
        let (subnets, gateways) = crate::docker::network_addresses(self.docker, &network).await?;
        let subnets = if policy.gate_network.is_some() {
            subnets
        } else {
            Vec::new()
        };
        let dir = self.build_dir();
        let run = dir.join("run");
        for d in [&dir, &run] {
            std::fs::create_dir_all(d).map_err(|source| BackendError::Io {
                path: d.clone(),
                source,
            })?;
        }
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|source| BackendError::Io {
                path: run.clone(),
                source,
            })?;
        for stale in std::fs::read_dir(&run).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(stale.path());
        }
        let mut egress = policy.egress.clone();
        egress.routes.clear();
        egress.trusted_subnets = subnets;
        egress.refused_addresses = crate::docker::refused_addresses(gateways);
        let config = GateConfig {
            identity: policy.identity.clone(),
            role: GateRole::Egress,
            phase: Some("build".into()),
            socket_dir: SOCKETS.into(),
            audit_log: GATE_AUDIT_LOG.into(),
            egress,
            tls: Some(TlsConfig {
                ca_cert: format!("{GATE_DIR}/ca.pem").into(),
                ca_key: format!("{GATE_DIR}/ca.key").into(),
                upstream_ca: policy
                    .upstream_ca
                    .then(|| format!("{GATE_DIR}/upstream-ca.pem").into()),
            }),
            git: Default::default(),
            supervise: None,
            control_dir: None,
        };
        let config_dir = dir.join("gate");
        std::fs::create_dir_all(&config_dir).map_err(|source| BackendError::Io {
            path: config_dir.clone(),
            source,
        })?;
        policy
            .dir
            .write_json(&config_dir.join("gate.json"), &config)?;
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        let body = ContainerCreateBody {
            image: Some(policy.gate_image.clone()),
            cmd: Some(
                bottle_contract::GateArgs {
                    config: std::path::Path::new(GATE_BUILD_DIR).join("gate.json"),
                }
                .to_args(),
            ),
            user: Some(format!("{uid}:{gid}")),
            labels: Some(self.labels("build-gate")),
            env: Some(vec!["RUST_LOG=info".into()]),
            host_config: Some(HostConfig {
                network_mode: Some(network.clone()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                pids_limit: Some(256),
                memory: Some(256 << 20),
                memory_swap: Some(256 << 20),
                binds: Some(vec![
                    format!("{}:{GATE_DIR}:ro", policy.dir.gate_dir().display()),
                    format!("{}:{GATE_BUILD_DIR}:ro", config_dir.display()),
                    format!("{}:{SOCKETS}", run.display()),
                    format!("{}:{GATE_AUDIT_LOG}", policy.dir.audit_log().display()),
                ]),
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        create_container(self.docker, &self.gate, body).await?;
        start_gate(self.docker, &self.gate, Vec::new()).await
    }

    pub(super) async fn start_container(
        &self,
        from: &str,
        image: &bollard::models::ImageConfig,
    ) -> Result<(), BackendError> {
        let policy = self.policy;
        let memory = i64::try_from(policy.memory_bytes).unwrap_or(i64::MAX);
        // The shim forwards the proxy port to the build gate and, as root,
        // writes the trust stores (the image's plus the bottle's CA) into
        // a tmpfs; then it idles until the steps are done.
        let entrypoint = vec![
            format!("{TOOLS}/bottle"),
            "shim".into(),
            "--forward".into(),
            format!("{PROXY_PORT}={SOCKETS}/{EGRESS_SOCKET}"),
            "--ca".into(),
            format!("{TOOLS}/ca.pem"),
            "--".into(),
            format!("{TOOLS}/bottle"),
            "build-helper".into(),
            "idle".into(),
        ];
        let body = ContainerCreateBody {
            image: Some(from.to_owned()),
            entrypoint: Some(entrypoint),
            // The image's own command, so the committed image keeps it.
            cmd: image.cmd.clone(),
            user: Some("0:0".into()),
            labels: Some(self.labels("build")),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(BUILD_CAPS.iter().map(|c| (*c).to_owned()).collect()),
                security_opt: Some(vec!["no-new-privileges".into()]),
                pids_limit: Some(policy.pids),
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: policy.cpus.map(|c| (c * 1e9) as i64),
                tmpfs: Some(HashMap::from([(
                    TRUST_TMPFS.to_owned(),
                    "rw,nosuid,nodev,noexec,size=8m,mode=0755".to_owned(),
                )])),
                binds: Some(vec![
                    format!("{}:{SOCKETS}:ro", self.build_dir().join("run").display()),
                    format!("{}:{TOOLS}/bottle:ro", self.binary.path.display()),
                    format!("{}:{TOOLS}/ca.pem:ro", policy.dir.ca_cert().display()),
                ]),
                // Builds commit what they write to the root: runc, whose
                // writes land where the engine can read them.
                runtime: None,
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        create_container(self.docker, &self.container, body).await?;
        self.docker
            .start_container(&self.container, None)
            .await
            .map_err(|e| BackendError::docker(format!("start {}", self.container), e))?;
        // Ready once the gate's socket exists and the shim has written the
        // trust stores (it then starts the idler).
        let socket = self.build_dir().join("run").join(EGRESS_SOCKET);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(BackendError::GateFailed(
                    "the build gate did not come up within 30 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Commits `container` as `tag` with the configuration the steps made.
    pub(super) async fn commit(
        &self,
        container: &str,
        tag: &str,
        image: &bollard::models::ImageConfig,
        state: &State,
        labels: &[(String, String)],
    ) -> Result<(), BackendError> {
        let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let mut image_labels = state.labels.clone();
        for (k, v) in labels {
            image_labels.insert(k.clone(), v.clone());
        }
        let config = ContainerConfig {
            env: Some(state.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: image.cmd.clone(),
            // Empty, not absent: the engine would otherwise take the build
            // container's entrypoint (the idling shim, prepare-trust).
            entrypoint: Some(image.entrypoint.clone().unwrap_or_default()),
            user: Some(state.user.clone()),
            working_dir: Some(state.workdir.clone()),
            labels: Some(image_labels),
            shell: (state.shell != ["/bin/sh", "-c"]).then(|| state.shell.clone()),
            ..Default::default()
        };
        self.docker
            .commit_container(
                CommitContainerOptions {
                    container: Some(container.to_owned()),
                    repo: Some(repo.to_owned()),
                    tag: Some(version.to_owned()),
                    pause: true,
                    ..Default::default()
                },
                config,
            )
            .await
            .map_err(|e| BackendError::docker(format!("commit {tag}"), e))?;
        Ok(())
    }

    /// Removes the build's containers, gate, staging image and network,
    /// whatever happened. (The staging image goes after the containers: an
    /// image a container was made from cannot be removed before it.)
    pub(super) async fn clean_up(&self) {
        for name in [&self.container, &self.finisher, &self.gate] {
            let removed = self
                .docker
                .remove_container(
                    name,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await;
            if let Err(e) = removed
                && !is_not_found(&e)
            {
                tracing::warn!(%e, container = %name, "removing a build container");
            }
        }
        let staging = self.staging.lock().ok().and_then(|mut s| s.take());
        if let Some(staging) = staging
            && let Err(e) = crate::docker::remove_image(self.docker, &staging).await
        {
            tracing::warn!(%e, image = %staging, "removing a build's staging image");
        }
        let network = self.network.lock().ok().and_then(|mut n| n.take());
        if let Some(network) = network {
            let _ = self.docker.remove_network(&network).await;
        }
        let _ = std::fs::remove_dir_all(self.build_dir());
    }
}
