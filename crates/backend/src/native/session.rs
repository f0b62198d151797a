//! Running a native sandbox attached to the launcher: its own terminal (a
//! pseudo-terminal the launcher pumps, so the sandbox never holds the
//! person's), or the launcher's pipes; and laying files into its
//! directories.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use bottle_manifest::plan::WorkspacePlan;
use bytes::Bytes;

use super::processes::Processes;
use crate::process::Launcher;
use crate::state::BottleDir;
use crate::{BackendError, Role};

/// Whether any of the launcher's standard streams is a terminal.
pub fn any_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
        || std::io::stdout().is_terminal()
        || std::io::stderr().is_terminal()
}

/// The compiled seccomp filters, each in a memory file that bubblewrap
/// inherits (`--add-seccomp-fd`). They hold no secret.
pub fn filter_fds(filters: &[Vec<u8>]) -> Result<Vec<OwnedFd>, BackendError> {
    filters
        .iter()
        .map(|bytes| {
            let fd = nix::sys::memfd::memfd_create(
                c"bottle-seccomp",
                nix::sys::memfd::MFdFlags::empty(),
            )
            .map_err(std::io::Error::from)?;
            let mut file = File::from(fd);
            file.write_all(bytes)?;
            std::io::Seek::rewind(&mut file)?;
            Ok(OwnedFd::from(file))
        })
        .collect::<std::io::Result<_>>()
        .map_err(BackendError::from)
}

/// Makes the filters' descriptors inheritable: only they cross into
/// bubblewrap (with the standard streams).
pub fn inheritable(fds: &[OwnedFd]) -> Result<(), BackendError> {
    for fd in fds {
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Unpacks a tar stream into `into` (the skills into the home). Owners
/// are not kept: the files are the user's, the agent's inside.
pub fn unpack(tar: Bytes, into: &Path) -> Result<(), BackendError> {
    let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    archive.unpack(into).map_err(|source| BackendError::Io {
        path: into.to_owned(),
        source,
    })
}

/// Copies the `--cwd` selection into the sandbox's workspace directory.
pub async fn copy_in(
    workspace: &WorkspacePlan,
    into: &Path,
) -> Result<crate::workspace::Copied, BackendError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let plan = workspace.clone();
    let writer = tokio::task::spawn_blocking(move || crate::workspace::write_tar(&plan, tx));
    let target = into.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        let stream = ChannelReader {
            rx: &mut rx,
            chunk: Bytes::new(),
        };
        let mut archive = tar::Archive::new(stream);
        archive.set_preserve_ownerships(false);
        archive.set_preserve_permissions(true);
        archive.unpack(&target)
    });
    let written = writer.await.map_err(std::io::Error::other)?;
    let unpacked = reader.await.map_err(std::io::Error::other)?;
    let copied = written.map_err(|source| BackendError::Io {
        path: workspace.source.clone(),
        source,
    })?;
    unpacked.map_err(|source| BackendError::Io {
        path: into.to_owned(),
        source,
    })?;
    Ok(copied)
}

/// The tar stream's chunks as a reader.
struct ChannelReader<'a> {
    rx: &'a mut tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// bubblewrap with only `env` for environment: the launcher's own (with
/// the route secrets it read) never reaches a sandbox, and values travel
/// in the environment, never on bubblewrap's command line, which every
/// user of the host can read.
pub fn command<K, V>(bwrap: &Path, env: impl IntoIterator<Item = (K, V)>) -> tokio::process::Command
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut command = tokio::process::Command::new(bwrap);
    command.env_clear().envs(env);
    command
}

/// Runs bubblewrap with `args`, attached to a terminal of its own when
/// the launcher has one (`tty`), else to the launcher's pipes; records the
/// sandbox's process; returns the command's exit status.
pub async fn run(
    bwrap: &Path,
    args: &[std::ffi::OsString],
    env: Vec<(String, String)>,
    tty: Tty,
    dir: &BottleDir,
    filters: Vec<OwnedFd>,
    timing: &(dyn Fn(&str) + Sync),
) -> Result<i32, BackendError> {
    let mut command = command(bwrap, env);
    command.args(args);
    // Only the filters' descriptors cross into bubblewrap: they are made
    // inheritable just for this spawn.
    for fd in &filters {
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(std::io::Error::from)?;
    }
    let pty = if tty != Tty::None {
        let pty = Pty::open()?;
        command
            .stdin(pty.slave.try_clone()?)
            .stdout(pty.slave.try_clone()?)
            .stderr(pty.slave.try_clone()?);
        Some(pty)
    } else {
        None
    };
    // Other terminals may attach to the sandbox's (bottle attach).
    let server = match &pty {
        Some(pty) => Some(super::attach::serve(
            &super::native_dir(dir).join(super::attach::SOCKET),
            &pty.master,
        )?),
        None => None,
    };
    let spawned = command.spawn();
    drop(filters);
    let mut child = spawned.map_err(|e| {
        BackendError::Other(std::io::Error::other(format!(
            "cannot run {}: {e}",
            bwrap.display()
        )))
    })?;
    if let Some(pid) = child.id().and_then(Launcher::of) {
        Processes::add(dir, Role::Agent, pid)?;
    }
    timing("agent started");
    // Keys reach the sandbox's terminal as typed when the launcher's
    // input is a terminal.
    let _raw = pty
        .as_ref()
        .filter(|_| std::io::IsTerminal::is_terminal(&std::io::stdin()))
        .and_then(|_| crate::terminal::RawMode::enter());
    let attached = server.as_ref().map(|s| s.attached.clone());
    let pumps = pty.map(|pty| pty.pump(attached, tty == Tty::Launcher));
    let status = child.wait().await?;
    timing("command finished");
    if let Some(pumps) = pumps {
        pumps.finish();
    }
    drop(server);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(crate::signal_exit_code))
        .unwrap_or(1))
}

/// The sandbox's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tty {
    /// None: the sandbox has the launcher's pipes.
    None,
    /// One of its own, copied to and from the launcher's streams and
    /// served to attached terminals.
    Launcher,
    /// One of its own, served to attached terminals only (a detached
    /// bottle: nothing reads the launcher's input).
    Detached,
}

/// A pseudo-terminal for the sandbox: the launcher keeps the master and
/// copies between it and its own terminal.
struct Pty {
    master: File,
    slave: File,
}

/// The copying threads of a [`Pty`], stopped with it.
struct Pumps {
    resizer: tokio::task::JoinHandle<()>,
    output: Option<std::thread::JoinHandle<()>>,
}

impl Pumps {
    /// Waits (briefly) until the sandbox's last output is out: the copy
    /// ends when the terminal reports that no one holds it any more.
    fn finish(mut self) {
        if let Some(out) = self.output.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !out.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        self.resizer.abort();
    }
}

impl Pty {
    fn open() -> Result<Pty, BackendError> {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        grantpt(&master).map_err(std::io::Error::from)?;
        unlockpt(&master).map_err(std::io::Error::from)?;
        let name = ptsname(&master, Vec::new()).map_err(std::io::Error::from)?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
        match rustix::termios::tcgetwinsize(std::io::stdout()) {
            Ok(size) => {
                let _ = rustix::termios::tcsetwinsize(&master, size);
            }
            // No window of the launcher's (detached): a common size until
            // a terminal attaches and sends its own.
            Err(_) => {
                let size = rustix::termios::Winsize {
                    ws_row: 24,
                    ws_col: 80,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                let _ = rustix::termios::tcsetwinsize(&master, size);
            }
        }
        Ok(Pty {
            master: File::from(master),
            slave,
        })
    }

    /// Copies keys in and output out on threads of their own (they end
    /// with the terminal), and keeps the sandbox's window the launcher's
    /// size. Without `launcher`, the output goes to attached terminals
    /// only and nothing is read from the launcher's input.
    fn pump(self, attached: Option<super::attach::Attached>, launcher: bool) -> Pumps {
        let Pty { master, slave } = self;
        // The sandbox holds its own copies of the slave.
        drop(slave);
        if launcher && let Ok(mut input) = master.try_clone() {
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 {
                        // The end of the launcher's input is the end of the
                        // sandbox's (VEOF on an empty line).
                        let _ = input.write_all(b"\x04");
                        break;
                    }
                    if input.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
        let resize = master.try_clone().ok();
        let mut output = master;
        let out = std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            let mut buf = [0u8; 8192];
            // Ends with EIO once the sandbox has closed the terminal. A
            // launcher's terminal that is gone stops only its own copy:
            // the sandbox's output is still read, and attached terminals
            // still get it.
            let mut shown = launcher;
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown = shown && stdout.write_all(&buf[..n]).and(stdout.flush()).is_ok();
                if let Some(attached) = &attached {
                    attached.broadcast(&buf[..n]);
                }
            }
        });
        let resizer = tokio::spawn(async move {
            if !launcher {
                return;
            }
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let (Some(master), Ok(size)) =
                    (&resize, rustix::termios::tcgetwinsize(std::io::stdout()))
                {
                    let _ = rustix::termios::tcsetwinsize(master, size);
                }
            }
        });
        Pumps {
            resizer,
            output: Some(out),
        }
    }
}

use std::os::unix::ffi::OsStrExt;
