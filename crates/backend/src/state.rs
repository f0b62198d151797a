//! The bottle's state directory on the host (DESIGN.md §2 "State").
//!
//! ```text
//! $XDG_STATE_HOME/bot-bottle/<identity>/
//!   metadata.json   what the bottle is and whether it runs
//!   audit.jsonl     every decision of the gate
//!   grants.json     what a person approved (kept by resume)
//!   gate/           the egress gate's configuration and CA (read-only in
//!                   that gate alone)
//!   gate-git/       the git gate's configuration and SSH keys (read-only
//!                   in that gate alone)
//!   run/            the gate's sockets (the only thing the agent shares)
//!   supervise/      the agent's requests and the gate's control socket
//!                   (the gate's and the person's; never the agent's)
//!   image/          the Dockerfile of the bottle's own image, if any
//!   provision/      the prompt and MCP configuration, mounted read-only
//! ```

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bottle_contract::ca::MintedCa;
use bottle_manifest::plan::{GitPlan, Plan};
use serde::{Deserialize, Serialize};

use crate::BackendError;

/// Paths of one bottle's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BottleDir {
    pub root: PathBuf,
}

impl BottleDir {
    pub fn new(root: impl Into<PathBuf>) -> BottleDir {
        BottleDir { root: root.into() }
    }
    /// Holds the bottle for this launcher until the file returned is
    /// dropped (or the process ends): one launcher per bottle at a time,
    /// so two `resume`s close together cannot both run it.
    pub fn hold(&self, identity: &str) -> Result<std::fs::File, BackendError> {
        let path = self.root.join("launcher.lock");
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(BackendError::Held {
                identity: identity.to_owned(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(BackendError::Io { path, source }),
        }
    }
    pub fn metadata(&self) -> PathBuf {
        self.root.join("metadata.json")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }
    pub fn gate_dir(&self) -> PathBuf {
        self.root.join("gate")
    }
    pub fn gate_config(&self) -> PathBuf {
        self.gate_dir().join(crate::gate_config::EGRESS_CONFIG_FILE)
    }
    /// The git gate's directory: its configuration and the SSH keys.
    pub fn git_gate_dir(&self) -> PathBuf {
        self.root.join("gate-git")
    }
    pub fn git_gate_config(&self) -> PathBuf {
        self.git_gate_dir()
            .join(crate::gate_config::GIT_CONFIG_FILE)
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    /// The supervise role's directory: requests and the control socket.
    /// Shared by the gate and the person's commands, never the agent.
    pub fn supervise_dir(&self) -> PathBuf {
        self.root.join("supervise")
    }
    /// Where the agent's requests wait.
    pub fn requests_dir(&self) -> PathBuf {
        self.supervise_dir().join("requests")
    }
    /// The gate's control socket (approvals applied live).
    pub fn control_socket(&self) -> PathBuf {
        self.supervise_dir()
            .join(bottle_contract::config::CONTROL_SOCKET)
    }
    /// What a person approved, kept for every later start.
    pub fn grants(&self) -> PathBuf {
        self.root.join("grants.json")
    }
    /// The gate's writable git directory (mirrors, learned host keys).
    pub fn git_dir(&self) -> PathBuf {
        self.root.join("git")
    }

    /// Copies each git entry's key into the git gate's directory (mode
    /// 0600) with its pinned host key, and makes the gate's mirror
    /// directory. The egress gate's directory holds no key.
    pub fn write_git(&self, entries: &[GitPlan]) -> Result<(), BackendError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BackendError::Io { path, source }
        };
        let mirrors = self.git_dir();
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&mirrors)
            .map_err(io(&mirrors))?;
        // Keys an older bot-bottle kept beside the CA.
        let old = self.gate_dir().join("git");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let keys = self.git_gate_dir().join("git");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&keys)
            .map_err(io(&keys))?;
        for entry in entries {
            let key = std::fs::read(&entry.identity_file).map_err(io(&entry.identity_file))?;
            write_file(&keys.join(format!("{}.key", entry.name)), &key, 0o600)?;
            if let Some(line) = &entry.host_key {
                let known = known_hosts_line(&entry.upstream, line);
                write_file(
                    &keys.join(format!("{}.known_hosts", entry.name)),
                    known.as_bytes(),
                    0o600,
                )?;
            }
        }
        Ok(())
    }

    /// Files mounted read-only into the agent's sandbox (the prompt, the
    /// MCP configuration).
    pub fn provision_dir(&self) -> PathBuf {
        self.root.join("provision")
    }

    /// Writes `name` into [`BottleDir::provision_dir`] (mode 0644: the
    /// agent reads it); returns its path.
    pub fn write_provision_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, BackendError> {
        let dir = self.provision_dir();
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(&dir)
            .map_err(|source| BackendError::Io {
                path: dir.clone(),
                source,
            })?;
        let path = dir.join(name);
        write_file(&path, bytes, 0o644)?;
        Ok(path)
    }

    /// The bottle's CA certificate (public; the agent trusts it).
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The CA a bottle was started with, for resume.
    pub fn read_ca(&self) -> Result<MintedCa, BackendError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| BackendError::Io { path, source })
        };
        Ok(MintedCa {
            cert_pem: read(self.gate_dir().join("ca.pem"))?,
            key_pem: read(self.gate_dir().join("ca.key"))?,
        })
    }

    /// Writes the CA: the certificate where the agent's side can read it,
    /// certificate and key in the gate's directory (the key readable by the
    /// user alone), and a copy of the extra upstream CA for the gate.
    pub fn write_ca(&self, ca: &MintedCa, upstream_ca: Option<&Path>) -> Result<(), BackendError> {
        let gate = self.gate_dir();
        write_file(&self.ca_cert(), ca.cert_pem.as_bytes(), 0o644)?;
        write_file(&gate.join("ca.pem"), ca.cert_pem.as_bytes(), 0o644)?;
        write_file(&gate.join("ca.key"), ca.key_pem.as_bytes(), 0o600)?;
        if let Some(path) = upstream_ca {
            let pem = std::fs::read(path).map_err(|source| BackendError::Io {
                path: path.to_owned(),
                source,
            })?;
            write_file(&gate.join("upstream-ca.pem"), &pem, 0o644)?;
        }
        Ok(())
    }

    /// Creates the directory tree: private to the user, but for `run/`,
    /// which the agent's user must be able to enter to reach the sockets.
    pub fn create(&self) -> Result<(), BackendError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BackendError::Io { path, source }
        };
        if let Some(parent) = self.root.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(parent))?;
            check_owned(parent)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&self.root)
            .map_err(io(&self.root))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(self.gate_dir())
            .map_err(io(&self.gate_dir()))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(self.requests_dir())
            .map_err(io(&self.requests_dir()))?;
        let run = self.socket_dir();
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(&run)
            .map_err(io(&run))?;
        // Explicit chmod: the umask may have narrowed the mode above.
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io(&run))?;
        // A resumed bottle's old gate left its sockets behind: the shim
        // must wait for the new gate's, not connect to dead ones.
        for stale in std::fs::read_dir(&run)
            .map_err(io(&run))?
            .flatten()
            .map(|e| e.path())
            .chain([self.control_socket()])
        {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(BackendError::Io {
                        path: stale,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        let audit = self.audit_log();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&audit)
            .map_err(io(&audit))?;
        Ok(())
    }

    /// Writes `value` as JSON to `path` atomically (temp file + rename).
    pub fn write_json(&self, path: &Path, value: &impl Serialize) -> Result<(), BackendError> {
        bottle_contract::files::write_json_atomic(path, value).map_err(|source| BackendError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Removes the whole directory (`--rm`).
    pub fn remove(&self) -> Result<(), BackendError> {
        remove_tree(&self.root).map_err(|source| BackendError::Io {
            path: self.root.clone(),
            source,
        })
    }
}

/// Removes `path` and everything under it; gone already is fine. A tree
/// an agent wrote (a native bottle's home and workspace are its files on
/// the host) may hold directories it made unreadable: those are opened up
/// (never through a link) and the removal tried again.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            open_up(path);
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
        other => other,
    }
}

/// Makes every directory under `dir` (not following links) the owner's to
/// list, enter and change.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let is_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir());
    if !is_dir {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&entry.path());
            }
        }
    }
}

/// A known_hosts line for `upstream` from the manifest's `HostKey` line:
/// its key type and key, under the host (and port) ssh will look up, so a
/// pinned key cannot miss because the line named the host differently.
pub fn known_hosts_line(upstream: &str, host_key: &str) -> String {
    let fields: Vec<&str> = host_key.split_whitespace().collect();
    let (key_type, key) = match fields.as_slice() {
        [_, key_type, key, ..] => (*key_type, *key),
        _ => ("", ""),
    };
    let (host, port) = upstream_host_port(upstream);
    let host = if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    };
    format!("{host} {key_type} {key}\n")
}

/// Host and port of an SSH upstream (`ssh://user@host:port/path` or
/// `user@host:path`).
pub fn upstream_host_port(upstream: &str) -> (String, u16) {
    let authority = match upstream.strip_prefix("ssh://") {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => upstream.split(':').next().unwrap_or(upstream),
    };
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if upstream.starts_with("ssh://")
        && let Some((host, port)) = host_port.rsplit_once(':')
        && let Ok(port) = port.parse()
    {
        return (host.trim_matches(['[', ']']).to_owned(), port);
    }
    (host_port.trim_matches(['[', ']']).to_owned(), 22)
}

/// Refuses a directory another user could change (a state root, the
/// image builds' lock directory): every directory on its path must be
/// this user's or root's, and one that others may write must be sticky
/// (as `/tmp` is: no one renames what is not theirs). Otherwise that user
/// could swap a part of it for a link and have the launcher (root, under
/// `sudo -E`) write, give away or remove what the link points at.
pub fn check_owned(root: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::MetadataExt;
    let real = root.canonicalize().map_err(|source| BackendError::Io {
        path: root.to_owned(),
        source,
    })?;
    let me = nix::unistd::geteuid().as_raw();
    for dir in real.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let meta = std::fs::symlink_metadata(dir).map_err(|source| BackendError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if meta.uid() != me && meta.uid() != 0 {
            return Err(BackendError::Other(std::io::Error::other(format!(
                "{} is under {}, which uid {} owns: another user could change what bot-bottle keeps there; use a directory only you can write (XDG_STATE_HOME, TMPDIR){}",
                root.display(),
                dir.display(),
                meta.uid(),
                if me == 0 {
                    " (under sudo, do not keep the user's HOME)"
                } else {
                    ""
                }
            ))));
        }
        let writable_by_others = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        if writable_by_others && !sticky {
            return Err(BackendError::Other(std::io::Error::other(format!(
                "{} is under {}, which others may write (mode {:o}): make it 0755 or narrower, or use a directory only you can write (XDG_STATE_HOME, TMPDIR)",
                root.display(),
                dir.display(),
                meta.mode() & 0o7777
            ))));
        }
    }
    Ok(())
}

/// Waits, off the async threads, until `file`'s exclusive lock is this
/// process's; it holds until the file is dropped.
pub async fn locked(file: std::fs::File) -> Result<std::fs::File, BackendError> {
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(std::io::Error::other)?
        .map_err(BackendError::from)
}

/// The identity of the file at `path` (a link followed): device, inode,
/// modification time, size and mode — enough to notice that it changed
/// without reading it.
pub fn file_identity(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(format!(
        "{}:{}:{}.{}:{}:{:o}",
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len(),
        meta.mode()
    ))
}

/// Opens (creating, `0600`) a lock file, never through a link.
pub fn open_lock(path: &Path) -> Result<std::fs::File, BackendError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| BackendError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Writes `path` with `mode` exactly (the umask does not narrow it).
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BackendError> {
    let io = |source| BackendError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)
}

/// Version of `metadata.json`'s shape. Version 1 (bot-bottle before the
/// state was versioned) has no `version` field and reads as this one;
/// a newer version is refused, never guessed at.
pub const STATE_VERSION: u32 = 2;

/// Why a bottle's `metadata.json` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error(
        "{path}: written by a newer bot-bottle (state version {found}; this one reads up to {STATE_VERSION}): upgrade bot-bottle to use this bottle"
    )]
    Newer { path: PathBuf, found: u32 },
}

/// A bottle found in the state root.
#[derive(Debug, Clone)]
pub struct Record {
    pub identity: String,
    pub dir: BottleDir,
    /// `metadata.json`, or why it could not be read (missing, not JSON,
    /// written by a newer bot-bottle).
    pub metadata: Result<Metadata, StateError>,
}

impl Record {
    /// The lifecycle state, `None` when the metadata cannot be read.
    pub fn state(&self) -> Option<BottleState> {
        self.metadata.as_ref().ok().map(|m| m.state)
    }

    /// Whether the launcher recorded in the metadata still runs.
    pub fn launcher_alive(&self) -> bool {
        self.metadata
            .as_ref()
            .ok()
            .and_then(Metadata::launcher)
            .is_some_and(|l| l.is_alive())
    }

    /// Running, with a live launcher: held, not to be cleaned up.
    pub fn is_live(&self) -> bool {
        self.state() == Some(BottleState::Running) && self.launcher_alive()
    }
}

/// Every bottle directory under `root`, sorted by identity.
pub fn records(root: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<Record> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let dir = BottleDir::new(e.path());
            Record {
                identity: e.file_name().to_string_lossy().into_owned(),
                metadata: Metadata::read(&dir),
                dir,
            }
        })
        .collect();
    out.sort_by(|a, b| a.identity.cmp(&b.identity));
    out
}

/// Lifecycle state recorded in `metadata.json`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BottleState {
    /// A launcher holds it (or held it, if that launcher crashed).
    Running,
    /// Stopped; its workspace, home and state are kept for resume.
    Stopped,
    /// Stopped, and kept even under `--rm`: it carries an image change a
    /// person approved (a capability block).
    Preserved,
}

impl BottleState {
    pub fn as_str(self) -> &'static str {
        match self {
            BottleState::Running => "running",
            BottleState::Stopped => "stopped",
            BottleState::Preserved => "preserved",
        }
    }
}

/// Flags of the start that made a bottle, as `metadata.json` records them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flags {
    /// `--rm`.
    pub rm: bool,
    /// `--cwd`.
    pub copy_cwd: bool,
    /// `-- CMD…` replaced the agent's command.
    pub command_from_argv: bool,
}

fn version_1() -> u32 {
    1
}

/// `metadata.json`: what the bottle is and where it is in its life. The
/// plan it was started from is kept whole, so later commands never have
/// to guess. Written and read through this type alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    /// [`STATE_VERSION`] when written.
    #[serde(default = "version_1")]
    pub version: u32,
    pub identity: String,
    pub agent: String,
    pub bottle: String,
    pub manifest: PathBuf,
    /// The backend it runs on (`docker`, `native`).
    pub backend: String,
    pub started_at: String,
    pub state: BottleState,
    pub launcher_pid: u32,
    /// `PID:START`, which a recycled pid cannot match.
    pub launcher: String,
    /// The launcher's working directory.
    pub cwd: Option<PathBuf>,
    /// The flags that shaped the bottle.
    pub flags: Flags,
    /// Who stopped it, when not its launcher (the guardian after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    pub plan: Plan,
}

impl Metadata {
    /// A bottle this launcher is starting: running, held by this process.
    pub fn starting(plan: &Plan) -> Metadata {
        let launcher = crate::process::Launcher::current()
            .map(|l| l.to_string())
            .unwrap_or_default();
        Metadata {
            version: STATE_VERSION,
            identity: plan.identity.clone(),
            agent: plan.agent.clone(),
            bottle: plan.bottle.clone(),
            manifest: plan.manifest.clone(),
            backend: plan.backend.clone(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            state: BottleState::Running,
            cwd: std::env::current_dir().ok(),
            flags: Flags {
                rm: plan.remove_on_exit,
                copy_cwd: plan.workspace.is_some(),
                command_from_argv: plan.command_source
                    == bottle_manifest::plan::CommandSource::Argv,
            },
            launcher_pid: std::process::id(),
            launcher,
            stopped_by: None,
            plan: plan.clone(),
        }
    }

    /// Its launcher stopped it: kept for resume (`preserved` when it
    /// carries an approved image change).
    pub fn stop(&mut self, preserved: bool) {
        self.state = if preserved {
            BottleState::Preserved
        } else {
            BottleState::Stopped
        };
    }

    /// Someone other than its launcher (`by`) found it abandoned and
    /// stopped it.
    pub fn stop_for(&mut self, preserved: bool, by: &str) {
        self.stop(preserved);
        self.stopped_by = Some(by.to_owned());
    }

    /// The launcher recorded, if it parses.
    pub fn launcher(&self) -> Option<crate::process::Launcher> {
        self.launcher.parse().ok()
    }

    /// Whether `launcher` is the one that holds (or held) this bottle.
    pub fn is_held_by(&self, launcher: &crate::process::Launcher) -> bool {
        self.launcher() == Some(*launcher)
    }

    /// Reads `dir`'s `metadata.json`.
    pub fn read(dir: &BottleDir) -> Result<Metadata, StateError> {
        let path = dir.metadata();
        let unreadable = |message: String| StateError::Unreadable {
            path: path.clone(),
            message,
        };
        let bytes = std::fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
        Metadata::parse(&bytes).map_err(|e| match e {
            StateError::Unreadable { message, .. } => unreadable(message),
            StateError::Newer { found, .. } => StateError::Newer {
                path: path.clone(),
                found,
            },
        })
    }

    /// Parses a `metadata.json` of any version this build reads.
    pub fn parse(bytes: &[u8]) -> Result<Metadata, StateError> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "version_1")]
            version: u32,
        }
        let unreadable = |e: serde_json::Error| StateError::Unreadable {
            path: PathBuf::new(),
            message: format!("not the metadata of a bottle: {e}"),
        };
        let Version { version } = serde_json::from_slice(bytes).map_err(unreadable)?;
        if version > STATE_VERSION {
            return Err(StateError::Newer {
                path: PathBuf::new(),
                found: version,
            });
        }
        let mut metadata: Metadata = serde_json::from_slice(bytes).map_err(unreadable)?;
        metadata.version = STATE_VERSION;
        Ok(metadata)
    }

    /// Writes it to `dir`'s `metadata.json`, atomically.
    pub fn write(&self, dir: &BottleDir) -> Result<(), BackendError> {
        dir.write_json(&dir.metadata(), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_root_others_could_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap_or_else(|e| panic!("{e}"));
        assert!(check_owned(&open).is_ok());
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = BottleDir::new(open.join("state").join("probe-x"));
        let refused = match dir.create().map(|_| ()) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted"),
        };
        assert!(refused.contains("others may write"), "{refused}");
        // Sticky, as /tmp is: others cannot rename what is not theirs.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777))
            .unwrap_or_else(|e| panic!("{e}"));
        dir.create().unwrap_or_else(|e| panic!("{e}"));
    }

    /// A `metadata.json` as bot-bottle wrote it before the state had a
    /// version.
    const V1: &str = include_str!("../tests/fixtures/metadata-v1.json");

    #[test]
    fn an_older_state_file_reads() {
        let m = Metadata::parse(V1.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.version, STATE_VERSION);
        assert_eq!(m.state, BottleState::Stopped);
        assert_eq!(m.backend, "docker");
        assert_eq!(m.plan.identity, m.identity);
        assert!(m.stopped_by.is_some());
        assert_eq!(m.launcher().map(|l| l.pid), Some(4242));
    }

    #[test]
    fn state_round_trips_and_moves_by_its_methods() {
        let old = Metadata::parse(V1.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut m = Metadata::starting(&old.plan);
        assert_eq!(m.state, BottleState::Running);
        assert!(
            m.is_held_by(&crate::process::Launcher::current().unwrap_or_else(|e| panic!("{e}")))
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = BottleDir::new(dir.path());
        m.write(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Metadata::read(&dir).as_ref(), Ok(&m));
        m.stop(true);
        assert_eq!(m.state, BottleState::Preserved);
        m.stop_for(false, "a test");
        assert_eq!(m.state, BottleState::Stopped);
        assert_eq!(m.stopped_by.as_deref(), Some("a test"));
        m.write(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Metadata::read(&dir), Ok(m));
    }

    #[test]
    fn a_newer_state_file_is_refused_not_misread() {
        let mut json: serde_json::Value =
            serde_json::from_str(V1).unwrap_or_else(|e| panic!("{e}"));
        json["version"] = (STATE_VERSION + 1).into();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = BottleDir::new(dir.path());
        std::fs::write(dir.metadata(), json.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let Err(err) = Metadata::read(&dir) else {
            panic!("a newer version must not read");
        };
        assert!(matches!(err, StateError::Newer { found, .. } if found == STATE_VERSION + 1));
        let text = err.to_string();
        assert!(
            text.contains("metadata.json") && text.contains("upgrade bot-bottle"),
            "{text}"
        );
    }

    #[test]
    fn a_broken_state_file_says_so() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = BottleDir::new(dir.path());
        std::fs::write(dir.metadata(), b"{\"state\": 7}").unwrap_or_else(|e| panic!("{e}"));
        let Err(err) = Metadata::read(&dir) else {
            panic!("not metadata");
        };
        assert!(matches!(err, StateError::Unreadable { .. }), "{err}");
        let missing = BottleDir::new(dir.root.join("gone"));
        assert!(matches!(
            Metadata::read(&missing),
            Err(StateError::Unreadable { .. })
        ));
    }
}
