//! A plan turned into the gate's configuration: one file per gate process.
//!
//! The egress process gets the policy, the routes (without their secrets,
//! which travel on its standard input), the CA and the supervise
//! directory. The git process, when the bottle has upstreams, gets the
//! upstreams, the paths of their keys and the push policy — and nothing of
//! the egress process's: each process can read only its own secrets.
//! Paths are where each process sees its files, which the backend decides.

use std::path::PathBuf;

use bottle_contract::config::{
    EgressConfig, GateConfig, GateRole, GitConfig, GitEntryConfig, PushConfig, RemoteView,
    RouteConfig, SuperviseConfig, TlsConfig,
};
use bottle_manifest::plan::{GitPlan, Plan};

/// Where a backend puts a gate's files, as the gate process sees them.
#[derive(Debug, Clone)]
pub struct GatePaths {
    /// The directory of sockets shared with the agent.
    pub socket_dir: PathBuf,
    /// The bottle's audit log.
    pub audit_log: PathBuf,
    /// The egress process's read-only directory: its configuration and CA.
    pub egress_dir: PathBuf,
    /// The git process's read-only directory: its configuration and keys.
    pub git_config_dir: PathBuf,
    /// The git process's writable directory: mirrors, learned host keys.
    pub git_dir: PathBuf,
    /// The supervise directory: requests and the control socket.
    pub supervise_dir: PathBuf,
}

impl GatePaths {
    /// Where every backend's gate processes see their files: the same
    /// paths in a gate container and in a native gate's mount namespace.
    pub fn standard() -> GatePaths {
        GatePaths {
            socket_dir: SOCKET_DIR.into(),
            audit_log: "/var/log/bottle/audit.jsonl".into(),
            egress_dir: "/etc/bottle".into(),
            git_config_dir: "/etc/bottle".into(),
            git_dir: "/var/lib/bottle/git".into(),
            supervise_dir: "/var/lib/bottle/supervise".into(),
        }
    }
}

/// Where the gate's sockets are, for the gate and inside the agent's
/// sandbox alike.
pub const SOCKET_DIR: &str = "/run/bottle";

/// File name of each process's configuration in its directory.
pub const EGRESS_CONFIG_FILE: &str = "gate.json";
pub const GIT_CONFIG_FILE: &str = "git.json";

/// The egress process's configuration.
pub fn egress(plan: &Plan, paths: &GatePaths, image: String) -> GateConfig {
    GateConfig {
        identity: plan.identity.clone(),
        role: GateRole::Egress,
        phase: None,
        socket_dir: paths.socket_dir.clone(),
        audit_log: paths.audit_log.clone(),
        egress: EgressConfig {
            routes: plan
                .egress
                .routes
                .iter()
                .map(|r| RouteConfig {
                    host: r.host.clone(),
                    header: r.header.clone(),
                    scheme: r.scheme.clone(),
                    placeholder: r.placeholder.clone(),
                    paths: r.paths.clone(),
                })
                .collect(),
            ..policy(
                plan.egress.allow.iter().map(|r| r.text.clone()),
                &plan.egress.allow_private,
            )
        },
        tls: Some(TlsConfig {
            ca_cert: paths.egress_dir.join("ca.pem"),
            ca_key: paths.egress_dir.join("ca.key"),
            upstream_ca: plan
                .egress
                .upstream_ca
                .as_ref()
                .map(|_| paths.egress_dir.join("upstream-ca.pem")),
        }),
        git: GitConfig::default(),
        supervise: plan.supervise.then(|| SuperviseConfig {
            dir: paths.supervise_dir.clone(),
            image,
            remotes: plan
                .git
                .iter()
                .map(|g| RemoteView {
                    name: g.name.clone(),
                    upstream: g.upstream.clone(),
                    push: push(g),
                })
                .collect(),
            image_changes: None,
        }),
        // Always: the launcher hands refreshed secrets through it too.
        control_dir: Some(paths.supervise_dir.clone()),
    }
}

/// The git process's configuration, when the bottle has upstreams.
pub fn git(plan: &Plan, paths: &GatePaths) -> Option<GateConfig> {
    if plan.git.is_empty() {
        return None;
    }
    let keys = paths.git_config_dir.join("git");
    Some(GateConfig {
        identity: plan.identity.clone(),
        role: GateRole::Git,
        phase: None,
        socket_dir: paths.socket_dir.clone(),
        audit_log: paths.audit_log.clone(),
        egress: EgressConfig::default(),
        tls: None,
        git: GitConfig {
            dir: paths.git_dir.clone(),
            entries: plan
                .git
                .iter()
                .map(|g| GitEntryConfig {
                    name: g.name.clone(),
                    upstream: g.upstream.clone(),
                    identity_file: keys.join(format!("{}.key", g.name)),
                    known_hosts: g
                        .host_key_pinned
                        .then(|| keys.join(format!("{}.known_hosts", g.name))),
                    push: push(g),
                })
                .collect(),
        },
        supervise: None,
        control_dir: None,
    })
}

/// The egress policy of `allow` rules (duplicates dropped) and
/// `allow_private` ranges, without routes; the backend adds the gate
/// network's subnets when it knows them.
pub fn policy(allow: impl IntoIterator<Item = String>, allow_private: &[String]) -> EgressConfig {
    let mut rules: Vec<String> = Vec::new();
    for rule in allow {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    EgressConfig {
        allow: rules,
        allow_private: allow_private
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
        ..Default::default()
    }
}

fn push(g: &GitPlan) -> PushConfig {
    PushConfig {
        branches: g.push.branches.clone(),
        force: g.push.force,
        delete: g.push.delete,
        tags: g.push.tags,
        max_pack_bytes: g.push.max_pack_bytes,
    }
}
