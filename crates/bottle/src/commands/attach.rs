//! `bottle attach IDENTITY`: this terminal on a running bottle's agent,
//! through its backend's attach command (`docker attach`, or the native
//! launcher's terminal socket). Ctrl-P Ctrl-Q detaches; the agent runs on.

use std::os::unix::process::CommandExt;

use anyhow::anyhow;
use bottle_backend::Backend;
use bottle_backend::registry::AnyBackend;

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
    // Becomes the attach command: its exit is this one's.
    let error = std::process::Command::new(program).args(args).exec();
    Err(Failure::new(
        exit::SOFTWARE,
        anyhow!("running {program}: {error}"),
    ))
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
