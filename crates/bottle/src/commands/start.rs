//! `bottle start AGENT`: plan, confirm, launch, tear down (here, or in a
//! launcher of its own in the background with `-d`).

use std::io::{BufRead, IsTerminal};

use anyhow::anyhow;
use bottle_backend::registry::{self, AnyBackend, Choice};
use bottle_backend::{Backend, lifecycle};
use bottle_manifest::load;
use bottle_manifest::plan::{self, Plan, PlanInput};

use crate::cli::{Format, StartArgs};
use crate::printer::Printer;
use crate::settings::{Global, Start};
use crate::{Failure, exit};

mod detached;

pub fn run(args: StartArgs, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    if let Some(identity) = &args.identity {
        detached::check_identity(identity, &args.agent, &global)?;
    }
    let settings = Start::resolve(args.backend, &global)?;
    let choice = super::runtime()?.block_on(registry::choose(&settings.wanted, &settings.backends));
    let path = global.manifest_lookup(&args.manifest).resolve()?;
    let manifest = load::load(&path)?;
    let checked = super::manifest::check(&manifest, &path, &global)?;
    // Remote Control's account, read on the host: ids, no token.
    let account = args
        .remote_control
        .then(|| global.claude_account())
        .transpose()
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    let plan = plan::plan(PlanInput {
        manifest_path: &path,
        manifest: &manifest,
        checked: &checked,
        agent: &args.agent,
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        backend: choice.name.as_str(),
        backend_reason: &choice.why,
        base_image: &settings.base_image,
        remove_on_exit: args.rm,
        cwd: args.cwd.then_some(global.cwd.as_path()),
        include: &args.include,
        identity: args.identity.clone(),
        state_root: &global.state_root,
        host_env: &|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
        home: &global.home,
        grants: &Default::default(),
        continue_conversation: false,
        remote_control: account.as_ref(),
    })?;
    let mut plan = plan;
    if !args.include.is_empty() && !args.cwd {
        return Err(Failure::new(
            exit::USAGE,
            anyhow!("--include names files of the copy --cwd makes: pass --cwd too"),
        ));
    }
    if let Some(workspace) = plan.workspace.as_mut() {
        // What the copy leaves out and rewrites, for the preflight.
        bottle_backend::workspace::survey(workspace).map_err(|e| {
            Failure::new(
                exit::CONFIG,
                anyhow!(
                    "cannot survey {} for --cwd: {e}",
                    workspace.source.display()
                ),
            )
        })?;
    }
    launch(
        &plan,
        &settings,
        &choice,
        args.dry_run.then_some(args.format),
        args.yes,
        Detach::from(&args.detach),
        printer,
    )
}

/// Whether a start or resume takes the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// The launcher runs here, the agent on this terminal.
    No,
    /// `-d`: confirm here, then hand the bottle to a launcher of its own
    /// in the background and return once its agent runs.
    Spawn,
    /// This process is that background launcher.
    Launcher,
}

impl From<&crate::cli::DetachArgs> for Detach {
    fn from(args: &crate::cli::DetachArgs) -> Detach {
        if args.detached_launcher {
            Detach::Launcher
        } else if args.detach {
            Detach::Spawn
        } else {
            Detach::No
        }
    }
}

/// Prepares `plan`, prints it (`dry_run`) or confirms it (unless `yes`),
/// and runs the bottle on the chosen backend. Shared by `start` and
/// `resume`.
pub fn launch(
    plan: &Plan,
    settings: &Start,
    choice: &Choice,
    dry_run: Option<Format>,
    yes: bool,
    detach: Detach,
    printer: &Printer,
) -> Result<i32, Failure> {
    let backend = AnyBackend::new(choice.name, &settings.backends);
    let prepared = lifecycle::prepare(&backend, plan)?;

    if let Some(format) = dry_run {
        print_plan(plan, format, printer)?;
        return Ok(0);
    }
    let runtime = super::runtime()?;
    // The background launcher was confirmed by the start that spawned it.
    let yes = yes || detach == Detach::Launcher;
    if !yes {
        confirm(plan, &backend, &runtime, printer)?;
    } else {
        printer.step(&format!(
            "starting {} (agent {}, bottle {}, backend {})",
            plan.identity, plan.agent, plan.bottle, choice.name
        ));
    }
    let me = std::env::current_exe().map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    if detach == Detach::Spawn {
        return detached::spawn(plan, &backend, &runtime, &me, printer);
    }
    let terminal = match detach {
        Detach::Launcher => bottle_backend::Terminal::Detached,
        _ => bottle_backend::Terminal::Launcher,
    };
    let outcome = runtime.block_on(lifecycle::launch(
        &backend,
        plan,
        prepared,
        Some(&me),
        terminal,
        printer,
    ));
    // A read of our stdin may still be blocked in a runtime thread; it
    // must not keep the launcher from exiting.
    runtime.shutdown_background();
    let outcome = outcome?;
    if let bottle_backend::Outcome::Interrupted(_) = outcome {
        printer.step(&format!("{} torn down", plan.identity));
    }
    Ok(outcome.exit_code())
}

fn print_plan(plan: &Plan, format: Format, printer: &Printer) -> Result<(), Failure> {
    match format {
        Format::Json => {
            let json = serde_json::to_string_pretty(plan).map_err(anyhow::Error::from)?;
            printer.data(&json);
        }
        Format::Text => printer.data(&plan.render_text()),
    }
    Ok(())
}

/// The y/N preflight. Only a person at a terminal can answer it.
fn confirm(
    plan: &Plan,
    backend: &AnyBackend,
    runtime: &tokio::runtime::Runtime,
    printer: &Printer,
) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            exit::NOT_CONFIRMED,
            anyhow!(
                "not started: stdin is not a terminal, so nobody can confirm the plan; pass -y to start without confirmation (see the plan with --dry-run)"
            ),
        ));
    }
    printer.raw(&format!("bot-bottle will start:\n{}", plan.render_text()));
    // The backend decides what `auto` means and how the agent is held;
    // ask it, so the person knows.
    if let Ok(runtime) = runtime.block_on(backend.describe_runtime(plan)) {
        printer.raw(&format!("  {:<13}{runtime}\n", "agent runs"));
    }
    printer.raw("Start this bottle? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Failure::new(
            exit::NOT_CONFIRMED,
            anyhow!("not started: not confirmed"),
        ))
    }
}
