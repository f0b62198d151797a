//! `start -d` and `resume -d`: the bottle gets a launcher of its own in
//! the background. This process confirms the plan, spawns that launcher
//! (the same command line with `--detached-launcher`, and for a start the
//! identity it minted), shows its progress, and returns once the agent
//! runs. The launcher's output goes to `launcher.log` in the bottle's
//! state directory; it is in a process group of its own, so the
//! terminal's Ctrl-C and hang-up do not reach it.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::anyhow;
use bottle_backend::registry::AnyBackend;
use bottle_backend::state::BottleDir;
use bottle_backend::{Backend, Role};
use bottle_manifest::plan::Plan;

use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, exit};

/// The background launcher's log, in the bottle's state directory.
pub const LOG: &str = "launcher.log";

/// Spawns the background launcher of `plan` and waits until its agent
/// runs (or the launcher ends first, which is reported with its log).
pub fn spawn(
    plan: &Plan,
    backend: &AnyBackend,
    runtime: &tokio::runtime::Runtime,
    me: &Path,
    printer: &Printer,
) -> Result<i32, Failure> {
    let dir = BottleDir::new(&plan.state_dir);
    dir.create()?;
    let log_path = dir.root.join(LOG);
    let io =
        |e: std::io::Error| Failure::new(exit::SOFTWARE, anyhow!("{}: {e}", log_path.display()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(io)?;
    let mut shown = log.metadata().map_err(io)?.len();
    let mut child = Command::new(me)
        .args(child_args(std::env::args_os().collect(), &plan.identity)?)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io)?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| Failure::new(exit::SOFTWARE, anyhow!("cannot start the launcher: {e}")))?;
    let identity = &plan.identity;
    let state_root = plan.state_dir.parent().unwrap_or(&plan.state_dir);
    loop {
        shown = show_log(&log_path, shown, printer);
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Failure::new(exit::SOFTWARE, e))?
        {
            show_log(&log_path, shown, printer);
            let code = status.code().unwrap_or(exit::SOFTWARE);
            if code == 0 {
                printer.step(&format!(
                    "{identity}'s command ended already (exit 0) before it could be attached"
                ));
                return Ok(0);
            }
            return Err(Failure::new(
                code,
                anyhow!(
                    "{identity}'s background launcher ended with exit {code} (its output is above, and in {})",
                    log_path.display()
                ),
            ));
        }
        let found = runtime.block_on(backend.enumerate(state_root));
        if found.is_ok_and(|f| f.get(identity).is_some_and(|b| b.running(Role::Agent))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    show_log(&log_path, shown, printer);
    printer.step(&format!(
        "{identity} runs detached: `bottle attach {identity}` reaches its agent (Ctrl-P Ctrl-Q detaches again), `bottle stop {identity}` stops it; its launcher logs to {}",
        log_path.display()
    ));
    Ok(0)
}

/// Prints what the launcher logged after byte `from`; returns where the
/// log ends now.
fn show_log(path: &Path, from: u64, printer: &Printer) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return from;
    };
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut text).is_err() {
        return from;
    }
    // Whole lines only; the rest comes with the next look.
    let Some(end) = text.iter().rposition(|b| *b == b'\n').map(|i| i + 1) else {
        return from;
    };
    printer.raw(&String::from_utf8_lossy(&text[..end]));
    from + end as u64
}

/// This process's command line for the background launcher: the same
/// subcommand and arguments, with `--detached-launcher` (and, for a start,
/// the identity this process minted) right after the subcommand.
fn child_args(mut argv: Vec<OsString>, identity: &str) -> Result<Vec<OsString>, Failure> {
    // Global flags before the subcommand take no values, so the first
    // `start` or `resume` is the subcommand.
    let at = argv
        .iter()
        .skip(1)
        .position(|a| a == "start" || a == "resume")
        .map(|i| i + 1)
        .ok_or_else(|| {
            Failure::new(
                exit::SOFTWARE,
                anyhow!("cannot find the subcommand in this command line"),
            )
        })?;
    let mut inserted: Vec<OsString> = vec!["--detached-launcher".into()];
    if argv[at] == "start" {
        inserted.extend(["--identity".into(), identity.into()]);
    }
    argv.splice(at + 1..at + 1, inserted);
    Ok(argv.split_off(1))
}

/// A start given an identity (by the start that spawned it) must name a
/// new bottle of its agent: a command line cannot take over another.
pub fn check_identity(identity: &str, agent: &str, global: &Global) -> Result<(), Failure> {
    let shaped = identity
        .strip_prefix(agent)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|suffix| {
            !suffix.is_empty()
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let taken = BottleDir::new(global.state_root.join(identity))
        .metadata()
        .exists();
    if !shaped || taken {
        return Err(Failure::new(
            exit::USAGE,
            anyhow!("--identity {identity:?} does not name a new bottle of agent {agent}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_launchers_command_line_is_this_one_marked() {
        let start = child_args(
            args(&["bottle", "-v", "start", "demo", "-d", "--", "start"]),
            "demo-abc123",
        );
        assert_eq!(
            start.unwrap_or_else(|e| panic!("{}", e.error)),
            args(&[
                "-v",
                "start",
                "--detached-launcher",
                "--identity",
                "demo-abc123",
                "demo",
                "-d",
                "--",
                "start"
            ])
        );
        let resume = child_args(
            args(&["bottle", "resume", "demo-abc123", "-d"]),
            "demo-abc123",
        );
        assert_eq!(
            resume.unwrap_or_else(|e| panic!("{}", e.error)),
            args(&["resume", "--detached-launcher", "demo-abc123", "-d"])
        );
    }
}
