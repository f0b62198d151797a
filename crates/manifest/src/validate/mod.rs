//! Checking what a parsed manifest means, and resolving what the rest of
//! bot-bottle needs from it (parsed rules, sizes, absolute paths).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

mod shapes;

pub use shapes::{
    MIN_PRIVATE_PREFIX_V4, MIN_PRIVATE_PREFIX_V6, is_env_name, is_header_name, parse_memory,
};
use shapes::{is_docker_name, is_plain_name, is_ssh_url, min_private_prefix, refused_network};

use crate::error::Problem;
use crate::host::{HostRule, normalize_host};
use crate::manifest::{Bottle, EnvValue, GitEntry, Manifest, MemorySize, Route};

/// Roles a credential route may carry.
pub const KNOWN_ROLES: &[&str] = &[ROLE_CLAUDE_CODE_OAUTH, ROLE_ANTHROPIC_API_KEY];
/// Gives the agent `CLAUDE_CODE_OAUTH_TOKEN=<placeholder>`; the gate sends
/// the real token as `Authorization: Bearer`.
pub const ROLE_CLAUDE_CODE_OAUTH: &str = "claude_code_oauth";
/// Gives the agent `ANTHROPIC_API_KEY=<placeholder>`; the gate sends the
/// real key as `x-api-key` (no scheme).
pub const ROLE_ANTHROPIC_API_KEY: &str = "anthropic_api_key";
/// The roles that make a route the bottle's model API: one per bottle.
pub const MODEL_ROLES: &[&str] = &[ROLE_CLAUDE_CODE_OAUTH, ROLE_ANTHROPIC_API_KEY];

/// Memory limit when the manifest names none.
pub const DEFAULT_MEMORY_BYTES: u64 = 4 << 30;
/// CPUs of the agent when the manifest names none.
pub const DEFAULT_CPUS: f64 = 2.0;
/// Size of the agent's `/tmp` when the manifest names none.
pub const DEFAULT_TMP_BYTES: u64 = 1 << 30;
/// Open files per process when the manifest names none.
pub const DEFAULT_NOFILE: u64 = 8192;
/// Fewest open files accepted: a shell and a tool or two.
pub const MIN_NOFILE: u64 = 64;
/// Most open files accepted (the kernel's `nr_open` default).
pub const MAX_NOFILE: u64 = 1 << 20;
/// CPUs of each gate when the manifest names none.
pub const DEFAULT_GATE_CPUS: f64 = 1.0;
/// Memory of the egress gate when the manifest names none.
pub const DEFAULT_GATE_MEMORY_BYTES: u64 = 256 << 20;
/// Smallest gate memory accepted.
pub const MIN_GATE_MEMORY_BYTES: u64 = 64 << 20;
/// Longest a build of the bottle's own image takes by default.
pub const DEFAULT_BUILD_TIMEOUT_SECS: u64 = 30 * 60;
/// Largest pack a push may send when the manifest names no limit.
pub const DEFAULT_MAX_PACK_BYTES: u64 = 512 << 20;
/// Process limit when the manifest names none.
pub const DEFAULT_PIDS: i64 = 1024;
/// Smallest memory limit accepted: the shim, a shell and a tool or two.
pub const MIN_MEMORY_BYTES: u64 = 32 << 20;
/// Smallest process limit accepted.
pub const MIN_PIDS: i64 = 16;
/// Longest agent or bottle name: identities add a suffix and must stay
/// within Docker's name limits.
pub const MAX_NAME_LEN: usize = 32;

/// Environment variables bot-bottle sets in the bottle itself, besides the
/// CA variables ([`crate::plan::CA_BUNDLE_VARS`]) and `BOTTLE_*`: an agent's
/// `env` may not override them (they are how egress reaches the gate).
pub const RESERVED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "NODE_EXTRA_CA_CERTS",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS",
    // The model API's placeholders and address (a route's role sets
    // them): an agent's own value could carry a real credential in.
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// Whether bot-bottle sets `name` itself.
pub fn is_reserved_env(name: &str) -> bool {
    RESERVED_ENV.contains(&name)
        || crate::plan::CA_BUNDLE_VARS.contains(&name)
        || crate::plan::QUIET_CLAUDE_CODE.contains(&name)
        || name.starts_with("BOTTLE_")
}

/// What validation needs from the host.
#[derive(Debug, Clone)]
pub struct Context {
    /// The user's home, for `~` and `~/.claude/skills`.
    pub home: PathBuf,
    /// The manifest's directory: relative paths in it are relative to here.
    pub base_dir: PathBuf,
}

impl Context {
    /// Expands `~/` and makes relative paths relative to the manifest.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        if path == "~" {
            self.home.clone()
        } else if let Some(rest) = path.strip_prefix("~/") {
            self.home.join(rest)
        } else if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            self.base_dir.join(path)
        }
    }

    /// Where the skill `name` must be on the host.
    pub fn skill_dir(&self, name: &str) -> PathBuf {
        self.home.join(".claude").join("skills").join(name)
    }
}

/// A bottle after validation: its rules parsed and its sizes resolved.
#[derive(Debug, Clone)]
pub struct CheckedBottle {
    pub allow: Vec<HostRule>,
    pub allow_private: Vec<IpNet>,
    pub memory_bytes: u64,
    pub pids: i64,
    pub nano_cpus: i64,
    pub tmp_bytes: u64,
    pub nofile: u64,
    pub gate_nano_cpus: i64,
    pub gate_memory_bytes: u64,
    pub build_timeout_secs: u64,
    pub upstream_ca: Option<PathBuf>,
    /// Identity file of each git entry, in order, resolved.
    pub identity_files: Vec<PathBuf>,
}

/// Checks every agent and bottle of `manifest`. Returns each bottle's
/// resolved settings, or every problem found (not only the first).
pub fn check(
    manifest: &Manifest,
    ctx: &Context,
) -> Result<BTreeMap<String, CheckedBottle>, Vec<Problem>> {
    let mut out = Problems::default();
    for (name, agent) in &manifest.agents {
        let at = format!("agents.{name}");
        check_name(&mut out, &at, "agent", name);
        if !manifest.bottles.contains_key(&agent.bottle) {
            let known: Vec<&str> = manifest.bottles.keys().map(String::as_str).collect();
            out.push(
                format!("{at}.bottle"),
                format!(
                    "bottle {:?} is not defined: {}",
                    agent.bottle,
                    if known.is_empty() {
                        "add it under \"bottles\"".to_owned()
                    } else {
                        format!("use one of {}", known.join(", "))
                    }
                ),
            );
        }
        if agent.command.first().is_none_or(|c| c.is_empty()) {
            out.push(
                format!("{at}.command"),
                "the command is empty: give the program and its arguments, as [\"claude\"]",
            );
        }
        for (i, arg) in agent.command.iter().enumerate() {
            if arg.contains('\0') {
                out.push(format!("{at}.command[{i}]"), "contains a NUL byte");
            }
        }
        for (i, skill) in agent.skills.iter().enumerate() {
            let field = format!("{at}.skills[{i}]");
            if !is_plain_name(skill) {
                out.push(
                    field,
                    format!("skill name {skill:?} must be a plain directory name (letters, digits, '.', '_', '-')"),
                );
                continue;
            }
            let dir = ctx.skill_dir(skill);
            if !dir.is_dir() {
                out.push(
                    field,
                    format!(
                        "skill {skill:?} not found at {}: create it or remove it from agent {name:?}",
                        dir.display()
                    ),
                );
            }
        }
        for (var, value) in &agent.env {
            let field = format!("{at}.env.{var}");
            if !is_env_name(var) {
                out.push(
                    field.clone(),
                    format!("{var:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"),
                );
            } else if is_reserved_env(var) {
                out.push(
                    field.clone(),
                    format!("{var} is set by bot-bottle itself: remove it from the agent's env"),
                );
            }
            match value {
                EnvValue::Literal(text) if text.contains(['\n', '\r', '\0']) => out.push(
                    field,
                    "the value contains a newline or NUL: use {\"from_host\": \"VAR\"} to forward a multi-line value by name",
                ),
                EnvValue::FromHost(from) if !is_env_name(&from.from_host) => out.push(
                    format!("{field}.from_host"),
                    format!("{:?} is not a valid variable name", from.from_host),
                ),
                EnvValue::FromHost(from) => {
                    if let Some(route) = secret_route(manifest, &agent.bottle, &from.from_host) {
                        out.push(
                            format!("{field}.from_host"),
                            format!(
                                "{} holds the secret of the route to {route} (its token_ref): forwarding it would put the real credential in the bottle; remove it from the agent's env (the gate injects it)",
                                from.from_host
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    let mut checked = BTreeMap::new();
    for (name, bottle) in &manifest.bottles {
        let at = format!("bottles.{name}");
        check_name(&mut out, &at, "bottle", name);
        checked.insert(name.clone(), check_bottle(&mut out, &at, bottle, ctx));
    }
    out.finish().map(|()| checked)
}

/// The host of the route of `bottle` whose secret is the host variable
/// `var`, if one is.
fn secret_route<'a>(manifest: &'a Manifest, bottle: &str, var: &str) -> Option<&'a str> {
    manifest
        .bottles
        .get(bottle)?
        .egress_proxy
        .routes
        .iter()
        .find(|r| r.token_ref.as_deref() == Some(var))
        .map(|r| r.host.as_str())
}

fn check_bottle(out: &mut Problems, at: &str, bottle: &Bottle, ctx: &Context) -> CheckedBottle {
    if let Some(image) = &bottle.image
        && (image.is_empty() || image.contains(char::is_whitespace))
    {
        out.push(
            format!("{at}.image"),
            format!("{image:?} is not an image reference"),
        );
    }

    let mut allow = Vec::new();
    for (i, text) in bottle.allow.iter().enumerate() {
        match HostRule::parse(text) {
            Ok(rule) => allow.push(rule),
            Err(err) => out.push(format!("{at}.allow[{i}]"), err.to_string()),
        }
    }

    let mut allow_private = Vec::new();
    for (i, text) in bottle.allow_private.iter().enumerate() {
        let field = format!("{at}.allow_private[{i}]");
        match text.parse::<IpNet>() {
            Ok(net) if net.prefix_len() < min_private_prefix(&net) => out.push(
                field,
                format!(
                    "{text:?} is wider than a /{}: name the private ranges your servers use (at most a /8 for IPv4, a /32 for IPv6)",
                    min_private_prefix(&net)
                ),
            ),
            Ok(net) => allow_private.push(net.trunc()),
            Err(_) => out.push(
                field,
                format!("{text:?} is not a CIDR range such as \"10.20.0.0/16\""),
            ),
        }
    }

    if let Some(network) = &bottle.gate_network {
        if !is_docker_name(network) {
            out.push(
                format!("{at}.gate_network"),
                format!(
                    "{network:?} is not a Docker network name (letters, digits, '_', '.', '-')"
                ),
            );
        } else if let Some(why) = refused_network(network) {
            out.push(format!("{at}.gate_network"), why);
        }
    }

    check_routes(out, at, &bottle.egress_proxy.routes, &allow);
    let upstream_ca = bottle.egress_proxy.upstream_ca.as_ref().map(|p| {
        let path = ctx.resolve_path(p);
        if !path.is_file() {
            out.push(
                format!("{at}.egress_proxy.upstream_ca"),
                format!(
                    "CA file {} does not exist: fix the path or remove upstream_ca",
                    path.display()
                ),
            );
        }
        path
    });

    let identity_files = check_git(out, at, &bottle.git, ctx);

    let memory_bytes = match &bottle.resources.memory {
        None => DEFAULT_MEMORY_BYTES,
        Some(size) => match parse_memory(size) {
            Some(bytes) if bytes >= MIN_MEMORY_BYTES => bytes,
            Some(_) => {
                out.push(
                    format!("{at}.resources.memory"),
                    format!("at least {} MiB is needed", MIN_MEMORY_BYTES >> 20),
                );
                MIN_MEMORY_BYTES
            }
            None => {
                out.push(
                    format!("{at}.resources.memory"),
                    "expected bytes or a size such as \"512m\" or \"4g\"",
                );
                DEFAULT_MEMORY_BYTES
            }
        },
    };
    let pids = bottle.resources.pids.unwrap_or(DEFAULT_PIDS);
    if pids < MIN_PIDS {
        out.push(
            format!("{at}.resources.pids"),
            format!("at least {MIN_PIDS} processes are needed"),
        );
    }
    let cpus = |out: &mut Problems, field: &str, value: Option<f64>, default: f64| {
        let cpus = value.unwrap_or(default);
        if (0.01..=1024.0).contains(&cpus) {
            (cpus * 1e9) as i64
        } else {
            out.push(
                format!("{at}.{field}"),
                "expected a number of CPUs from 0.01 to 1024, such as 2 or 0.5",
            );
            (default * 1e9) as i64
        }
    };
    let resources = &bottle.resources;
    let nano_cpus = cpus(out, "resources.cpus", resources.cpus, DEFAULT_CPUS);
    let gate = resources.gate.clone().unwrap_or_default();
    let gate_nano_cpus = cpus(out, "resources.gate.cpus", gate.cpus, DEFAULT_GATE_CPUS);
    let size = |out: &mut Problems, field: &str, value: &Option<MemorySize>, default, min: u64| {
        match value {
            None => default,
            Some(size) => match parse_memory(size) {
                Some(bytes) if bytes >= min => bytes,
                Some(_) => {
                    out.push(
                        format!("{at}.{field}"),
                        format!("at least {} MiB is needed", min >> 20),
                    );
                    min
                }
                None => {
                    out.push(
                        format!("{at}.{field}"),
                        "expected bytes or a size such as \"512m\" or \"4g\"",
                    );
                    default
                }
            },
        }
    };
    let tmp_bytes = size(
        out,
        "resources.tmp",
        &resources.tmp,
        DEFAULT_TMP_BYTES,
        1 << 20,
    );
    let gate_memory_bytes = size(
        out,
        "resources.gate.memory",
        &gate.memory,
        DEFAULT_GATE_MEMORY_BYTES,
        MIN_GATE_MEMORY_BYTES,
    );
    let nofile = resources.nofile.unwrap_or(DEFAULT_NOFILE);
    if !(MIN_NOFILE..=MAX_NOFILE).contains(&nofile) {
        out.push(
            format!("{at}.resources.nofile"),
            format!("expected {MIN_NOFILE} to {MAX_NOFILE} open files"),
        );
    }
    let build_timeout_secs = match resources.build.as_ref().and_then(|b| b.timeout.as_deref()) {
        None => DEFAULT_BUILD_TIMEOUT_SECS,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if d.as_secs() >= 10 && d.as_secs() <= 24 * 3600 => d.as_secs(),
            _ => {
                out.push(
                    format!("{at}.resources.build.timeout"),
                    format!("{text:?} is not a duration from 10s to 24h, such as \"30m\""),
                );
                DEFAULT_BUILD_TIMEOUT_SECS
            }
        },
    };

    CheckedBottle {
        allow,
        allow_private,
        memory_bytes,
        pids,
        nano_cpus,
        tmp_bytes,
        nofile: nofile.clamp(MIN_NOFILE, MAX_NOFILE),
        gate_nano_cpus,
        gate_memory_bytes,
        build_timeout_secs,
        upstream_ca,
        identity_files,
    }
}

/// A route's `token_refresh` in seconds, or why it is not one.
pub(crate) fn refresh_secs(text: &str) -> Result<u64, String> {
    match humantime::parse_duration(text) {
        Ok(d) if (10..=24 * 3600).contains(&d.as_secs()) => Ok(d.as_secs()),
        _ => Err(format!(
            "{text:?} is not a duration from 10s to 24h, such as \"30m\""
        )),
    }
}

fn check_routes(out: &mut Problems, at: &str, routes: &[Route], allow: &[HostRule]) {
    let mut model_routes = 0;
    let mut hosts: Vec<String> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let field = format!("{at}.egress_proxy.routes[{i}]");
        match normalize_host(&route.host) {
            Ok(host) if hosts.contains(&host.to_string()) => out.push(
                format!("{field}.host"),
                format!(
                    "a route to {host} is given twice: the gate would not know which credential to send; keep one"
                ),
            ),
            Ok(host) if !allow.iter().any(|rule| rule.allows(&host, 443, 443)) => out.push(
                format!("{field}.host"),
                format!(
                    "{} is not allowed on port 443: add it to the bottle's allow list",
                    route.host
                ),
            ),
            Ok(host) => hosts.push(host.to_string()),
            Err(err) => out.push(format!("{field}.host"), err.to_string()),
        }
        match (&route.token_ref, &route.token_command) {
            (Some(_), Some(_)) => out.push(
                field.clone(),
                "give either token_ref or token_command, not both",
            ),
            (None, None) => out.push(
                field.clone(),
                "no secret: set token_ref (a host variable) or token_command (a command printing the secret)",
            ),
            (Some(var), None) if !is_env_name(var) => out.push(
                format!("{field}.token_ref"),
                format!("{var:?} is not a valid variable name"),
            ),
            (None, Some(cmd)) if cmd.trim().is_empty() => {
                out.push(format!("{field}.token_command"), "the command is empty")
            }
            _ => {}
        }
        if let Some(text) = &route.token_refresh {
            if route.token_command.is_none() {
                out.push(
                    format!("{field}.token_refresh"),
                    "only a token_command can be run again: give one, or remove token_refresh",
                );
            } else if let Err(message) = refresh_secs(text) {
                out.push(format!("{field}.token_refresh"), message);
            }
        }
        if let Some(header) = &route.header
            && !is_header_name(header)
        {
            out.push(
                format!("{field}.header"),
                format!("{header:?} is not a header name that may carry a credential"),
            );
        }
        if let Some(scheme) = &route.scheme
            && scheme.contains(|c: char| c.is_control() || c.is_whitespace())
        {
            out.push(
                format!("{field}.scheme"),
                "the scheme must be one word, such as Bearer",
            );
        }
        for role in route.role.iter().flat_map(|r| r.as_slice()) {
            if MODEL_ROLES.contains(&role.as_str()) {
                model_routes += 1;
                if model_routes == 2 {
                    out.push(
                        format!("{field}.Role"),
                        format!(
                            "{} may appear on one route per bottle, and only one of them: remove it from all but one",
                            MODEL_ROLES.join(" and ")
                        ),
                    );
                }
                // The client sends the placeholder in one header, so the
                // gate must replace that header and no other.
                let (header, scheme, sends) = if role == ROLE_ANTHROPIC_API_KEY {
                    ("x-api-key", "", "the key as x-api-key with no scheme")
                } else {
                    (
                        "authorization",
                        "Bearer",
                        "the token as Authorization: Bearer",
                    )
                };
                if route
                    .header
                    .as_deref()
                    .is_some_and(|h| !h.eq_ignore_ascii_case(header))
                    || route.scheme.as_deref().is_some_and(|s| s != scheme)
                {
                    out.push(
                        format!("{field}.Role"),
                        format!("{role} sends {sends}: remove header and scheme from this route"),
                    );
                }
            } else if !KNOWN_ROLES.contains(&role.as_str()) {
                out.push(
                    format!("{field}.Role"),
                    format!(
                        "unknown role {role:?}: known roles are {}",
                        KNOWN_ROLES.join(", ")
                    ),
                );
            }
        }
    }
}

fn check_git(out: &mut Problems, at: &str, entries: &[GitEntry], ctx: &Context) -> Vec<PathBuf> {
    let mut names = Vec::new();
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("{at}.git[{i}]");
        if !is_plain_name(&entry.name) {
            out.push(
                format!("{field}.Name"),
                format!(
                    "{:?} is not a remote name (letters, digits, '.', '_', '-')",
                    entry.name
                ),
            );
        } else if names.contains(&&entry.name) {
            out.push(
                format!("{field}.Name"),
                format!("remote {:?} is defined twice", entry.name),
            );
        }
        names.push(&entry.name);
        if !is_ssh_url(&entry.upstream) {
            out.push(
                format!("{field}.Upstream"),
                format!(
                    "{:?} is not an SSH URL: use ssh://user@host/path.git or user@host:path.git",
                    entry.upstream
                ),
            );
        }
        let key = ctx.resolve_path(&entry.identity_file);
        if !key.is_file() {
            out.push(
                format!("{field}.IdentityFile"),
                format!(
                    "identity file {} does not exist: create the key (ssh-keygen -t ed25519 -f {}) or fix the path",
                    key.display(),
                    key.display()
                ),
            );
        }
        keys.push(key);
        if let Some(line) = &entry.host_key
            && (line.split_whitespace().count() < 3 || line.contains('\n'))
        {
            out.push(
                format!("{field}.HostKey"),
                "expected one known_hosts line: \"host key-type base64-key\"",
            );
        }
        if entry
            .push
            .branches
            .iter()
            .any(|b| b.trim().is_empty() || b.contains(char::is_whitespace))
        {
            out.push(
                format!("{field}.push.branches"),
                "branch patterns may not be empty or contain spaces",
            );
        }
        if entry.push.max_pack_bytes == Some(0) {
            out.push(
                format!("{field}.push.max_pack_bytes"),
                "must be more than 0",
            );
        }
    }
    keys
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), Vec<Problem>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

fn check_name(out: &mut Problems, at: &str, kind: &str, name: &str) {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        out.push(
            at,
            format!(
                "{kind} name {name:?} must be 1 to {MAX_NAME_LEN} lowercase letters, digits, '-' or '_' (it names containers and networks)"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_the_bottle_sets_is_reserved() {
        for var in [
            "HTTPS_PROXY",
            "SSL_CERT_FILE",
            "DENO_CERT",
            "GIT_CONFIG_COUNT",
            "BOTTLE_IDENTITY",
            "ANTHROPIC_API_KEY",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "DISABLE_AUTOUPDATER",
        ] {
            assert!(is_reserved_env(var), "{var}");
        }
        assert!(!is_reserved_env("RUST_LOG"));
    }

    #[test]
    fn memory_sizes() {
        let text = |s: &str| parse_memory(&MemorySize::Text(s.to_owned()));
        assert_eq!(text("4g"), Some(4 << 30));
        assert_eq!(text("512M"), Some(512 << 20));
        assert_eq!(text("1.5g"), Some(3 << 29));
        assert_eq!(text("100"), Some(100));
        assert_eq!(text("lots"), None);
        assert_eq!(text("-1g"), None);
    }

    #[test]
    fn ssh_urls() {
        assert!(is_ssh_url("ssh://git@git.example.com/me/repo.git"));
        assert!(is_ssh_url("git@github.com:me/repo.git"));
        assert!(!is_ssh_url("https://example.com/repo.git"));
        assert!(!is_ssh_url("-oProxyCommand=x:y"));
        assert!(!is_ssh_url("ssh://host"));
    }
}
