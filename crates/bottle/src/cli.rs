//! The command line as typed. [`crate::settings`] turns it into what the
//! commands use.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run AI coding agents in bottles: sandboxes whose only ways out are gates
/// you control.
#[derive(Debug, Parser)]
#[command(name = "bottle", version, disable_help_subcommand = true)]
pub struct Cli {
    /// Show more of what bot-bottle does.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an agent in a fresh bottle.
    Start(StartArgs),
    /// Start a stopped bottle again: same identity, volumes and CA.
    Resume(ResumeArgs),
    /// List bottles: every one, or only the running ones.
    List {
        /// `active`: only bottles whose launcher runs.
        #[arg(value_parser = ["active"])]
        which: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove everything bot-bottle owns that no running bottle holds.
    Cleanup {
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove without asking.
        #[arg(short = 'y', long = "yes")]
        yes: bool,
    },
    /// Every bottle at a glance: their gates' decisions, their agents'
    /// requests (approve and deny in place), and attach, resume, stop,
    /// remove, cleanup and new bottles (`?` lists the keys).
    Dashboard,
    /// Stop a running bottle, keeping its state (workspace, home, CA,
    /// approvals) for `bottle resume`.
    Stop { identity: String },
    /// Remove one stopped bottle: its volumes, network and state.
    Rm {
        identity: String,
        #[arg(short = 'y', long = "yes")]
        yes: bool,
    },
    /// List what agents asked for and wait for a person to decide.
    Requests {
        /// Only this bottle's requests.
        identity: Option<String>,
        /// Decided requests too, not only pending ones.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Approve a request: a host or route applies live in the running
    /// bottle; an image change rebuilds the bottle's image and restarts it.
    Approve {
        /// The request's id (`r-…`, see `bottle requests`; `IDENTITY/r-…`
        /// names the bottle too).
        id: String,
        /// For a route: the host variable holding the secret the gate
        /// injects. Read now, and again at every resume.
        #[arg(long, value_name = "VAR")]
        token_ref: Option<String>,
        /// For a route: what precedes the secret in the header.
        #[arg(long, default_value = "Bearer")]
        scheme: String,
        /// For an image change: what the agent is told besides the
        /// outcome (a failed build tells it only which step failed and its
        /// exit status; what the build printed is yours).
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a request; the agent is told why.
    Deny {
        /// The request's id.
        id: String,
        /// What the agent is told.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check a manifest or print its JSON Schema.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Run a bottle's gate (inside the gate container).
    #[command(hide = true)]
    Gate(bottle_gate::GateArgs),
    /// Run as pid 1 in the agent's sandbox.
    #[command(hide = true)]
    Shim(bottle_shim::ShimArgs),
    /// Prepare an image's trust stores for a read-only root (run while
    /// bot-bottle builds the image).
    #[command(hide = true)]
    PrepareTrust,
    /// Helpers of an image build, run in its container.
    #[command(hide = true)]
    BuildHelper {
        /// `idle` (wait to be stopped; what follows is ignored: the image's
        /// own command rides along) or `mkdir PATH`.
        action: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check that a gate answers (a container's health check).
    #[command(hide = true)]
    Health(HealthArgs),
    /// The git gate's hook (run by git inside the gate).
    #[command(hide = true)]
    GitHook {
        /// The hook: pre-receive.
        name: String,
    },
    /// Connect this terminal to a running bottle's agent (Ctrl-P Ctrl-Q
    /// detaches; the agent runs on).
    Attach {
        /// The bottle's identity (see `bottle list active`).
        identity: String,
    },
    /// Connect this terminal to a native bottle's agent terminal.
    #[command(hide = true)]
    NativeAttach(bottle_backend::native::attach::AttachArgs),
    /// Start a native sandbox as the agent's own host uid (a bottle
    /// launched by root).
    #[command(hide = true)]
    NativeSandbox(bottle_backend::native::unprivileged::StageArgs),
    /// Remove what is left of a bottle after its launcher returned.
    #[command(hide = true)]
    Reap(bottle_backend::lifecycle::ReapArgs),
    /// Fetch the pinned Claude Code into the cache (`--fetch`), or move the
    /// pin: to the newest release of its package, or to `--version`.
    UpdateAgent {
        /// Only fetch what is pinned now (what `start` would fetch).
        #[arg(long, conflicts_with_all = ["version", "reset"])]
        fetch: bool,
        /// The package version to pin (default: the newest).
        #[arg(long)]
        version: Option<String>,
        /// Go back to the pin bot-bottle ships.
        #[arg(long, conflicts_with = "version")]
        reset: bool,
    },
    /// Say which backends can run bottles here, and what to install or
    /// change where one cannot.
    Doctor {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub use bottle_backend::BackendName;

#[derive(Debug, Default, Args)]
pub struct ManifestArg {
    /// Manifest file [default: $BOTTLE_MANIFEST, ./bottle.json,
    /// $XDG_CONFIG_HOME/bot-bottle/manifest.json]
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The agent to start (a key of the manifest's "agents").
    pub agent: String,
    #[command(flatten)]
    pub manifest: ManifestArg,
    /// Where the bottle runs [default: $BOTTLE_BACKEND, else docker when
    /// an engine answers, else native]
    #[arg(long, value_enum)]
    pub backend: Option<BackendName>,
    /// Print the plan and create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How to print the plan.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Start without asking for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Remove everything the bottle made when it exits, state included.
    #[arg(long)]
    pub rm: bool,
    /// Copy the current directory (with .git) into the bottle's workspace.
    /// The agent works on the copy; its work leaves through the git gate.
    #[arg(long)]
    pub cwd: bool,
    /// With --cwd: copy this path (relative to the current directory) even
    /// if it looks like a secret (an .env file, a key); repeatable.
    #[arg(long, value_name = "PATH")]
    pub include: Vec<PathBuf>,
    /// Run Claude Code with Remote Control on, to follow and steer the
    /// session from claude.ai/code or the Claude app (needs your claude.ai
    /// sign-in on this machine; see docs/cli.md).
    #[arg(long)]
    pub remote_control: bool,
    #[command(flatten)]
    pub detach: DetachArgs,
    /// The identity a detaching `start` minted for its launcher.
    #[arg(long, hide = true, requires = "detached_launcher")]
    pub identity: Option<String>,
    /// Run this command in the bottle instead of the agent's.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Detaching a bottle from the terminal (`start` and `resume`).
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Start the bottle in the background, not taking the terminal:
    /// `bottle attach IDENTITY` reaches its agent, `bottle stop IDENTITY`
    /// stops it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// This process is the background launcher of a detaching start or
    /// resume (run by it, not by a person).
    #[arg(long, hide = true)]
    pub detached_launcher: bool,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Validate a manifest; prints every problem found.
    Check {
        /// Manifest file [default: the usual lookup]
        path: Option<PathBuf>,
    },
    /// Print the manifest's JSON Schema.
    Schema,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// A gate socket that must answer HTTP.
    #[arg(long = "socket", value_name = "PATH")]
    pub sockets: Vec<PathBuf>,
    /// A loopback port that must answer HTTP (the shim's forward).
    #[arg(long = "tcp", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// UID:GID to drop to before checking.
    #[arg(long, value_name = "UID:GID")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The bottle's identity (see `bottle list`).
    pub identity: String,
    /// Resume without asking for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Start Claude Code afresh instead of continuing the conversation
    /// the bottle's home holds.
    #[arg(long)]
    pub new_session: bool,
    /// Remote Control on again (it is on only when asked, each time).
    #[arg(long)]
    pub remote_control: bool,
    #[command(flatten)]
    pub detach: DetachArgs,
    /// Run this command in the bottle instead of the agent's (`claude …`
    /// continues the conversation too, unless `--new-session`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}
