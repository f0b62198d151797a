//! `bottle shim`: pid 1 inside the agent's sandbox.
//!
//! The sandbox has no network interface but loopback. The shim listens on
//! loopback ports and forwards each connection to a gate socket in the
//! directory shared with the gate, so the agent's tools can use ordinary
//! TCP (`HTTP_PROXY=http://127.0.0.1:3128`). As pid 1 it also starts the
//! agent's command, passes signals on to it, reaps every orphan, and exits
//! with the command's status.
//!
//! When a gate socket cannot be reached the connection is closed at once:
//! there is no fallback route, so a dead gate means failed requests.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::net::{TcpListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

mod args;
pub mod confine;
mod merge;
mod relay;
pub mod trust;

/// Exit status when the shim itself fails (sysexits' EX_SOFTWARE).
pub const EXIT_SHIM_FAILED: i32 = 70;

pub use args::{Forward, Landlock, MergeJson, ShimArgs, User};

/// What the shim runs.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    pub forwards: Vec<Forward>,
    /// The bottle's CA, to add to the system trust stores before the
    /// command starts (needs the shim to start as root).
    pub ca: Option<PathBuf>,
    /// uid and gid the command runs as; the shim drops to them (and loses
    /// every capability) before starting it.
    pub user: Option<(u32, u32)>,
    /// How long to wait for the gate's sockets before giving up.
    pub gate_timeout: Duration,
    /// RLIMIT_NPROC for the command's user, when the sandbox counts its
    /// processes on its own (a kernel of its own, as under gVisor).
    pub nproc: Option<u64>,
    /// RLIMIT_DATA for the command (its writable private memory, per
    /// process), where no memory cgroup bounds the sandbox.
    pub data_limit: Option<u64>,
    /// RLIMIT_NOFILE for the command, where the runtime does not set it.
    pub nofile: Option<u64>,
    /// Confine the command with Landlock: the filesystem rules of
    /// [`confine`].
    pub landlock: Option<Landlock>,
    /// Files of the agent's home that get keys of the bottle's, merged in
    /// as the command's user before it starts.
    pub merge_json: Vec<MergeJson>,
    pub command: Vec<String>,
}

/// Errors that keep the shim from starting the command.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error(
        "the gate did not come up within {0:?} (socket {1} is missing): the bottle has no way out, so the command was not started"
    )]
    GateMissing(Duration, PathBuf),
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot confine the command with Landlock: {0}")]
    Landlock(String),
    #[error("cannot prepare {0}")]
    Merge(String),
    #[error("no command to run")]
    NoCommand,
    #[error("cannot install the bottle's CA: {0}")]
    Ca(std::io::Error),
    #[error("cannot drop to uid {uid} gid {gid}: {source}")]
    Drop {
        uid: u32,
        gid: u32,
        source: nix::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ShimArgs> for ShimConfig {
    fn from(a: ShimArgs) -> ShimConfig {
        ShimConfig {
            forwards: a.forwards,
            ca: a.ca,
            user: a.user.map(|u| (u.uid, u.gid)),
            gate_timeout: Duration::from_millis(a.gate_timeout_ms),
            nproc: a.nproc,
            data_limit: a.data_limit,
            nofile: a.nofile,
            landlock: a.landlock,
            merge_json: a.merge_json,
            command: a.command,
        }
    }
}

/// Runs the shim; returns the exit status for the process.
pub fn run(config: ShimConfig) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bottle shim: cannot start: {err}");
            return EXIT_SHIM_FAILED;
        }
    };
    match runtime.block_on(supervise(config)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bottle shim: {err}");
            match err {
                ShimError::Spawn { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    127
                }
                ShimError::Spawn { .. } => 126,
                _ => EXIT_SHIM_FAILED,
            }
        }
    }
}

/// Signals passed on to the command's process group.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Of [`FORWARDED`], those that ask the command to end.
const STOPS: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Job-control signals the launching environment may have left ignored
/// (a tmux pane and many shells ignore SIGTTIN and SIGTTOU). An ignored
/// signal stays ignored across exec; a handled one starts at its default.
/// The shim handles these (and [`FORWARDED`]) so the command starts with
/// the dispositions of a fresh terminal: a command that reads the
/// terminal before it owns it is stopped and then continued, where with
/// SIGTTIN ignored its read would fail with EIO.
const DEFAULTED: &[Signal] = &[Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];

async fn supervise(config: ShimConfig) -> Result<i32, ShimError> {
    let (program, args) = config.command.split_first().ok_or(ShimError::NoCommand)?;
    // Handlers first, so no signal or child exit is missed: as pid 1 the
    // shim drops a signal it has no handler for, so a stop sent while it
    // still sets up (a launcher interrupted at once) would be lost.
    let mut child_exits = signal(SignalKind::child())?;
    // The handler stays installed when its stream is dropped; what
    // arrives is dropped with it.
    for &sig in DEFAULTED {
        drop(signal(SignalKind::from_raw(sig as i32))?);
    }
    let (sig_tx, mut sig_rx) = tokio::sync::mpsc::unbounded_channel();
    for &sig in FORWARDED {
        let mut stream = signal(SignalKind::from_raw(sig as i32))?;
        let tx = sig_tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }

    if let Some(ca) = &config.ca {
        trust::install(ca, config.user).map_err(ShimError::Ca)?;
    }
    if let Some(limit) = config.nproc {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, limit, limit)
            .map_err(|e| ShimError::Io(std::io::Error::from(e)))?;
    }
    // No core dumps: a crash of the agent's must not run the host's
    // core-dump helper (a `core_pattern` pipe runs outside the sandbox).
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| ShimError::Io(std::io::Error::from(e)))?;
    if let Some(limit) = config.nofile {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
            .map_err(|e| ShimError::Io(std::io::Error::from(e)))?;
    }
    if let Some(limit) = config.data_limit {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, limit, limit)
            .map_err(|e| ShimError::Io(std::io::Error::from(e)))?;
    }
    // A sandbox started in a session of its own (the native backend) gets
    // its terminal as the controlling one here, so the command's job
    // control and Ctrl-C work as on any terminal.
    if std::io::stdin().is_terminal() {
        let _ = rustix::process::ioctl_tiocsctty(std::io::stdin());
    }
    if let Some(need) = config.landlock {
        let status = confine::landlock().map_err(ShimError::Landlock)?;
        if need == Landlock::Required && status.ruleset == landlock::RulesetStatus::NotEnforced {
            return Err(ShimError::Landlock(
                "this kernel enforces no Landlock, which this sandbox requires (its agent is root outside its namespaces): start bottles as an ordinary user, or use the docker backend".to_owned(),
            ));
        }
    }
    if let Some((uid, gid)) = config.user {
        drop_privileges(uid, gid)?;
    }
    // As the command's user, confined as it will be: a file of the home
    // it made a link elsewhere reaches only what it could write itself.
    for m in &config.merge_json {
        merge::merge_into(&m.source, &m.dest).map_err(ShimError::Merge)?;
    }

    for forward in &config.forwards {
        let listener = TcpListener::bind(("127.0.0.1", forward.port))
            .await
            .map_err(|source| ShimError::Listen {
                port: forward.port,
                source,
            })?;
        tokio::spawn(bridge(listener, forward.socket.clone()));
    }
    wait_for_gate(&config).await?;

    // A stop that came while the shim set up and has reached the channel:
    // the command never starts. (One still on its way is passed on to the
    // command once it runs, as any later one.)
    tokio::task::yield_now().await;
    let mut early = Vec::new();
    while let Ok(sig) = sig_rx.try_recv() {
        if STOPS.contains(&sig) {
            return Ok(128 + sig as i32);
        }
        early.push(sig);
    }
    let interactive = std::io::stdin().is_terminal();
    let child = Command::new(program)
        .args(args)
        // Its own process group: signals go to the whole pipeline, and a
        // terminal's Ctrl-C reaches the command, not the shim.
        .process_group(0)
        .spawn()
        .map_err(|source| ShimError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = Pid::from_raw(child.id() as i32);
    if interactive {
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), pid);
        // A command that read from the terminal before it was made the
        // foreground group was stopped (SIGTTIN) and would stay stopped:
        // it goes on now, and its read finds the terminal its own.
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGCONT);
    }
    for sig in early {
        let _ = kill(Pid::from_raw(-pid.as_raw()), sig);
    }

    loop {
        if let Some(code) = reap(pid) {
            return Ok(code);
        }
        tokio::select! {
            _ = child_exits.recv() => {}
            Some(sig) = sig_rx.recv() => {
                let _ = kill(Pid::from_raw(-pid.as_raw()), sig);
            }
        }
    }
}

/// Parses `UID:GID`.
pub fn parse_user(spec: &str) -> Option<(u32, u32)> {
    let (uid, gid) = spec.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

/// Becomes `uid:gid` for good: supplementary groups, gid, then uid. From
/// root, setuid to another user clears every capability, and
/// no-new-privileges keeps them from coming back.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), ShimError> {
    use nix::unistd::{Gid, Uid, getuid, setgid, setgroups, setuid};
    if getuid().as_raw() == uid {
        return Ok(());
    }
    let fail = |source| ShimError::Drop { uid, gid, source };
    setgroups(&[Gid::from_raw(gid)]).map_err(fail)?;
    setgid(Gid::from_raw(gid)).map_err(fail)?;
    setuid(Uid::from_raw(uid)).map_err(fail)?;
    if getuid().as_raw() != uid || nix::unistd::geteuid().as_raw() != uid {
        return Err(fail(nix::Error::EPERM));
    }
    Ok(())
}

/// Reaps every exited child; returns the command's status once it exits.
fn reap(command: Pid) -> Option<i32> {
    let mut status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => status = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                status = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return status,
            Ok(_) => {}
        }
    }
}

/// Waits until every gate socket exists (the gate renames each into place
/// only once it listens).
async fn wait_for_gate(config: &ShimConfig) -> Result<(), ShimError> {
    let deadline = Instant::now() + config.gate_timeout;
    for forward in &config.forwards {
        while !forward.socket.exists() {
            if Instant::now() >= deadline {
                return Err(ShimError::GateMissing(
                    config.gate_timeout,
                    forward.socket.clone(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

/// Forwards each loopback connection to the gate socket.
async fn bridge(listener: TcpListener, socket: PathBuf) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            // No gate, no path: dropping the connection is the answer.
            let Ok(gate) = UnixStream::connect(&socket).await else {
                return;
            };
            relay::relay(tcp, gate).await;
        });
    }
}
