//! `bottle`: parse, resolve settings, call a library, print.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod env;
mod exit;
mod printer;
mod settings;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::printer::Printer;

/// A failure and the exit code it maps to.
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: i32, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code,
            error: error.into(),
        }
    }
}

impl From<bottle_manifest::ManifestError> for Failure {
    fn from(err: bottle_manifest::ManifestError) -> Failure {
        Failure::new(exit::CONFIG, err)
    }
}

impl From<bottle_backend::BackendError> for Failure {
    fn from(err: bottle_backend::BackendError) -> Failure {
        let code = match err.kind() {
            bottle_backend::ErrorKind::Unavailable => exit::UNAVAILABLE,
            bottle_backend::ErrorKind::Config => exit::CONFIG,
            bottle_backend::ErrorKind::Software => exit::SOFTWARE,
        };
        Failure::new(code, err)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Failure {
        Failure::new(exit::SOFTWARE, err)
    }
}

fn main() {
    // Whatever started this process may have left descriptors open past
    // the standard streams (a socket, a directory): none of them is
    // bot-bottle's to pass on, so none reaches a gate, a sandbox or an
    // agent's command. Done before any thread exists, once the command
    // line is parsed (which starts none and opens none): the native
    // sandbox's helper passes on the filters it was handed.
    let cli = Cli::parse();
    let keep: &[i32] = match &cli.command {
        Command::NativeSandbox(args) => &args.keep_fds,
        _ => &[],
    };
    close_fds::set_fds_cloexec_threadsafe(3, keep);
    // Nor is a signal mask: a parent that blocked SIGTERM (the dashboard
    // does, to restore its terminal) must not leave a launcher deaf to
    // `bottle stop`, or an agent to its own signals.
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    let printer = Printer::new(cli.verbose);
    let result = match cli.command {
        Command::Start(args) => commands::start::run(args, &printer),
        Command::Manifest(cmd) => commands::manifest::run(cmd, &printer),
        Command::Resume(args) => commands::resume::run(args, &printer),
        Command::List { which, format } => commands::list::run(which.is_some(), format, &printer),
        Command::Cleanup { dry_run, yes } => commands::cleanup::cleanup(dry_run, yes, &printer),
        Command::Rm { identity, yes } => commands::cleanup::rm(&identity, yes, &printer),
        Command::Stop { identity } => commands::stop::run(&identity, &printer),
        Command::Dashboard => commands::dashboard::run(),
        Command::Requests {
            identity,
            all,
            format,
        } => commands::requests::run(identity.as_deref(), all, format, &printer),
        Command::Approve {
            id,
            token_ref,
            scheme,
            note,
        } => commands::approve::run(
            &id,
            token_ref.as_deref(),
            &scheme,
            note.as_deref(),
            &printer,
        ),
        Command::Deny { id, reason } => commands::approve::deny(&id, reason.as_deref(), &printer),
        Command::Gate(args) => commands::gate::run(args),
        Command::Shim(args) => commands::shim::run(args),
        Command::Reap(args) => commands::reap::run(args),
        Command::NativeSandbox(args) => commands::shim::native_sandbox(&args),
        Command::Attach { identity } => commands::attach::run(&identity),
        Command::NativeAttach(args) => commands::attach::native(&args),
        Command::UpdateAgent {
            fetch,
            version,
            reset,
        } => commands::update_agent::run(
            commands::update_agent::Wanted {
                fetch,
                reset,
                version,
            },
            &printer,
        ),
        Command::Doctor { format } => commands::doctor::run(format, &printer),
        Command::GitHook { name } => commands::gate::hook(&name),
        Command::PrepareTrust => commands::shim::prepare_trust(),
        Command::BuildHelper { action, args } => commands::shim::build_helper(&action, &args),
        Command::Health(args) => commands::health::run(args),
    };
    let code = match result {
        Ok(code) => code,
        Err(failure) => {
            printer.error(&format!("{:#}", failure.error));
            failure.code
        }
    };
    std::process::exit(code);
}
