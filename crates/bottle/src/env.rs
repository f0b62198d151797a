//! Every environment variable bot-bottle reads, declared once.
//!
//! Variables wired to a flag are named in the flag's `env = …` (clap shows
//! them in `--help`); the rest are read only through [`read`].

/// Manifest path when `--manifest` is not given.
pub const BOTTLE_MANIFEST: &str = "BOTTLE_MANIFEST";
/// Backend when `--backend` is not given (`docker` or `native`; unset:
/// docker when an engine answers, else native).
pub const BOTTLE_BACKEND: &str = "BOTTLE_BACKEND";
/// The image every bot-bottle image is built `FROM`
/// (default `bot-bottle/base:bookworm`, made by `scripts/base-image`).
pub const BOTTLE_BASE_IMAGE: &str = "BOTTLE_BASE_IMAGE";
/// How bottles get Claude Code: `pypi` (default: the pinned binary from
/// the `claude-agent-sdk` wheel, cached on the host), `npm` (installed
/// from the npm registry while the image builds) or `0` (not at all).
pub const BOTTLE_INSTALL_CLAUDE: &str = "BOTTLE_INSTALL_CLAUDE";
/// A Claude Code binary of the person's own, used instead of the pinned one.
pub const BOTTLE_CLAUDE_BIN: &str = "BOTTLE_CLAUDE_BIN";
/// The package index (PEP 691) `bottle update-agent` asks (default
/// `PIP_INDEX_URL`, then PyPI).
pub const BOTTLE_PYPI_INDEX: &str = "BOTTLE_PYPI_INDEX";
/// pip's index, used when `BOTTLE_PYPI_INDEX` is unset.
pub const PIP_INDEX_URL: &str = "PIP_INDEX_URL";
/// Where downloads are cached (default `~/.cache`).
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// Milliseconds the shim waits for the gate's sockets (default 15000).
pub const BOTTLE_GATE_TIMEOUT_MS: &str = "BOTTLE_GATE_TIMEOUT_MS";
/// A fixed name for the agent's container instead of `IDENTITY-agent`
/// (for scripts that address it by name). A name in use is an error.
pub const BOTTLE_CONTAINER: &str = "BOTTLE_CONTAINER";
/// Where bottles keep their state (default `~/.local/state`).
pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";
/// Where the user's manifest may live (default `~/.config`).
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// The user's home: `~` in manifests, `~/.claude/skills`.
pub const HOME: &str = "HOME";
/// Claude Code's own configuration directory on the host (default `~`
/// for `.claude.json`, `~/.claude` for the sign-in).
pub const CLAUDE_CONFIG_DIR: &str = "CLAUDE_CONFIG_DIR";
/// Where the dashboard opens an agent inside tmux: `window` (default) or
/// `pane`.
pub const BOTTLE_DASHBOARD_TMUX: &str = "BOTTLE_DASHBOARD_TMUX";
/// Any value turns colour off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// What a command bot-bottle starts elsewhere (a tmux window the
/// dashboard opens) must see as this process does.
pub const PASSED_ON: &[&str] = &[
    HOME,
    XDG_STATE_HOME,
    XDG_CONFIG_HOME,
    XDG_CACHE_HOME,
    BOTTLE_MANIFEST,
    BOTTLE_BACKEND,
    BOTTLE_BASE_IMAGE,
    BOTTLE_INSTALL_CLAUDE,
    BOTTLE_CLAUDE_BIN,
    BOTTLE_GATE_TIMEOUT_MS,
    BOTTLE_CONTAINER,
    CLAUDE_CONFIG_DIR,
    NO_COLOR,
    "CLAUDE_BOTTLE_MANIFEST",
    "CLAUDE_BOTTLE_BACKEND",
    "CLAUDE_BOTTLE_BASE_IMAGE",
    "CLAUDE_BOTTLE_CONTAINER",
];

/// Names the original tool (claude-bottle) used, read as aliases of ours
/// when ours are unset: (alias, ours).
pub const ALIASES: &[(&str, &str)] = &[
    ("CLAUDE_BOTTLE_MANIFEST", BOTTLE_MANIFEST),
    ("CLAUDE_BOTTLE_BACKEND", BOTTLE_BACKEND),
    ("CLAUDE_BOTTLE_BASE_IMAGE", BOTTLE_BASE_IMAGE),
    ("CLAUDE_BOTTLE_CONTAINER", BOTTLE_CONTAINER),
];

/// Reads `name`, falling back to its `CLAUDE_BOTTLE_*` alias. Empty counts
/// as unset.
pub fn read(name: &str) -> Option<String> {
    let get = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    get(name).or_else(|| {
        ALIASES
            .iter()
            .find(|(_, ours)| *ours == name)
            .and_then(|(alias, _)| get(alias))
    })
}

/// [`read`], saying which name held the value.
pub fn read_named(name: &'static str) -> Option<(&'static str, String)> {
    let get = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    get(name).map(|v| (name, v)).or_else(|| {
        ALIASES
            .iter()
            .find(|(_, ours)| *ours == name)
            .and_then(|(alias, _)| get(alias).map(|v| (*alias, v)))
    })
}
