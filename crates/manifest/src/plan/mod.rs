//! The frozen plan of one bottle: everything `start` will do, decided
//! before anything is created.
//!
//! `start --dry-run --format json` prints [`Plan`] as JSON. Its keys are a
//! stable contract (docs/plan.md): fields are added, never renamed or
//! removed. The plan never holds a secret: host variables and credentials
//! appear by name only.

use std::path::{Path, PathBuf};

mod claude;
mod render;

pub use claude::{
    ClaudeAccount, PathRule, REMOTE_CONTROL_PLANS, RemoteControlPlan, is_anthropic_api,
    model_api_paths, remote_control_paths,
};

pub use render::shell_words;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ManifestError;
use crate::host::HostRule;
use crate::manifest::{EnvValue, Manifest, PushPolicy, Runtime};
use crate::provision::{
    self, GrantedImage, Grants, HomeFile, PromptFacts, ProvisionPlan, SkillPlan,
};
use crate::validate::{CheckedBottle, ROLE_ANTHROPIC_API_KEY, ROLE_CLAUDE_CODE_OAUTH};

/// Claude Code's switches for traffic that is not the user's work, set in
/// every bottle.
pub const QUIET_CLAUDE_CODE: &[&str] = &[
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_AUTOUPDATER",
    "DISABLE_TELEMETRY",
    "DISABLE_ERROR_REPORTING",
    "DISABLE_BUG_COMMAND",
];
/// Version of the plan's JSON shape.
pub const PLAN_VERSION: u32 = 1;
/// Where the agent works inside the bottle.
pub const WORKDIR: &str = "/workspace";
/// The agent's user inside the bottle.
pub const AGENT_USER: &str = "agent";
/// The agent's uid and gid inside the bottle. Not 1000, the first login
/// user of most Linux machines: an agent that escaped its sandbox should
/// not be the person who started it (the launcher refuses to start when
/// the person's uid is this one).
pub const AGENT_UID: u32 = 10001;
/// Where the agent's trust stores are written at start (a root-owned
/// tmpfs; see the shim's `trust` module).
pub const TRUST_TMPFS: &str = "/run/bot-bottle";
/// The agent's home inside the bottle.
pub const AGENT_HOME: &str = "/home/agent";
/// The egress proxy as the agent sees it (the shim's loopback port).
pub const PROXY_PORT: u16 = 3128;
/// The git gate as the agent sees it (the shim's loopback port).
pub const GIT_PORT: u16 = 9418;
/// The supervise MCP server as the agent sees it (the shim's loopback port).
pub const SUPERVISE_PORT: u16 = 7777;
/// The supervise MCP server's path.
pub const SUPERVISE_PATH: &str = "/mcp";
/// The name the supervise server has in the agent's MCP configuration.
pub const SUPERVISE_SERVER: &str = "bottle";
/// The supervise server's tools (the gate's test holds it to this list):
/// the ones Claude Code may call without asking in the agent's terminal.
pub const SUPERVISE_TOOLS: &[&str] = &[
    "show_policy",
    "request_egress",
    "request_route",
    "request_image_change",
    "request_status",
];
/// The agent's system prompt file: the built-in section on how the bottle
/// works, then the agent's `prompt`.
pub const PROMPT_PATH: &str = "/etc/bot-bottle/prompt.md";
/// The MCP configuration naming the supervise server (`--mcp-config`).
pub const MCP_CONFIG_PATH: &str = "/etc/bot-bottle/mcp.json";
/// `NO_PROXY` in the bottle: only the bottle's own loopback.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";
/// The bottle's CA certificate inside the agent's sandbox.
pub const AGENT_CA_PATH: &str = "/etc/bot-bottle/ca.pem";
/// The system trust bundle (with the bottle's CA added) that the CA
/// variables point at.
pub const TRUST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Preloaded into Node so its built-in `fetch` uses the proxy.
pub const NODE_PRELOAD: &str = "/usr/local/lib/bot-bottle/node-proxy.cjs";
/// Variables runtimes read for their CA bundle; each points at
/// [`TRUST_BUNDLE`].
pub const CA_BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
    "DENO_CERT",
];
/// Length of the random part of an identity.
const SUFFIX_LEN: usize = 6;

/// Image names a plan uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Images {
    /// What the gate and agent images are built `FROM`.
    pub base: String,
    pub gate: String,
    /// The agent image: the bottle's `image`, or the default.
    pub agent: String,
    /// Whether `agent` is the default image that bot-bottle builds.
    pub agent_is_default: bool,
    /// The bottle's own image (its agent image plus approved image
    /// changes), which the agent runs when present.
    pub bottle: Option<GrantedImage>,
}

/// Where the agent's command came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CommandSource {
    /// The agent's `command` in the manifest.
    Agent,
    /// `-- CMD…` on the command line.
    Argv,
}

/// One variable of the agent's environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvPlan {
    pub name: String,
    /// Where the value comes from.
    pub source: EnvSource,
    /// The value, for literals and bot-bottle's own variables only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The host variable read, for `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_var: Option<String>,
}

/// Where a variable of the agent's environment comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EnvSource {
    /// A literal of the manifest.
    Literal,
    /// Forwarded by name from the launcher's environment.
    Host,
    /// Set by bot-bottle (the proxy, the CA bundle, the placeholders).
    Bottle,
}

/// A credential route, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoutePlan {
    pub host: String,
    pub header: String,
    pub scheme: String,
    /// The host variable holding the secret, when `token_ref` is used.
    pub token_ref: Option<String>,
    /// Whether the secret comes from `token_command`.
    pub token_command: bool,
    /// The command itself: run at start, never printed in the plan.
    #[serde(skip)]
    pub token_command_line: Option<String>,
    /// How often the launcher runs `token_command` again while the bottle
    /// runs, in seconds; `None`: at start and resume only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_refresh_secs: Option<u64>,
    pub roles: Vec<String>,
    /// The placeholder the agent holds for this secret (a role's route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// The requests the credential serves; empty: any to the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathRule>,
}

/// The egress gate's policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EgressPlan {
    /// Proxy URL the agent's HTTP(S)_PROXY points at.
    pub proxy_url: String,
    pub no_proxy: String,
    pub allow: Vec<HostRule>,
    pub allow_private: Vec<String>,
    pub routes: Vec<RoutePlan>,
    pub upstream_ca: Option<PathBuf>,
}

/// A git upstream, without its key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GitPlan {
    pub name: String,
    pub upstream: String,
    pub identity_file: PathBuf,
    /// Whether the host key is pinned in the manifest (else first use).
    pub host_key_pinned: bool,
    /// The pinned known_hosts line, for the gate.
    #[serde(skip)]
    pub host_key: Option<String>,
    pub push: PushPolicyPlan,
}

/// Push policy as planned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PushPolicyPlan {
    pub branches: Vec<String>,
    pub force: bool,
    pub delete: bool,
    pub tags: bool,
    pub max_pack_bytes: Option<u64>,
}

impl From<&PushPolicy> for PushPolicyPlan {
    fn from(p: &PushPolicy) -> Self {
        PushPolicyPlan {
            branches: p.branches.clone(),
            force: p.force,
            delete: p.delete,
            tags: p.tags,
            max_pack_bytes: Some(
                p.max_pack_bytes
                    .unwrap_or(crate::validate::DEFAULT_MAX_PACK_BYTES),
            ),
        }
    }
}

/// Limits of the agent's sandbox, its gates and its builds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourcePlan {
    pub cpus: Option<f64>,
    pub memory_bytes: u64,
    pub pids: i64,
    /// Size of the agent's `/tmp` (a tmpfs).
    pub tmp_bytes: u64,
    /// Open files per process (`RLIMIT_NOFILE`, soft and hard).
    pub nofile: u64,
    /// CPUs of each gate container.
    pub gate_cpus: f64,
    /// Memory of the egress gate (the git gate gets twice as much).
    pub gate_memory_bytes: u64,
    /// Longest a build of the bottle's own image may take.
    pub build_timeout_secs: u64,
}

/// The frozen plan of one bottle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub version: u32,
    pub identity: String,
    pub agent: String,
    pub bottle: String,
    pub manifest: PathBuf,
    pub backend: String,
    /// Why that backend: `--backend`, the variable that named it, or the
    /// default and what decided it.
    #[serde(default)]
    pub backend_reason: String,
    pub command: Vec<String>,
    pub command_source: CommandSource,
    pub workdir: String,
    pub user: String,
    pub images: Images,
    pub runtime: Runtime,
    /// The Docker network the gate reaches the outside through; `None`: a
    /// network made for this bottle.
    pub gate_network: Option<String>,
    pub egress: EgressPlan,
    pub env: Vec<EnvPlan>,
    pub git: Vec<GitPlan>,
    pub skills: Vec<String>,
    pub has_prompt: bool,
    pub supervise: bool,
    /// The prompt file, skills and supervise configuration put into the
    /// bottle.
    pub provision: ProvisionPlan,
    /// The command that brings the bottle back after an approved image
    /// change (`claude --continue` when there is a conversation).
    pub resume_command: Vec<String>,
    pub resources: ResourcePlan,
    pub state_dir: PathBuf,
    pub remove_on_exit: bool,
    /// What `--cwd` copies into the workspace; `None` without `--cwd`.
    pub workspace: Option<WorkspacePlan>,
    /// `--remote-control`: Claude Code's Remote Control is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_control: Option<RemoteControlPlan>,
}

/// The copy of the host's directory the agent works on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspacePlan {
    /// The host directory copied (never mounted).
    pub source: PathBuf,
    /// How the directory is copied.
    pub mode: WorkspaceMode,
    /// Paths (relative to `source`) the person named with `--include`:
    /// copied even when they look like secrets.
    pub include: Vec<PathBuf>,
    /// Files left out of the copy, and why (filled in before the
    /// preflight).
    pub left_out: Vec<LeftOut>,
    /// What was removed from the copied git configuration.
    pub config_changes: Vec<String>,
}

/// How a `--cwd` copy selects its files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum WorkspaceMode {
    /// A repository: what git tracks plus untracked files it does not
    /// ignore, and `.git`.
    #[serde(rename = "git")]
    Git,
    /// Inside a repository's work tree: git's rules, no `.git`.
    #[serde(rename = "git-subdir")]
    GitSubdir,
    /// Not in a repository: every file.
    #[serde(rename = "all")]
    All,
}

/// A file a `--cwd` copy leaves out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeftOut {
    pub path: PathBuf,
    pub reason: String,
}

/// What `prepare` needs besides the manifest.
pub struct PlanInput<'a> {
    pub manifest_path: &'a Path,
    pub manifest: &'a Manifest,
    pub checked: &'a std::collections::BTreeMap<String, CheckedBottle>,
    pub agent: &'a str,
    /// `-- CMD…`, when given.
    pub command: Option<Vec<String>>,
    pub backend: &'a str,
    /// Why that backend (see [`Plan::backend_reason`]).
    pub backend_reason: &'a str,
    pub base_image: &'a str,
    pub remove_on_exit: bool,
    /// `--cwd`: the directory to copy into the workspace.
    pub cwd: Option<&'a Path>,
    /// `--include`: paths under `cwd` copied even if they look secret.
    pub include: &'a [PathBuf],
    /// Resume: the bottle's identity (else a fresh one is minted).
    pub identity: Option<String>,
    /// `$XDG_STATE_HOME/bot-bottle`.
    pub state_root: &'a Path,
    /// Reads a host variable (to check that forwarded ones are set).
    pub host_env: &'a dyn Fn(&str) -> Option<String>,
    /// The user's home (skills are under `~/.claude/skills/`).
    pub home: &'a Path,
    /// What a person approved for this bottle so far (resume).
    pub grants: &'a Grants,
    /// Resume: `claude` continues its conversation when there is one.
    pub continue_conversation: bool,
    /// `--remote-control`: the person's claude.ai account, read on the
    /// host (no token).
    pub remote_control: Option<&'a ClaudeAccount>,
}

/// Default image names.
pub const GATE_IMAGE: &str = "bot-bottle/gate:latest";
pub const AGENT_IMAGE: &str = "bot-bottle/agent:latest";

/// Builds the plan for starting `input.agent`, minting a fresh identity.
pub fn plan(input: PlanInput<'_>) -> Result<Plan, ManifestError> {
    let manifest = input.manifest;
    let agent = manifest
        .agents
        .get(input.agent)
        .ok_or_else(|| ManifestError::UnknownAgent {
            path: input.manifest_path.to_owned(),
            name: input.agent.to_owned(),
            known: manifest.agents.keys().cloned().collect(),
        })?;
    let start_error = |message: String| ManifestError::Start {
        agent: input.agent.to_owned(),
        message,
    };
    let (bottle, checked) = manifest
        .bottles
        .get(&agent.bottle)
        .zip(input.checked.get(&agent.bottle))
        .ok_or_else(|| start_error(format!("bottle {:?} is not defined", agent.bottle)))?;

    let (base_command, command_source) = match input.command {
        Some(cmd) if !cmd.is_empty() => (cmd, CommandSource::Argv),
        _ => (agent.command.clone(), CommandSource::Agent),
    };

    let identity = input
        .identity
        .clone()
        .unwrap_or_else(|| mint_identity(input.agent));
    let proxy_url = format!("http://127.0.0.1:{PROXY_PORT}");

    let mut env = Vec::new();
    let mut node_options = format!("--require={NODE_PRELOAD}");
    for (name, value) in &agent.env {
        // The agent's own Node options are kept, after the preload.
        if let (EnvValue::Literal(text), "NODE_OPTIONS") = (value, name.as_str()) {
            node_options = format!("{node_options} {text}");
            continue;
        }
        env.push(match value {
            EnvValue::Literal(text) => EnvPlan {
                name: name.clone(),
                source: EnvSource::Literal,
                value: Some(text.clone()),
                host_var: None,
            },
            EnvValue::FromHost(from) => {
                if (input.host_env)(&from.from_host).is_none() {
                    return Err(start_error(format!(
                        "env {name} forwards the host variable {} which is not set: export it or remove it from the agent's env",
                        from.from_host
                    )));
                }
                EnvPlan {
                    name: name.clone(),
                    source: EnvSource::Host,
                    value: None,
                    host_var: Some(from.from_host.clone()),
                }
            }
        });
    }

    let routes: Vec<RoutePlan> = bottle
        .egress_proxy
        .routes
        .iter()
        .map(|r| {
            let roles: Vec<String> = r.role.iter().flat_map(|r| r.as_slice()).cloned().collect();
            // An API key goes in x-api-key, bare.
            let api_key = roles.iter().any(|x| x == ROLE_ANTHROPIC_API_KEY);
            let (header, scheme) = if api_key {
                ("x-api-key", "")
            } else {
                ("authorization", "Bearer")
            };
            RoutePlan {
                host: r.host.to_ascii_lowercase(),
                header: r
                    .header
                    .clone()
                    .unwrap_or_else(|| header.to_owned())
                    .to_ascii_lowercase(),
                scheme: r.scheme.clone().unwrap_or_else(|| scheme.to_owned()),
                token_ref: r.token_ref.clone(),
                token_command: r.token_command.is_some(),
                token_command_line: r.token_command.clone(),
                token_refresh_secs: r
                    .token_refresh
                    .as_deref()
                    .and_then(|t| crate::validate::refresh_secs(t).ok()),
                roles,
                placeholder: None,
                paths: Vec::new(),
            }
        })
        .collect();
    let mut routes = routes;
    routes.extend(input.grants.routes.iter().map(|g| RoutePlan {
        host: g.host.clone(),
        header: g.header.clone(),
        scheme: g.scheme.clone(),
        token_ref: Some(g.token_ref.clone()),
        token_command: false,
        token_command_line: None,
        token_refresh_secs: None,
        roles: Vec::new(),
        placeholder: None,
        paths: Vec::new(),
    }));
    for route in &routes {
        if let Some(var) = &route.token_ref
            && let Some(forwarded) = env.iter().find(|e| e.host_var.as_ref() == Some(var))
        {
            return Err(start_error(format!(
                "env {} forwards {var}, which holds the secret of the route to {}: the real credential would enter the bottle; remove it from the agent's env",
                forwarded.name, route.host
            )));
        }
        if let Some(var) = &route.token_ref
            && (input.host_env)(var).is_none()
        {
            return Err(start_error(format!(
                "the route to {} reads its secret from the host variable {var}, which is not set: export it or use token_command",
                route.host
            )));
        }
    }
    let mut bottle_env = vec![
        ("HTTP_PROXY", proxy_url.clone()),
        ("HTTPS_PROXY", proxy_url.clone()),
        ("http_proxy", proxy_url.clone()),
        ("https_proxy", proxy_url.clone()),
        ("NO_PROXY", NO_PROXY.to_owned()),
        ("no_proxy", NO_PROXY.to_owned()),
        ("BOTTLE_IDENTITY", identity.clone()),
        ("BOTTLE_PROMPT_FILE", PROMPT_PATH.to_owned()),
        ("HOME", AGENT_HOME.to_owned()),
        ("NODE_EXTRA_CA_CERTS", AGENT_CA_PATH.to_owned()),
        ("NODE_OPTIONS", node_options),
    ];
    bottle_env.extend(
        CA_BUNDLE_VARS
            .iter()
            .map(|var| (*var, TRUST_BUNDLE.to_owned())),
    );
    // Each upstream's URL is rewritten to the git gate, through git's
    // environment configuration: no file the agent could edit, and the
    // repository's remotes keep their real URLs.
    let git_config: Vec<(String, String)> = bottle
        .git
        .iter()
        .map(|entry| {
            (
                format!(
                    "url.http://127.0.0.1:{GIT_PORT}/{}.git.insteadOf",
                    entry.name
                ),
                entry.upstream.clone(),
            )
        })
        .collect();
    let mut git_env = Vec::new();
    if !git_config.is_empty() {
        git_env.push(("GIT_CONFIG_COUNT".to_owned(), git_config.len().to_string()));
    }
    for (i, (key, value)) in git_config.into_iter().enumerate() {
        git_env.push((format!("GIT_CONFIG_KEY_{i}"), key));
        git_env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
    }
    let remote_control = match input.remote_control {
        None => None,
        Some(account) => {
            Some(remote_control_plan(&routes, account, &identity).map_err(start_error)?)
        }
    };
    let mut home_files = Vec::new();
    for route in &mut routes {
        let has = |role: &str| route.roles.iter().any(|x| x == role);
        let placeholder = if has(ROLE_CLAUDE_CODE_OAUTH) {
            let token = placeholder(OAUTH_PREFIX);
            if let Some(rc) = &remote_control {
                // Remote Control wants a sign-in of the full scope, which
                // a token in the environment does not claim: the same
                // placeholder, as a sign-in file of the agent's home.
                let refresh = placeholder(REFRESH_PREFIX);
                home_files.push(HomeFile {
                    path: ".claude/.credentials.json".to_owned(),
                    json: rc.credentials_json(&token, &refresh).to_string(),
                });
                home_files.push(HomeFile {
                    path: ".claude.json".to_owned(),
                    json: rc.config_json().to_string(),
                });
            } else {
                bottle_env.push(("CLAUDE_CODE_OAUTH_TOKEN", token.clone()));
            }
            Some(token)
        } else if has(ROLE_ANTHROPIC_API_KEY) {
            let key = placeholder(API_KEY_PREFIX);
            bottle_env.push(("ANTHROPIC_API_KEY", key.clone()));
            Some(key)
        } else {
            None
        };
        if is_anthropic_api(&route.host) {
            // Anthropic's own API, whatever the route's role (or none, or
            // an approved one): the credential serves the model, and
            // Remote Control's requests only when it is on.
            route.paths = model_api_paths();
            if remote_control.is_some() {
                route.paths.extend(remote_control_paths());
            }
        } else if placeholder.is_some() {
            // A gateway of the person's own is the model API's host.
            bottle_env.push(("ANTHROPIC_BASE_URL", format!("https://{}", route.host)));
        }
        route.placeholder = placeholder;
    }
    let routes = routes;
    // Claude Code is in every bottle: its traffic the person did not ask
    // for (its own updater, telemetry, error reports, feedback) is off by
    // its documented switches, so it neither waits on nor fills the log
    // with refused hosts; its pin moves only by `bottle update-agent`.
    // Remote Control checks its feature flags, which the switch for all
    // non-essential traffic turns off: with it, that one switch is left
    // out (telemetry and the rest stay off).
    bottle_env.extend(
        QUIET_CLAUDE_CODE
            .iter()
            .filter(|name| remote_control.is_none() || **name != NONESSENTIAL_TRAFFIC)
            .map(|name| (*name, "1".to_owned())),
    );
    if bottle.supervise {
        bottle_env.push(("BOTTLE_SUPERVISE_URL", provision::supervise_url()));
    }
    env.extend(
        bottle_env
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .chain(git_env)
            .map(|(name, value)| EnvPlan {
                name,
                source: EnvSource::Bottle,
                value: Some(value),
                host_var: None,
            }),
    );

    let git = bottle
        .git
        .iter()
        .zip(&checked.identity_files)
        .map(|(entry, key)| GitPlan {
            name: entry.name.clone(),
            upstream: entry.upstream.clone(),
            identity_file: key.clone(),
            host_key_pinned: entry.host_key.is_some(),
            host_key: entry.host_key.clone(),
            push: PushPolicyPlan::from(&entry.push),
        })
        .collect();

    let mut allow = checked.allow.clone();
    for granted in &input.grants.allow {
        let rule = HostRule::parse(&granted.rule).map_err(|e| {
            start_error(format!(
                "the approved rule {:?} (request {}) in the bottle's grants.json is not valid: {e}",
                granted.rule, granted.request
            ))
        })?;
        if !allow.iter().any(|r| r.same_as(&rule)) {
            allow.push(rule);
        }
    }
    let (prompt_file, mcp_config, supervise_url) = provision::paths(bottle.supervise);
    let provision = ProvisionPlan {
        steps: provision::STEPS.to_vec(),
        prompt_file,
        prompt: provision::prompt(&PromptFacts {
            allow: allow.iter().map(|r| r.text.clone()).collect(),
            routes: routes.iter().map(|r| r.host.clone()).collect(),
            git_remotes: bottle
                .git
                .iter()
                .map(|g| (g.name.clone(), g.push.branches.clone()))
                .collect(),
            supervise: bottle.supervise,
            agent_prompt: agent.prompt.as_deref(),
        }),
        skills: agent
            .skills
            .iter()
            .map(|name| SkillPlan {
                name: name.clone(),
                source: input.home.join(".claude").join("skills").join(name),
            })
            .collect(),
        mcp_config,
        supervise_url,
        home_files,
        remote_control: remote_control.as_ref().map(|rc| rc.name.clone()),
    };
    let agent_command = provision::agent_argv(&base_command, &provision);
    let resume_command = provision::continue_conversation(&agent_command);
    let command = if input.continue_conversation {
        resume_command.clone()
    } else {
        agent_command
    };

    Ok(Plan {
        version: PLAN_VERSION,
        state_dir: input.state_root.join(&identity),
        identity,
        agent: input.agent.to_owned(),
        bottle: agent.bottle.clone(),
        manifest: input.manifest_path.to_owned(),
        backend: input.backend.to_owned(),
        backend_reason: input.backend_reason.to_owned(),
        command,
        command_source,
        workdir: WORKDIR.to_owned(),
        user: AGENT_USER.to_owned(),
        images: Images {
            base: input.base_image.to_owned(),
            gate: GATE_IMAGE.to_owned(),
            agent: bottle
                .image
                .clone()
                .unwrap_or_else(|| AGENT_IMAGE.to_owned()),
            agent_is_default: bottle.image.as_deref().is_none_or(|i| i == AGENT_IMAGE),
            bottle: input.grants.image.clone(),
        },
        runtime: bottle.runtime,
        gate_network: bottle.gate_network.clone(),
        egress: EgressPlan {
            proxy_url,
            no_proxy: NO_PROXY.to_owned(),
            allow,
            allow_private: checked
                .allow_private
                .iter()
                .map(|n| n.to_string())
                .collect(),
            routes,
            upstream_ca: checked.upstream_ca.clone(),
        },
        env,
        git,
        skills: agent.skills.clone(),
        has_prompt: agent.prompt.is_some(),
        supervise: bottle.supervise,
        provision,
        resume_command,
        resources: ResourcePlan {
            cpus: Some(checked.nano_cpus as f64 / 1e9),
            memory_bytes: checked.memory_bytes,
            pids: checked.pids,
            tmp_bytes: checked.tmp_bytes,
            nofile: checked.nofile,
            gate_cpus: checked.gate_nano_cpus as f64 / 1e9,
            gate_memory_bytes: checked.gate_memory_bytes,
            build_timeout_secs: checked.build_timeout_secs,
        },
        remove_on_exit: input.remove_on_exit,
        workspace: input.cwd.map(|dir| WorkspacePlan {
            source: dir.to_owned(),
            mode: if dir.join(".git").exists() {
                WorkspaceMode::Git
            } else if dir.ancestors().skip(1).any(|a| a.join(".git").exists()) {
                // Inside a repository's work tree: git's rules (ignored
                // files stay out, hidden local values stay out), no `.git`.
                WorkspaceMode::GitSubdir
            } else {
                WorkspaceMode::All
            },
            include: input.include.to_vec(),
            left_out: Vec::new(),
            config_changes: Vec::new(),
        }),
        remote_control,
    })
}

/// The placeholder the agent holds instead of a Claude OAuth token. It has
/// the real token's prefix so clients accept its shape, and says what it is.
/// The model API's own host.
pub const ANTHROPIC_API_HOST: &str = "api.anthropic.com";
const OAUTH_PREFIX: &str = "sk-ant-oat01-";
const REFRESH_PREFIX: &str = "sk-ant-ort01-";
/// Claude Code's switch for all its non-essential traffic.
const NONESSENTIAL_TRAFFIC: &str = "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC";

/// Remote Control for the bottle `identity`, or why it cannot be had:
/// it talks to Anthropic's own API with a claude.ai sign-in, so the
/// bottle's model route must be a `claude_code_oauth` one to
/// `api.anthropic.com`.
fn remote_control_plan(
    routes: &[RoutePlan],
    account: &ClaudeAccount,
    identity: &str,
) -> Result<RemoteControlPlan, String> {
    let signed_in = routes
        .iter()
        .any(|r| r.roles.iter().any(|x| x == ROLE_CLAUDE_CODE_OAUTH) && is_anthropic_api(&r.host));
    if !signed_in {
        return Err(format!(
            "--remote-control needs the bottle's model route to be a {ROLE_CLAUDE_CODE_OAUTH} route to {ANTHROPIC_API_HOST}: Remote Control talks to Anthropic's own API with a claude.ai sign-in (no API key, no gateway); add one (docs/manifest.md, Remote Control) or start without --remote-control"
        ));
    }
    Ok(RemoteControlPlan {
        name: identity.to_owned(),
        account: account.clone(),
    })
}
const API_KEY_PREFIX: &str = "sk-ant-api03-";

/// A placeholder of a credential's real shape (its prefix, 93 characters
/// of `[A-Za-z0-9_-]`, `AA`: 108 in all), so that a client checking the
/// format before it sends accepts it; it says what it is and is no secret.
fn placeholder(prefix: &str) -> String {
    const SAYS: &str = "bot-bottle-placeholder-the-gate-sends-the-real-credential-";
    let body: String = SAYS.chars().cycle().take(93).collect();
    format!("{prefix}{body}AA")
}

/// `AGENT-xxxxxx`: the agent's name and a random suffix of lowercase letters
/// and digits, valid as a Docker container, network and volume name.
pub fn mint_identity(agent: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..SUFFIX_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{agent}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_have_the_real_shape() {
        for prefix in [OAUTH_PREFIX, API_KEY_PREFIX] {
            let p = placeholder(prefix);
            assert_eq!(p.len(), 108);
            let body = &p[prefix.len()..p.len() - 2];
            assert_eq!(body.len(), 93);
            assert!(
                body.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            );
            assert!(p.starts_with(prefix) && p.ends_with("AA"));
        }
    }

    #[test]
    fn identities_are_docker_names_and_differ() {
        let a = mint_identity("demo");
        let b = mint_identity("demo");
        assert_ne!(a, b);
        assert!(a.starts_with("demo-"));
        assert_eq!(a.len(), "demo-".len() + SUFFIX_LEN);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }

    #[test]
    fn shell_words_quote_what_needs_it() {
        let argv = ["sh", "-c", "echo 'hi'"].map(String::from);
        assert_eq!(shell_words(&argv), r#"sh -c 'echo '\''hi'\'''"#);
    }
}
