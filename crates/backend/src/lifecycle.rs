//! What is the same for every backend, once: the shared validation of a
//! plan, and the launch around a backend's gates and agent — signals,
//! state writes, the CA, the guardian, the restart after a capability
//! block, the teardown — and the guardian's reaping after a crash.

use std::time::{Duration, Instant};

use bottle_contract::ca::mint_ca;
use bottle_manifest::plan::{AGENT_UID, Plan};
use tokio::signal::unix::{SignalKind, signal};

use crate::capability;
use crate::process::Launcher;
use crate::state::{BottleDir, Metadata};
use crate::{
    AgentRun, Backend, BackendError, Gates, GatesReady, Outcome, Reporter, Scope, Terminal,
};

/// The validation every backend gets before its own `prepare`.
pub fn validate(_plan: &Plan) -> Result<(), BackendError> {
    if nix::unistd::getuid().as_raw() == AGENT_UID {
        return Err(BackendError::AgentUidIsYours { uid: AGENT_UID });
    }
    Ok(())
}

/// Shared validation, then the backend's own resolution. Pure.
pub fn prepare<B: Backend>(backend: &B, plan: &Plan) -> Result<B::Prepared, BackendError> {
    validate(plan)?;
    backend.prepare(plan)
}

/// How `show_policy` names the image the agent runs.
fn image_description(plan: &Plan) -> String {
    plan.images.bottle.as_ref().map_or_else(
        || plan.images.agent.clone(),
        |own| capability::describe(own, &plan.images.agent),
    )
}

/// Creates the bottle, runs its command with the launcher's terminal or
/// pipes, and tears it down when the command exits or the launcher is
/// interrupted (SIGINT, SIGTERM, SIGHUP). `guardian` is the `bottle`
/// binary whose `reap` guards the bottle (`None` only in unit tests).
pub async fn launch<B: Backend>(
    backend: &B,
    plan: &Plan,
    prepared: B::Prepared,
    guardian: Option<&std::path::Path>,
    terminal: Terminal,
    reporter: &dyn Reporter,
) -> Result<Outcome, BackendError> {
    // Signals first: an interrupt at any point below still tears down.
    let mut signals = Interrupts::new()?;
    let dir = BottleDir::new(&plan.state_dir);
    dir.create()?;
    let _held = dir.hold(&plan.identity)?;
    // A restart note no launcher took (its launcher ended first) is
    // stale: this run starts on the image its plan names. So is a stop
    // request no launcher took.
    let _ = capability::take_restart(&dir);
    let _ = take_stop_request(&dir);
    // A bottle keeps its CA for life: resume reads the one it made.
    let ca = if dir.gate_dir().join("ca.key").is_file() {
        dir.read_ca()?
    } else {
        mint_ca(&plan.identity).map_err(|e| BackendError::Ca(e.to_string()))?
    };
    dir.write_ca(&ca, plan.egress.upstream_ca.as_deref())?;
    dir.write_git(&plan.git)?;
    if let Some(binary) = guardian {
        spawn_guardian(binary, backend.name(), &plan.identity, &dir)?;
    }
    let mut metadata = Metadata::starting(plan);
    metadata.write(&dir)?;

    let outcome = tokio::select! {
        result = drive(backend, plan, &prepared, &dir, terminal, reporter) => result.map(Outcome::Exited),
        signal = signals.recv() => Ok(Outcome::Interrupted(signal)),
    };
    if let Ok(Outcome::Interrupted(_)) = outcome {
        reporter.step("interrupted: stopping the agent, then tearing the bottle down");
        // SIGTERM to the shim, which passes it to the command: a chance
        // to save its work before the sandbox is removed.
        let _ = backend.stop_agent(&plan.identity, &dir).await;
    }
    let torn = Instant::now();
    let me = Launcher::current()?.to_string();
    // An approved image change keeps the bottle, even under --rm; so
    // does `bottle stop`, which stops a bottle for a later resume.
    let preserved = capability::is_preserved(&dir);
    let stopped_by = take_stop_request(&dir);
    let remove = plan.remove_on_exit && !preserved && stopped_by.is_none();
    // After a normal exit the bottle's network, an inert object whose
    // removal is slow, is left to the guardian. Interrupts and failures
    // tear everything down before returning.
    let scope = Scope {
        network: !matches!(outcome, Ok(Outcome::Exited(_))),
        data: remove,
        launcher: Some(&me),
    };
    let teardown = backend.teardown(&plan.identity, &dir, scope).await;
    reporter.detail(&format!("torn down in {} ms", torn.elapsed().as_millis()));
    let kept = if remove {
        dir.remove()
    } else {
        match &stopped_by {
            Some(by) => metadata.stop_for(preserved, by),
            None => metadata.stop(preserved),
        }
        metadata.write(&dir)
    };
    let outcome = outcome?;
    teardown?;
    kept?;
    Ok(outcome)
}

/// File in a bottle's directory: `bottle stop` asked its launcher to stop
/// the bottle and keep it for `resume` (under `--rm` too). It holds who
/// asked.
const STOP_REQUEST: &str = "stop-requested";

/// Asks the launcher of the bottle in `dir` to keep it when it stops:
/// written before the launcher is signalled. `by` is who asked.
pub fn request_stop(dir: &BottleDir, by: &str) -> Result<(), BackendError> {
    let path = dir.root.join(STOP_REQUEST);
    std::fs::write(&path, by).map_err(|source| BackendError::Io { path, source })
}

/// Who asked this bottle to stop, if someone did; the request is taken.
fn take_stop_request(dir: &BottleDir) -> Option<String> {
    let path = dir.root.join(STOP_REQUEST);
    let by = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    Some(by)
}

/// The gates and the agent side by side; the agent comes back on its new
/// image after each capability block.
async fn drive<B: Backend>(
    backend: &B,
    plan: &Plan,
    p: &B::Prepared,
    dir: &BottleDir,
    terminal: Terminal,
    reporter: &dyn Reporter,
) -> Result<i32, BackendError> {
    let started = Instant::now();
    let timing = |what: &str| {
        reporter.detail(&format!("{what} ({} ms)", started.elapsed().as_millis()));
    };
    let paths = backend.gate_paths();
    let gates = Gates {
        egress: crate::gate_config::egress(plan, &paths, image_description(plan)),
        git: crate::gate_config::git(plan, &paths),
        secrets: crate::secrets::resolve(plan)?,
    };
    let ready = GatesReady::default();
    let gate_run = backend.run_gates(p, gates, &ready, reporter);
    let agent_run = async {
        let agent = backend.ready_agent(p, reporter).await?;
        let provisioned = crate::provision::write_files(dir, &plan.provision)?;
        let mut own = plan.images.bottle.clone();
        let mut command = plan.command.clone();
        let mut first = true;
        loop {
            let run = AgentRun {
                own_image: own.as_ref(),
                command: &command,
                first,
                provisioned: &provisioned,
                gates_ready: &ready,
                timing: &timing,
                terminal,
            };
            let code = backend.run_agent(p, &agent, run, reporter).await?;
            first = false;
            // An approved image change stopped the agent: come back on the
            // new image, same identity, same data, same gates.
            let Some(restart) = capability::take_restart(dir)? else {
                return Ok(code);
            };
            reporter.step(&format!(
                "capability block (request {}): {} comes back on {} with /workspace and home kept",
                restart.request, plan.identity, restart.image.tag
            ));
            let change = capability::ImageChange {
                granted: restart.image.clone(),
                approved: Vec::new(),
            };
            backend.rebuild(plan, &change, reporter).await?;
            own = Some(restart.image);
            command = plan.resume_command.clone();
        }
    };
    tokio::pin!(agent_run);
    let control = dir.control_socket();
    let refresh = crate::secrets::refresh(plan, &control, reporter);
    tokio::select! {
        code = &mut agent_run => code,
        never = refresh => match never {},
        stopped = gate_run => {
            // The gate is gone: the bottle has no way out now; its
            // requests fail until the command ends.
            reporter.step(&stopped?);
            agent_run.await
        }
    }
}

/// The guardian's command line, `bottle reap …`: one typed value, parsed
/// by `bottle reap` and built by [`spawn_guardian`] with
/// [`ReapArgs::to_args`].
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ReapArgs {
    /// The bottle's identity.
    pub identity: String,
    /// Wait until this launcher (PID:START) is gone first.
    #[arg(long)]
    pub launcher: Option<Launcher>,
    /// The bottle's state directory.
    #[arg(long)]
    pub state: Option<std::path::PathBuf>,
    /// The backend the bottle runs on.
    #[arg(long, default_value = "docker")]
    pub backend: crate::BackendName,
}

impl ReapArgs {
    /// The arguments after `bottle reap`, which parse back to `self`.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![self.identity.clone().into()];
        if let Some(launcher) = &self.launcher {
            args.extend(["--launcher".into(), launcher.to_string().into()]);
        }
        if let Some(state) = &self.state {
            args.extend(["--state".into(), state.clone().into_os_string()]);
        }
        args.extend(["--backend".into(), self.backend.as_str().into()]);
        args
    }
}

/// Starts the bottle's guardian, `bottle reap`, detached in a session of
/// its own: it outlives the launcher however the launcher ends (even
/// `kill -9`), waits for it to be gone, and then removes whatever of the
/// bottle is left. After a normal exit that is only what is slow to
/// remove; after a crash it is everything the launcher would have
/// removed.
fn spawn_guardian(
    binary: &std::path::Path,
    backend: crate::BackendName,
    identity: &str,
    dir: &BottleDir,
) -> Result<(), BackendError> {
    use std::os::unix::process::CommandExt;
    let launcher = Launcher::current()?;
    let mut cmd = std::process::Command::new(binary);
    let args = ReapArgs {
        identity: identity.to_owned(),
        launcher: Some(launcher),
        state: Some(dir.root.clone()),
        backend,
    };
    cmd.arg("reap")
        .args(args.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // A process group of its own keeps the terminal's signals (Ctrl-C, a
    // hang-up of the launcher's group) away from it.
    cmd.process_group(0);
    cmd.spawn()?;
    Ok(())
}

/// What `bottle reap` does: waits until `launcher` is gone, then removes
/// what is left of `identity`, retrying for up to `patience` while the
/// backend still holds on to a part.
pub async fn reap<B: Backend>(
    backend: &B,
    identity: &str,
    launcher: Option<Launcher>,
    state_dir: Option<&std::path::Path>,
    patience: Duration,
) -> Result<(), BackendError> {
    if let Some(launcher) = launcher {
        while launcher.is_alive() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A launcher that finished its work marked the bottle stopped (or, with
    // --rm, removed its directory); one that crashed left it running.
    let dir = state_dir.map(BottleDir::new);
    let record = dir.as_ref().and_then(|d| Metadata::read(d).ok());
    if let (Some(record), Some(launcher)) = (&record, &launcher)
        && !record.is_held_by(launcher)
    {
        // Resumed since: leave the new run's parts alone.
        return Ok(());
    }
    // Crashed: the record still says running, under this guardian's
    // launcher.
    let crashed = record
        .as_ref()
        .is_some_and(|r| r.state == crate::state::BottleState::Running);
    let preserved = dir.as_ref().is_some_and(capability::is_preserved);
    let remove_all = record.as_ref().is_some_and(|r| r.plan.remove_on_exit) && !preserved;
    let mine = launcher.map(|l| l.to_string());
    let scope = Scope {
        network: true,
        data: crashed && remove_all,
        launcher: mine.as_deref(),
    };
    let fallback = BottleDir::new(std::path::PathBuf::new());
    let deadline = Instant::now() + patience;
    loop {
        match backend
            .teardown(identity, dir.as_ref().unwrap_or(&fallback), scope)
            .await
        {
            Ok(()) => break,
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if crashed && let (Some(dir), Some(mut record)) = (dir, record) {
        if remove_all {
            dir.remove()?;
        } else {
            record.stop_for(
                preserved,
                "guardian: the launcher ended without tearing down",
            );
            record.write(&dir)?;
        }
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP of the launcher, as one stream.
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Interrupts> {
        Ok(Interrupts {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Restart;
    use crate::fake::{Call, FakeBackend};
    use crate::state::BottleState;
    use bottle_manifest::provision::GrantedImage;

    const V1: &str = include_str!("../tests/fixtures/metadata-v1.json");

    struct Quiet;
    impl Reporter for Quiet {
        fn step(&self, _: &str) {}
        fn detail(&self, _: &str) {}
    }

    fn plan(root: &std::path::Path, rm: bool) -> Plan {
        let mut plan = Metadata::parse(V1.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
            .plan;
        plan.state_dir = root.join(&plan.identity);
        plan.remove_on_exit = rm;
        plan.command = vec!["work".into()];
        plan.resume_command = vec!["work".into(), "--continue".into()];
        plan
    }

    /// `launch` of `plan` on `fake`, on the launcher's terminal, waited for.
    fn launch_fake(
        fake: &FakeBackend,
        plan: &Plan,
        prepared: Plan,
    ) -> Result<Outcome, BackendError> {
        block_on(launch(
            fake,
            plan,
            prepared,
            None,
            Terminal::Launcher,
            &Quiet,
        ))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(f)
    }

    #[test]
    fn a_launch_runs_gates_and_agent_then_tears_down_and_records_the_stop() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plan = plan(root.path(), false);
        let fake = FakeBackend::new(crate::BackendName::Native);
        fake.script.lock().unwrap_or_else(|e| e.into_inner()).runs = vec![(3, None)];
        let prepared = prepare(&fake, &plan).unwrap_or_else(|e| panic!("{e}"));
        let outcome = launch_fake(&fake, &plan, prepared).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome, Outcome::Exited(3));
        let calls = fake.calls();
        assert_eq!(calls[0], Call::Prepare(plan.identity.clone()));
        assert!(calls.contains(&Call::RunGates {
            egress_identity: plan.identity.clone(),
            git: false,
            secrets: 0
        }));
        assert!(calls.contains(&Call::RunAgent {
            command: vec!["work".into()],
            first: true,
            own_image: None
        }));
        // After a normal exit the slow parts are the guardian's; the data
        // stays for resume.
        assert_eq!(
            calls.last(),
            Some(&Call::Teardown {
                identity: plan.identity.clone(),
                network: false,
                data: false,
                launcher: true
            })
        );
        let dir = BottleDir::new(&plan.state_dir);
        let meta = Metadata::read(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.state, BottleState::Stopped);
        assert_eq!(meta.backend, plan.backend);
        assert!(dir.ca_cert().is_file(), "the CA is written first");
    }

    #[test]
    fn a_bottle_another_launcher_holds_is_not_launched_twice() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plan = plan(root.path(), false);
        let dir = BottleDir::new(&plan.state_dir);
        dir.create().unwrap_or_else(|e| panic!("{e}"));
        // The other launcher's hold: another open file description.
        let held = dir.hold(&plan.identity).unwrap_or_else(|e| panic!("{e}"));
        let fake = FakeBackend::new(crate::BackendName::Native);
        let prepared = prepare(&fake, &plan).unwrap_or_else(|e| panic!("{e}"));
        let outcome = launch_fake(&fake, &plan, prepared);
        assert!(
            matches!(outcome, Err(BackendError::Held { .. })),
            "{outcome:?}"
        );
        assert!(
            !fake
                .calls()
                .iter()
                .any(|c| matches!(c, Call::RunGates { .. })),
            "nothing of the bottle started"
        );
        drop(held);
        let prepared = prepare(&fake, &plan).unwrap_or_else(|e| panic!("{e}"));
        launch_fake(&fake, &plan, prepared).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_capability_block_brings_the_agent_back_on_its_new_image() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plan = plan(root.path(), true);
        let fake = FakeBackend::new(crate::BackendName::Docker);
        let image = GrantedImage {
            tag: "bot-bottle/bottle-x:latest".into(),
            fragments: vec!["RUN true".into()],
            requests: vec!["r-aaaaaa".into()],
        };
        fake.script.lock().unwrap_or_else(|e| e.into_inner()).runs = vec![
            (
                0,
                Some(Restart {
                    request: "r-aaaaaa".into(),
                    image: image.clone(),
                }),
            ),
            (7, None),
        ];
        let dir = BottleDir::new(&plan.state_dir);
        dir.create().unwrap_or_else(|e| panic!("{e}"));
        crate::capability::mark_preserved(&dir).unwrap_or_else(|e| panic!("{e}"));
        let prepared = prepare(&fake, &plan).unwrap_or_else(|e| panic!("{e}"));
        let outcome = launch_fake(&fake, &plan, prepared).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome, Outcome::Exited(7));
        let calls = fake.calls();
        let runs: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::RunAgent { .. } | Call::Rebuild(_)))
            .collect();
        assert_eq!(
            runs,
            [
                &Call::RunAgent {
                    command: vec!["work".into()],
                    first: true,
                    own_image: None
                },
                &Call::Rebuild(image.tag.clone()),
                &Call::RunAgent {
                    command: vec!["work".into(), "--continue".into()],
                    first: false,
                    own_image: Some(image.tag.clone())
                },
            ]
        );
        // Preserved: kept even under --rm.
        let meta =
            Metadata::read(&BottleDir::new(&plan.state_dir)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.state, BottleState::Preserved);
    }

    #[test]
    fn the_guardians_command_line_parses_back() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Wrap {
            #[command(flatten)]
            args: ReapArgs,
        }
        let args = ReapArgs {
            identity: "probe-abc123".into(),
            launcher: Some(Launcher { pid: 42, start: 7 }),
            state: Some("/state/with space/probe-abc123".into()),
            backend: crate::BackendName::Native,
        };
        let argv = std::iter::once("reap".into()).chain(args.to_args());
        let parsed = Wrap::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .args;
        assert_eq!(parsed, args);
    }

    #[test]
    fn the_guardian_reaps_a_crashed_bottle_and_leaves_a_resumed_one_alone() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plan = plan(root.path(), false);
        let dir = BottleDir::new(&plan.state_dir);
        dir.create().unwrap_or_else(|e| panic!("{e}"));
        // A launcher that is gone (no process has this start time).
        let gone = Launcher {
            pid: std::process::id(),
            start: 1,
        };
        let mut meta = Metadata::starting(&plan);
        meta.launcher = gone.to_string();
        meta.write(&dir).unwrap_or_else(|e| panic!("{e}"));
        let fake = FakeBackend::new(crate::BackendName::Native);
        block_on(reap(
            &fake,
            &plan.identity,
            Some(gone),
            Some(&dir.root),
            Duration::from_secs(1),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fake.calls(),
            [Call::Teardown {
                identity: plan.identity.clone(),
                network: true,
                data: false,
                launcher: true
            }]
        );
        let after = Metadata::read(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(after.state, BottleState::Stopped);
        assert!(after.stopped_by.is_some_and(|s| s.contains("guardian")));

        // Resumed since by another launcher: not the guardian's to touch.
        let resumed = FakeBackend::new(crate::BackendName::Native);
        let mut meta = Metadata::starting(&plan);
        meta.launcher = Launcher { pid: 1, start: 2 }.to_string();
        meta.write(&dir).unwrap_or_else(|e| panic!("{e}"));
        block_on(reap(
            &resumed,
            &plan.identity,
            Some(gone),
            Some(&dir.root),
            Duration::from_secs(1),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resumed.calls(), Vec::<Call>::new());
        assert_eq!(
            Metadata::read(&dir).map(|m| m.state),
            Ok(BottleState::Running)
        );
    }
}
