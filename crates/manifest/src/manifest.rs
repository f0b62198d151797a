//! The manifest's types, exactly as a person writes them.
//!
//! Field names that the original tool used (`Role`, `Name`, `IdentityFile`,
//! …) are kept so its manifests carry over. Unknown fields are errors
//! everywhere. Parsing only checks shape; [`crate::validate`] checks
//! meaning.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A bot-bottle manifest: the agents a person may start and the bottles
/// they run in.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// JSON Schema reference, for editors; ignored by bot-bottle.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Agents by name: what runs, in which bottle.
    #[serde(default)]
    pub agents: BTreeMap<String, Agent>,
    /// Bottles by name: the sandbox and its gates.
    #[serde(default)]
    pub bottles: BTreeMap<String, Bottle>,
}

/// An agent: a command and the configuration it gets inside its bottle.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Name of the bottle (a key of `bottles`) the agent runs in.
    pub bottle: String,
    /// The command to run, as argv. Default: `["claude"]`.
    #[serde(default = "default_command")]
    pub command: Vec<String>,
    /// Extra system prompt for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Skills copied from `~/.claude/skills/NAME/` on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    /// Environment of the agent: a literal, or `{ "from_host": "VAR" }` to
    /// forward a variable of the host by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
}

fn default_command() -> Vec<String> {
    vec!["claude".to_owned()]
}

/// The value of one environment variable of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// This exact string (no newlines).
    Literal(String),
    /// The value of a host variable, read at start.
    FromHost(FromHost),
}

/// `{ "from_host": "VAR" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FromHost {
    /// Name of the host's environment variable.
    pub from_host: String,
}

/// A bottle: the sandbox an agent runs in, and what may leave it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bottle {
    /// The agent image. Default: `bot-bottle/agent:latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Hosts the agent may reach through the egress gate: `host`,
    /// `*.suffix`, with an optional `:port` (default 443 for HTTPS, 80 for
    /// plain HTTP). IP addresses only when named exactly.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Credential injection and upstream TLS settings of the egress gate.
    #[serde(default)]
    pub egress_proxy: EgressProxy,
    /// Git upstreams reached through the git gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git: Vec<GitEntry>,
    /// Whether the agent gets the supervise tools to ask for more.
    #[serde(default)]
    pub supervise: bool,
    /// Limits of the agent's sandbox.
    #[serde(default)]
    pub resources: Resources,
    /// Container runtime for the agent.
    #[serde(default)]
    pub runtime: Runtime,
    /// Docker network the gate uses to reach the outside. Default: a
    /// network made for this bottle alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_network: Option<String>,
    /// Private address ranges (CIDR) the gate may connect to, for internal
    /// servers. Everything private is refused otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<String>,
}

/// `egress_proxy` of a bottle.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressProxy {
    /// Credentials the gate injects on the way out.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Extra CA file (PEM) the gate trusts for upstream servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<String>,
}

/// A credential route: on requests to `host`, the gate replaces the agent's
/// `header` with the real secret.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The host whose requests carry the credential.
    pub host: String,
    /// Header to set. Default: `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Scheme before the secret (`Bearer`). Empty: the bare value.
    /// Default: `Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ref: Option<String>,
    /// Command whose standard output is the secret (instead of `token_ref`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_command: Option<String>,
    /// Run `token_command` again this often while the bottle runs (a
    /// duration from 10s to 24h, such as `"30m"`), handing the gate what it
    /// prints: for tokens that expire. Without it the command runs at
    /// start and resume only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_refresh: Option<String>,
    /// Roles: what else the route gives the agent (`claude_code_oauth`).
    #[serde(rename = "Role", default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Roles>,
}

/// One role or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Roles {
    One(String),
    Many(Vec<String>),
}

impl Roles {
    /// The roles as a list, whichever way they were written.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Roles::One(role) => std::slice::from_ref(role),
            Roles::Many(roles) => roles,
        }
    }
}

/// A git upstream the agent may fetch from and push to through the gate.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitEntry {
    /// Remote name in the agent's repository (`origin`).
    #[serde(rename = "Name")]
    pub name: String,
    /// The real upstream URL (`ssh://git@host/path.git` or `git@host:path`).
    #[serde(rename = "Upstream")]
    pub upstream: String,
    /// SSH private key the gate pushes with. Never enters the bottle.
    #[serde(rename = "IdentityFile")]
    pub identity_file: String,
    /// The upstream's host key as a known_hosts line. Without it the first
    /// key seen is pinned.
    #[serde(rename = "HostKey", default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// What the agent may push.
    #[serde(default)]
    pub push: PushPolicy,
}

/// What pushes the git gate forwards.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushPolicy {
    /// Glob patterns of branches the agent may update.
    #[serde(default = "default_branches")]
    pub branches: Vec<String>,
    /// Allow non-fast-forward updates.
    #[serde(default)]
    pub force: bool,
    /// Allow deleting branches.
    #[serde(default)]
    pub delete: bool,
    /// Allow pushing tags.
    #[serde(default)]
    pub tags: bool,
    /// Largest pack accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pack_bytes: Option<u64>,
}

impl Default for PushPolicy {
    fn default() -> Self {
        PushPolicy {
            branches: default_branches(),
            force: false,
            delete: false,
            tags: false,
            max_pack_bytes: None,
        }
    }
}

fn default_branches() -> Vec<String> {
    vec!["agent/*".to_owned(), "bottle/*".to_owned()]
}

/// Limits of the agent's sandbox, its gate and the builds of its image.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs (fractions allowed). Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory, as bytes or with a unit: `512m`, `4g`. Default: `4g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySize>,
    /// Most processes at once. Default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Size of the agent's `/tmp` (a tmpfs, counted in `memory`).
    /// Default: `1g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp: Option<MemorySize>,
    /// Most open files per process. Default: 8192.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
    /// Limits of the bottle's gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateResources>,
    /// Limits of a build of the bottle's own image (an approved image
    /// change): it gets the agent's CPU, memory and process limits, and
    /// this much time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildResources>,
}

/// `resources.gate`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateResources {
    /// CPUs of each gate container. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory of the egress gate. Default: `256m` (the git gate gets
    /// twice as much).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySize>,
}

/// `resources.build`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildResources {
    /// Longest a build may take, as `90s`, `30m`, `1h`. Default: `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A memory size: a number of bytes or a string such as `512m`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum MemorySize {
    Bytes(u64),
    Text(String),
}

/// Which container runtime runs the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// gVisor when the engine has `runsc`, else runc.
    #[default]
    Auto,
    /// The engine's default runtime.
    Runc,
    /// gVisor; an error when the engine lacks it.
    Runsc,
}
