//! `bottle attach IDENTITY`: this terminal on a running bottle's agent,
//! through its backend's attach command (`docker attach`, or the native
//! launcher's terminal socket). Ctrl-P Ctrl-Q detaches (exit 0 on every
//! backend); the agent runs on. Ctrl-C goes to the agent.

use anyhow::anyhow;
use bottle_backend::registry::AnyBackend;
use bottle_backend::{Backend, Role};

use crate::settings::{Global, Start};
use crate::{Failure, exit};

pub fn run(identity: &str) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let record = super::bottle_record(&global, identity)?;
    if !record.is_live() {
        return Err(Failure::new(
            exit::CONFIG,
            anyhow!("{identity} is not running: `bottle resume {identity}` starts it again"),
        ));
    }
    let backend = super::recorded_backend(&record)?;
    let settings = Start::resolve(None, &global)?;
    let argv = AnyBackend::new(backend, &settings.backends).attach_argv(identity, &record.dir)?;
    let Some((program, args)) = argv.split_first() else {
        return Err(Failure::new(
            exit::SOFTWARE,
            anyhow!("an empty attach command"),
        ));
    };
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|e| Failure::new(exit::SOFTWARE, anyhow!("running {program}: {e}")))?;
    if status.success() {
        return Ok(0);
    }
    // `docker attach` ends with 1 when it is detached: a detach is told
    // apart by the agent that still runs, and ends this command with 0
    // on every backend.
    let runtime = super::runtime()?;
    let found = runtime
        .block_on(AnyBackend::new(backend, &settings.backends).enumerate(&global.state_root));
    if found.is_ok_and(|f| f.get(identity).is_some_and(|b| b.running(Role::Agent))) {
        eprintln!("\r\nbot-bottle: detached; the agent runs on");
        return Ok(0);
    }
    Ok(status.code().unwrap_or(exit::SOFTWARE))
}

/// `bottle native-attach SOCKET`.
pub fn native(args: &bottle_backend::native::attach::AttachArgs) -> Result<i32, Failure> {
    use bottle_backend::native::attach::Ended;
    let ended = bottle_backend::native::attach::attach(args)
        .map_err(|e| Failure::new(exit::CONFIG, anyhow!("{e}")))?;
    match ended {
        Ended::Detached => {
            eprintln!("\r\nbot-bottle: detached; the agent runs on");
            Ok(0)
        }
        Ended::Closed => {
            eprintln!("\r\nbot-bottle: the agent's terminal closed");
            Ok(0)
        }
        Ended::Lost(why) => Err(Failure::new(
            exit::SOFTWARE,
            anyhow!("{why}; the agent may still run: `bottle attach` again"),
        )),
    }
}
