//! `bottle stop IDENTITY`: a running bottle stops and is kept for `bottle
//! resume` (its workspace, home, CA and approvals), whether its launcher
//! runs in a terminal or detached, and under `--rm` too. The launcher is
//! asked as an interrupt asks it: the agent gets SIGTERM (a chance to save
//! its work), then the bottle's processes are removed.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use bottle_backend::lifecycle;

use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, exit};

/// How long the launcher may take to tear its bottle down.
const STOP_WAIT: Duration = Duration::from_secs(60);

pub fn run(identity: &str, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let record = super::bottle_record(&global, identity)?;
    let launcher = record
        .metadata
        .as_ref()
        .ok()
        .filter(|_| record.is_live())
        .and_then(|m| m.launcher());
    let Some(launcher) = launcher else {
        return Err(Failure::new(
            exit::CONFIG,
            anyhow!(
                "{identity} is not running (`bottle list` shows its state): nothing to stop; `bottle resume {identity}` starts it again"
            ),
        ));
    };
    lifecycle::request_stop(
        &record.dir,
        &format!("bottle stop ({})", bottle_decide::decider()),
    )?;
    // Checked again just before the signal: a pid is signalled only while
    // it is still this bottle's launcher.
    let pid = nix::unistd::Pid::from_raw(launcher.pid as i32);
    if launcher.is_alive() {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| {
            Failure::new(
                exit::SOFTWARE,
                anyhow!(
                    "cannot signal {identity}'s launcher (pid {}): {e}",
                    launcher.pid
                ),
            )
        })?;
    }
    printer.step(&format!(
        "stopping {identity}: its agent gets SIGTERM, then the bottle is taken down and kept"
    ));
    let deadline = Instant::now() + STOP_WAIT;
    while launcher.is_alive() {
        if Instant::now() > deadline {
            return Err(Failure::new(
                exit::SOFTWARE,
                anyhow!(
                    "{identity}'s launcher (pid {}) did not stop within {} s; it is still tearing down or stuck: `bottle list` shows it",
                    launcher.pid,
                    STOP_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    printer.step(&format!(
        "{identity} stopped; `bottle resume {identity}` starts it again"
    ));
    Ok(0)
}
