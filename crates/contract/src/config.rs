//! The gate's configuration: written by the launcher into the bottle's state
//! directory, mounted read-only into the gate, never seen by the agent.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bottle_manifest::host::{HostRule, RuleError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// File name of the egress role's socket in the socket directory.
pub const EGRESS_SOCKET: &str = "egress.sock";
/// File name of the git role's socket in the socket directory.
pub const GIT_SOCKET: &str = "git.sock";
/// File name of the supervise role's socket in the socket directory.
pub const SUPERVISE_SOCKET: &str = "supervise.sock";

/// Which roles one gate process serves. Each runs apart from the other,
/// with only its own secrets in reach: the egress process holds the CA key
/// and the route secrets, the git process the SSH keys (it runs `git` on
/// what the agent sends, so it must not be able to read the others).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateRole {
    /// The egress proxy, and the supervise server when configured.
    #[default]
    Egress,
    /// The git gate.
    Git,
}

/// Everything one gate process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The bottle this gate serves (for log lines).
    pub identity: String,
    /// What this process serves.
    #[serde(default)]
    pub role: GateRole,
    /// What this gate is for, when not the running bottle: `build` (an
    /// image change being built). Every audit record it writes says so.
    #[serde(default)]
    pub phase: Option<String>,
    /// Directory where the gate creates its sockets; shared with the agent.
    pub socket_dir: PathBuf,
    /// JSON-lines audit log, appended to.
    pub audit_log: PathBuf,
    #[serde(default)]
    pub egress: EgressConfig,
    /// The CA and upstream trust (the egress role only).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The git role's upstreams (the git role only).
    #[serde(default)]
    pub git: GitConfig,
    /// The supervise role, when the bottle has `supervise: true`.
    #[serde(default)]
    pub supervise: Option<SuperviseConfig>,
    /// Where the egress role creates its control socket (approvals and
    /// refreshed secrets): a directory never shared with the agent.
    /// `None`: no control socket.
    #[serde(default)]
    pub control_dir: Option<PathBuf>,
}

/// The supervise role: where requests wait and the control socket lives
/// (a directory never shared with the agent), and what to say about the
/// image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseConfig {
    /// Holds `requests/` and the control socket.
    pub dir: PathBuf,
    /// The agent's image, for `show_policy`.
    pub image: String,
    /// The bottle's git remotes and push rules, for `show_policy` (the
    /// keys are the git role's, never this process's).
    #[serde(default)]
    pub remotes: Vec<RemoteView>,
    /// Why image changes cannot be asked for here (the backend has no
    /// image); `None`: they can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_changes: Option<String>,
}

/// A git remote as `show_policy` describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteView {
    pub name: String,
    pub upstream: String,
    pub push: PushConfig,
}

/// The git role: one bare mirror per upstream, and the push policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// Writable directory for the mirrors and learned host keys.
    pub dir: PathBuf,
    pub entries: Vec<GitEntryConfig>,
}

/// One upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitEntryConfig {
    /// The remote's name: the agent reaches it as `/<name>.git`.
    pub name: String,
    /// The real upstream URL.
    pub upstream: String,
    /// The SSH key (in the gate only).
    pub identity_file: PathBuf,
    /// A known_hosts file pinning the upstream's key; `None`: trust on
    /// first use, recorded in `dir`.
    pub known_hosts: Option<PathBuf>,
    pub push: PushConfig,
}

/// What pushes are forwarded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    pub branches: Vec<String>,
    pub force: bool,
    pub delete: bool,
    pub tags: bool,
    pub max_pack_bytes: Option<u64>,
}

/// The bottle's CA (to mint leaves for the agent's side) and the extra CA
/// trusted for upstreams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// Extra CA file (PEM) trusted for upstream servers.
    pub upstream_ca: Option<PathBuf>,
}

/// A credential route without its secret. Secrets reach the gate on its
/// standard input, never through a file or the environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub host: String,
    pub header: String,
    pub scheme: String,
    /// The placeholder the agent holds for this secret (a role's): the
    /// gate replaces a header that carries it, or is missing, and lets a
    /// value of the agent's own (a token the server issued it) pass as
    /// written, read for every secret like any other header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Where on the host the credential may be used: a request to the
    /// host on any other method or path is refused. Empty: everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathRule>,
}

pub use bottle_manifest::plan::PathRule;

/// What the launcher writes on the gate's standard input: one secret per
/// route, in the order of [`EgressConfig::routes`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.secrets.len())
    }
}

/// The egress role's policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The bottle's `allow` rules, as written (parsed again at start so the
    /// gate and the manifest check can never disagree).
    pub allow: Vec<String>,
    /// Private ranges the person allowed (`allow_private`).
    pub allow_private: Vec<IpNet>,
    /// Subnets of the network the gate reaches the outside through, when
    /// the person chose it (`gate_network`): their own services.
    pub trusted_subnets: Vec<IpNet>,
    /// Addresses refused even inside `trusted_subnets`: the network's
    /// gateways, which are the host.
    pub refused_addresses: Vec<IpAddr>,
    /// Credential routes, without secrets.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl EgressConfig {
    /// Parses the rules; an invalid one is an error (fail closed).
    pub fn rules(&self) -> Result<Vec<HostRule>, RuleError> {
        self.allow.iter().map(|r| HostRule::parse(r)).collect()
    }
}

impl GateConfig {
    /// Reads the configuration the launcher wrote.
    pub fn load(path: &Path) -> Result<GateConfig, ConfigError> {
        let text = fs_err::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Why a gate's configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("gate configuration {}: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The control socket (approvals and refreshed secrets applied live), in
/// the supervise directory.
pub use crate::control::CONTROL_SOCKET;
