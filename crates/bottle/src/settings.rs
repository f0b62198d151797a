//! Resolved settings: flags, then environment, then manifest and defaults,
//! decided here once so commands never look at raw arguments.
//!
//! | setting       | flag          | environment                      | default                          |
//! |---------------|---------------|----------------------------------|----------------------------------|
//! | manifest      | `--manifest`  | `BOTTLE_MANIFEST`                | `./bottle.json`, then `$XDG_CONFIG_HOME/bot-bottle/manifest.json` |
//! | backend       | `--backend`   | `BOTTLE_BACKEND`                 | `docker` when an engine answers, else `native` |
//! | base image    |               | `BOTTLE_BASE_IMAGE`              | `bot-bottle/base:bookworm`       |
//! | state root    |               | `XDG_STATE_HOME`                 | `~/.local/state` + `/bot-bottle` |
//! | Claude Code   |               | `BOTTLE_INSTALL_CLAUDE`, `BOTTLE_CLAUDE_BIN` | the pinned binary (`images/agent/claude.json`, or `$XDG_CONFIG_HOME/bot-bottle/claude.json`) |
//! | cache         |               | `XDG_CACHE_HOME`                 | `~/.cache` + `/bot-bottle`       |
//!
//! `CLAUDE_BOTTLE_*` names of the original tool are read as aliases.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bottle_manifest::load::Lookup;

use bottle_backend::registry::Wanted;

use crate::cli::{BackendName, ManifestArg};
use crate::env;

/// Default base image (made by `scripts/base-image`).
pub const DEFAULT_BASE_IMAGE: &str = "bot-bottle/base:bookworm";
/// Default wait for the gate's sockets.
const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings every command shares.
#[derive(Debug, Clone)]
pub struct Global {
    pub home: PathBuf,
    pub cwd: PathBuf,
    /// `$XDG_STATE_HOME/bot-bottle`.
    pub state_root: PathBuf,
    pub config_home: Option<PathBuf>,
    /// `$XDG_CACHE_HOME/bot-bottle`.
    pub cache_root: PathBuf,
}

impl Global {
    pub fn resolve() -> anyhow::Result<Global> {
        let Some(home) = env::read(env::HOME).map(PathBuf::from) else {
            bail!(
                "HOME is not set: bot-bottle needs it for ~ in manifests and for its state directory"
            );
        };
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let state_home = env::read(env::XDG_STATE_HOME)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".local").join("state"));
        let config_home = env::read(env::XDG_CONFIG_HOME)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        let cache_home = env::read(env::XDG_CACHE_HOME)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache"));
        Ok(Global {
            state_root: state_home.join("bot-bottle"),
            cache_root: cache_home.join("bot-bottle"),
            config_home: Some(config_home),
            home,
            cwd,
        })
    }

    /// Where launchers serialise image builds: shared by every state root
    /// of this user, so bottles with different state directories still
    /// build an image once.
    pub fn lock_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("bot-bottle-{}", nix::unistd::getuid()))
    }

    /// Where a person's own Claude Code pin lives (`bottle update-agent`).
    pub fn claude_pin_path(&self) -> Option<PathBuf> {
        self.config_home
            .as_ref()
            .map(|c| c.join("bot-bottle").join("claude.json"))
    }

    /// The person's claude.ai sign-in on this machine, as much of it as
    /// Remote Control needs in a bottle: the account's and organization's
    /// ids (Claude Code's `.claude.json`) and the plan's kind (its sign-in
    /// file). The tokens beside them are not read.
    pub fn claude_account(&self) -> anyhow::Result<bottle_manifest::plan::ClaudeAccount> {
        use bottle_manifest::plan::{ClaudeAccount, REMOTE_CONTROL_PLANS};
        let (config, sign_in) = match env::read(env::CLAUDE_CONFIG_DIR).map(PathBuf::from) {
            Some(dir) => (dir.join(".claude.json"), dir.join(".credentials.json")),
            None => (
                self.home.join(".claude.json"),
                self.home.join(".claude").join(".credentials.json"),
            ),
        };
        let login = "run `claude auth login` on this machine (a claude.ai Pro, Max, Team or Enterprise plan), then start again";
        let read = |path: &std::path::Path| -> anyhow::Result<serde_json::Value> {
            let bytes = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "--remote-control needs your claude.ai sign-in, which is not at {} ({e}): {login}",
                    path.display()
                )
            })?;
            serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{} is not JSON ({e}): {login}", path.display()))
        };
        let config_json = read(&config)?;
        let field = |value: &serde_json::Value, at: &[&str], path: &std::path::Path| {
            at.iter()
                .try_fold(value, |v, key| v.get(key))
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    anyhow::anyhow!("{} has no {}: {login}", path.display(), at.join("."))
                })
        };
        let account_uuid = field(&config_json, &["oauthAccount", "accountUuid"], &config)?;
        let organization_uuid =
            field(&config_json, &["oauthAccount", "organizationUuid"], &config)?;
        let subscription_type = field(
            &read(&sign_in)?,
            &["claudeAiOauth", "subscriptionType"],
            &sign_in,
        )?;
        if !REMOTE_CONTROL_PLANS.contains(&subscription_type.as_str()) {
            anyhow::bail!(
                "Remote Control needs a claude.ai {} plan; the sign-in at {} is for {subscription_type:?}",
                REMOTE_CONTROL_PLANS.join(", "),
                sign_in.display()
            );
        }
        Ok(ClaudeAccount {
            account_uuid,
            organization_uuid,
            subscription_type,
        })
    }

    /// How bottles get Claude Code.
    pub fn claude_install(&self) -> anyhow::Result<bottle_backend::claude::Install> {
        use bottle_backend::claude::{Install, Pin};
        if let Some(bin) = env::read(env::BOTTLE_CLAUDE_BIN) {
            let bin = self.cwd.join(bin);
            return Ok(Install::Binary(bin));
        }
        match env::read(env::BOTTLE_INSTALL_CLAUDE).as_deref() {
            None | Some("pypi") => {
                let pin = match self.claude_pin_path() {
                    Some(path) => Pin::load(&path)?,
                    None => Pin::builtin()?,
                };
                Ok(Install::Pinned {
                    pin,
                    cache: self.cache_root.clone(),
                })
            }
            Some("npm") => Ok(Install::Npm),
            Some("0") => Ok(Install::Skip),
            Some(other) => bail!(
                "{}={other:?}: say pypi (the pinned binary, the default), npm, or 0 for bottles without Claude Code; or set {} to a binary of your own",
                env::BOTTLE_INSTALL_CLAUDE,
                env::BOTTLE_CLAUDE_BIN
            ),
        }
    }

    /// Where to look for the manifest, with `flag` first.
    pub fn manifest_lookup(&self, flag: &ManifestArg) -> Lookup {
        Lookup {
            flag: flag.manifest.clone(),
            env: env::read(env::BOTTLE_MANIFEST).map(PathBuf::from),
            cwd: self.cwd.clone(),
            config_home: self.config_home.clone(),
        }
    }
}

/// Settings of `start` and of the backends.
#[derive(Debug, Clone)]
pub struct Start {
    /// Where the backend choice may come from (decided by
    /// [`bottle_backend::registry::choose`], which may ask the engine).
    pub wanted: Wanted,
    pub base_image: String,
    /// Every backend's own settings.
    pub backends: bottle_backend::registry::Settings,
}

impl Start {
    pub fn resolve(flag: Option<BackendName>, global: &Global) -> anyhow::Result<Start> {
        let env = match env::read_named(env::BOTTLE_BACKEND) {
            None => None,
            Some((var, value)) => Some((
                var,
                value
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("{var}: {e}"))?,
            )),
        };
        let claude = global.claude_install()?;
        let gate_timeout = match env::read(env::BOTTLE_GATE_TIMEOUT_MS) {
            None => DEFAULT_GATE_TIMEOUT,
            Some(ms) => Duration::from_millis(ms.parse().with_context(|| {
                format!(
                    "{} must be a number of milliseconds",
                    env::BOTTLE_GATE_TIMEOUT_MS
                )
            })?),
        };
        Ok(Start {
            wanted: Wanted { flag, env },
            base_image: env::read(env::BOTTLE_BASE_IMAGE)
                .unwrap_or_else(|| DEFAULT_BASE_IMAGE.into()),
            backends: bottle_backend::registry::Settings::new(bottle_backend::registry::Common {
                claude,
                lock_dir: global.lock_dir(),
                gate_timeout,
                container_name: env::read(env::BOTTLE_CONTAINER),
            }),
        })
    }
}
