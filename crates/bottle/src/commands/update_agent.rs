//! `bottle update-agent`: fetch the pinned Claude Code into the cache, or
//! move the pin deliberately (a person's own pin, beside the manifest in
//! `$XDG_CONFIG_HOME/bot-bottle/claude.json`).

use anyhow::Context;
use bottle_backend::claude::{self, Install};

use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, env};

/// What `update-agent` was asked.
pub struct Wanted {
    /// Only fetch what is pinned now.
    pub fetch: bool,
    /// Back to the pin bot-bottle ships.
    pub reset: bool,
    /// The package version to pin (the newest when `None`).
    pub version: Option<String>,
}

pub fn run(wanted: Wanted, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let pin_path = global
        .claude_pin_path()
        .context("no configuration directory: set HOME or XDG_CONFIG_HOME")?;
    if wanted.reset {
        match std::fs::remove_file(&pin_path) {
            Ok(()) => printer.step(&format!("removed {}", pin_path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", pin_path.display()).into()),
        }
        let pin = claude::Pin::builtin()?;
        printer.data(&format!(
            "Claude Code {} ({} {}): the pin bot-bottle ships",
            pin.claude, pin.package, pin.version
        ));
        return Ok(0);
    }
    let runtime = super::runtime()?;
    if wanted.fetch {
        let install = global.claude_install()?;
        let installed = runtime.block_on(install.ensure(printer))?;
        match (installed, &install) {
            (Some(installed), _) => printer.data(&format!(
                "Claude Code {}: {}",
                installed.version,
                installed.path.display()
            )),
            (None, Install::Npm) => printer.data(
                "Claude Code comes from the npm registry while the agent image builds (BOTTLE_INSTALL_CLAUDE=npm): nothing to fetch",
            ),
            (None, _) => printer.data("Claude Code is not installed (BOTTLE_INSTALL_CLAUDE=0)"),
        }
        return Ok(0);
    }
    let before = claude::Pin::load(&pin_path)?;
    let index = env::read(env::BOTTLE_PYPI_INDEX)
        .or_else(|| env::read(env::PIP_INDEX_URL))
        .unwrap_or_else(|| claude::DEFAULT_INDEX.to_owned());
    let pin = runtime.block_on(claude::pin_from_index(
        &index,
        &before.package,
        wanted.version.as_deref(),
        &global.cache_root,
        printer,
    ))?;
    if pin == before {
        printer.data(&format!(
            "Claude Code {} ({} {}) is pinned already",
            pin.claude, pin.package, pin.version
        ));
        return Ok(0);
    }
    if let Some(parent) = pin_path.parent() {
        fs_err::create_dir_all(parent).map_err(anyhow::Error::from)?;
    }
    let text = serde_json::to_string_pretty(&pin).map_err(anyhow::Error::from)? + "\n";
    let staging = pin_path.with_extension(format!("json.{}", std::process::id()));
    fs_err::write(&staging, text).map_err(anyhow::Error::from)?;
    fs_err::rename(&staging, &pin_path).map_err(anyhow::Error::from)?;
    printer.data(&format!(
        "Claude Code {} → {} ({} {}), pinned in {}; bottles started from now on get it (to move the pin bot-bottle ships, copy that file to images/agent/claude.json)",
        before.claude,
        pin.claude,
        pin.package,
        pin.version,
        pin_path.display()
    ));
    Ok(0)
}
