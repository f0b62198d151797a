//! Launched by root, a native agent's sandbox still runs as an
//! unprivileged host user: bubblewrap run by root would map the agent to
//! host uid 0, the owner of everything root owns (the host's device nodes
//! bound into its `/dev` among them) and a user the kernel does not count
//! against `RLIMIT_NPROC`.
//!
//! So the launcher starts bubblewrap as a host uid of the bottle's own
//! ([`host_id`]). That uid cannot walk the launcher's private state
//! directory to the sandbox's parts, so a helper (`bottle native-sandbox`,
//! still root) makes a mount namespace of its own, binds each part, by
//! descriptor, at its own path under a fresh tmpfs over `/tmp` there,
//! drops to that uid and becomes bubblewrap, which binds the parts from
//! there. Nothing of that namespace is visible to the host, and it ends
//! with the sandbox.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::BackendError;
use crate::state::BottleDir;

/// First host uid (and gid) of the range root-launched agents run as.
const FIRST_ID: u32 = 0x7000_0000;
/// How many ids the range has.
const IDS: u32 = 1 << 24;
/// The helper's subcommand: `bottle native-sandbox` ([`StageArgs`]).
pub const SUBCOMMAND: &str = "native-sandbox";
/// Where the sandbox's parts are bound in bubblewrap's own mount
/// namespace (a tmpfs over it there; the host's is untouched).
const STAGE: &str = "/tmp";

/// Where a bottle's host id is on record.
fn id_file(dir: &BottleDir) -> PathBuf {
    super::native_dir(dir).join("host-id")
}

/// The host uid and gid a root-launched bottle's agent runs as: chosen at
/// its first start and kept on record, so its files stay its own on
/// resume. Never an id an account, a group or a subordinate range
/// (`/etc/subuid`, `/etc/subgid`) of the host has, nor one another bottle
/// of the state root has; and one this launcher's user namespace maps.
pub fn host_id(dir: &BottleDir, identity: &str) -> Result<u32, BackendError> {
    let recorded = id_file(dir);
    let id = match std::fs::read_to_string(&recorded) {
        Ok(text) => text
            .trim()
            .parse()
            .ok()
            .filter(|id| (FIRST_ID..FIRST_ID + IDS).contains(id))
            .ok_or_else(|| {
                BackendError::Other(std::io::Error::other(format!(
                    "{}: not a host id of bot-bottle's range; remove the bottle (bottle rm) and start it again",
                    recorded.display()
                )))
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => choose(dir, identity)?,
        Err(source) => {
            return Err(BackendError::Io {
                path: recorded,
                source,
            });
        }
    };
    for map in ["/proc/self/uid_map", "/proc/self/gid_map"] {
        let text = std::fs::read_to_string(map).map_err(|source| BackendError::Io {
            path: PathBuf::from(map),
            source,
        })?;
        if !maps(&text, id) {
            return Err(BackendError::Other(std::io::Error::other(format!(
                "native: launched by root, the agent runs as host id {id}, which {map} does not map (this launcher is in a user namespace of its own); run bottle as an ordinary user, or use --backend docker"
            ))));
        }
    }
    Ok(id)
}

/// Most ids tried before giving up.
const TRIES: u32 = 4096;

/// Picks a free id, starting from the identity's, and records it; one
/// launcher at a time per state root.
fn choose(dir: &BottleDir, identity: &str) -> Result<u32, BackendError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BackendError::Io { path, source }
    };
    let state_root = dir.root.parent().unwrap_or(Path::new("/"));
    // The state root itself is the lock: nothing is left in it.
    let lock = std::fs::File::open(state_root).map_err(io(state_root))?;
    lock.lock().map_err(io(state_root))?;
    let others: std::collections::HashSet<u32> = std::fs::read_dir(state_root)
        .map_err(io(state_root))?
        .flatten()
        .filter(|e| e.path() != dir.root)
        .filter_map(|e| {
            let text = std::fs::read_to_string(id_file(&BottleDir::new(e.path()))).ok()?;
            text.trim().parse().ok()
        })
        .collect();
    let subordinate: Vec<(u64, u64)> = ["/etc/subuid", "/etc/subgid"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| {
                    let mut fields = line.split(':').skip(1);
                    let first: u64 = fields.next()?.trim().parse().ok()?;
                    let count: u64 = fields.next()?.trim().parse().ok()?;
                    Some((first, first + count))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // FNV-1a of the identity: the first id tried, stable across builds.
    let hash = identity.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let free = (0..TRIES)
        .map(|k| FIRST_ID + hash.wrapping_add(k) % IDS)
        .find(|&id| {
            let wide = u64::from(id);
            !others.contains(&id)
                && !subordinate.iter().any(|&(a, b)| a <= wide && wide < b)
                && crate::accounts::unnamed(id)
        })
        .ok_or_else(|| {
            BackendError::Other(std::io::Error::other(format!(
                "native: no free host id among {TRIES} tried from {FIRST_ID}; remove bottles you no longer need (bottle cleanup)"
            )))
        })?;
    let recorded = id_file(dir);
    super::write(&recorded, format!("{free}\n").as_bytes())?;
    drop(lock);
    Ok(free)
}

/// Whether an id map (`inside outside count` lines) covers `id`.
fn maps(text: &str, id: u32) -> bool {
    text.lines().any(|line| {
        let fields: Vec<u64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        matches!(fields[..], [inside, _, count] if inside <= u64::from(id) && u64::from(id) < inside + count)
    })
}

/// Gives `root` and everything under it to `id` (owner and group): the
/// agent's home and workspace, which root wrote (the `--cwd` copy, the
/// skills). The walk goes by descriptor, each directory opened from its
/// parent without following a link, and never past a mount point: a tree
/// the agent shaped in an earlier run (links, deep paths) cannot turn a
/// step of it into a change of anything outside.
pub fn give(root: &Path, id: u32) -> Result<(), BackendError> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{Mode, fstat, fstatat};
    let fail = |what: &Path| {
        let path = what.to_owned();
        move |e: nix::Error| BackendError::Io {
            path,
            source: e.into(),
        }
    };
    let directory = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let top = nix::fcntl::open(root, directory, Mode::empty()).map_err(fail(root))?;
    let stat = fstat(&top).map_err(fail(root))?;
    let device = stat.st_dev;
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(id),
        nix::unistd::Gid::from_raw(id),
    );
    if stat.st_uid != id || stat.st_gid != id {
        nix::unistd::fchown(&top, Some(uid), Some(gid)).map_err(fail(root))?;
    }
    // Directories still to walk: (parent, name), each parent open; depth
    // first, so what is open is the path being walked.
    let mut pending: Vec<(std::rc::Rc<OwnedFd>, CString)> = Vec::new();
    let list = |dir: std::rc::Rc<OwnedFd>,
                pending: &mut Vec<(std::rc::Rc<OwnedFd>, CString)>|
     -> Result<(), BackendError> {
        let listing = dir.try_clone().map_err(BackendError::from)?;
        let mut listing = nix::dir::Dir::from_fd(listing).map_err(fail(root))?;
        let names: Vec<CString> = listing
            .iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        for name in names {
            let stat = fstatat(&*dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(fail(root))?;
            if stat.st_dev == device && (stat.st_uid != id || stat.st_gid != id) {
                nix::unistd::fchownat(
                    &*dir,
                    name.as_c_str(),
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(fail(root))?;
            }
            if stat.st_mode & libc::S_IFMT == libc::S_IFDIR && stat.st_dev == device {
                pending.push((std::rc::Rc::clone(&dir), name));
            }
        }
        Ok(())
    };
    list(std::rc::Rc::new(top), &mut pending)?;
    while let Some((parent, name)) = pending.pop() {
        let dir = nix::fcntl::openat(&*parent, name.as_c_str(), directory, Mode::empty())
            .map_err(fail(root))?;
        drop(parent);
        list(std::rc::Rc::new(dir), &mut pending)?;
    }
    Ok(())
}

/// `bottle native-sandbox …`: bubblewrap started as the agent's host uid,
/// with the sandbox's parts bound where that uid can reach them. Built by
/// [`stage`], run by [`run`]; its environment is the sandbox's own.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StageArgs {
    /// The host uid and gid to run as.
    #[arg(long)]
    pub id: u32,
    /// A part of the sandbox (absolute), bound at its own path under
    /// `/tmp`.
    #[arg(long = "part", value_name = "PATH")]
    pub parts: Vec<PathBuf>,
    /// A descriptor bubblewrap reads (a seccomp filter): the only ones,
    /// past the standard streams, that cross the helper.
    #[arg(long = "keep-fd", value_name = "FD")]
    pub keep_fds: Vec<i32>,
    /// bubblewrap, and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

impl StageArgs {
    /// The arguments after `bottle native-sandbox`, which parse back to
    /// `self`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--id".into(), self.id.to_string().into()];
        for part in &self.parts {
            args.extend(["--part".into(), part.clone().into_os_string()]);
        }
        for fd in &self.keep_fds {
            args.extend(["--keep-fd".into(), fd.to_string().into()]);
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }
}

/// Rewrites the bind mounts of bubblewrap's `args` whose source is not
/// the path inside (the bottle's own parts; the host's system directories
/// are bound as they are) to sources under [`STAGE`], and returns the
/// helper's command line around `bwrap` and them.
pub fn stage(
    bwrap: &Path,
    mut args: Vec<OsString>,
    keep_fds: &[i32],
    id: u32,
) -> Result<StageArgs, BackendError> {
    let mut parts = Vec::new();
    let mut i = 0;
    while i + 2 < args.len() && args[i] != "--" {
        let bind = matches!(
            args[i].as_bytes(),
            b"--bind" | b"--ro-bind" | b"--bind-try" | b"--ro-bind-try"
        );
        // The host's own paths (bound where they are, and `/dev/null` over
        // masked files) are every user's to reach: only the bottle's parts
        // need staging.
        if !bind || args[i + 1] == args[i + 2] || args[i + 1] == "/dev/null" {
            i += 1;
            continue;
        }
        let source = std::path::absolute(PathBuf::from(&args[i + 1]))?;
        let meta = match std::fs::metadata(&source) {
            Ok(meta) => meta,
            Err(_) if args[i].as_bytes().ends_with(b"-try") => {
                i += 3;
                continue;
            }
            Err(e) => {
                return Err(BackendError::Io {
                    path: source,
                    source: e,
                });
            }
        };
        if !meta.is_dir() && meta.uid() != id && meta.mode() & 0o004 == 0 {
            return Err(BackendError::Other(std::io::Error::other(format!(
                "native: {} is not readable by the agent's host uid {id}; it must be readable by others (mode 0644)",
                source.display()
            ))));
        }
        args[i + 1] = staged_at(&source).into_os_string();
        parts.push(source);
        i += 3;
    }
    let mut command = vec![bwrap.as_os_str().to_owned()];
    command.extend(args);
    Ok(StageArgs {
        id,
        parts,
        keep_fds: keep_fds.to_vec(),
        command,
    })
}

/// Binds the parts into a mount namespace of this process's own, drops to
/// the agent's host uid and gid (no supplementary groups, no capabilities
/// left), and becomes bubblewrap. Returns only on failure.
pub fn run(args: &StageArgs) -> std::io::Error {
    match stage_and_exec(args) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn stage_and_exec(args: &StageArgs) -> std::io::Result<std::convert::Infallible> {
    use nix::mount::{MsFlags, mount};
    let Some((program, rest)) = args.command.split_first() else {
        return Err(std::io::Error::other("no command"));
    };
    let step =
        |what: &'static str| move |e: nix::Error| std::io::Error::other(format!("{what}: {e}"));
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(step("a mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("making / private"))?;
    // Opened in the new namespace (a bind's source must be one of its
    // mounts) and before the tmpfs covers /tmp, where a part may be.
    let parts: Vec<(OwnedFd, bool)> = args
        .parts
        .iter()
        .map(|path| {
            let fd = nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            let mode = nix::sys::stat::fstat(&fd)?.st_mode;
            Ok((fd, mode & libc::S_IFMT == libc::S_IFDIR))
        })
        .collect::<std::io::Result<_>>()?;
    mount(
        Some("tmpfs"),
        STAGE,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536"),
    )
    .map_err(step("a tmpfs over /tmp"))?;
    // Every mount point first, all in the tmpfs; then the binds, outer
    // parts before any part inside them, so none is made in a part.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&n| args.parts[n].components().count());
    for &n in &order {
        let target = staged_at(&args.parts[n]);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if parts[n].1 {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::File::create(&target)?;
        }
    }
    for &n in &order {
        let source = format!("/proc/self/fd/{}", parts[n].0.as_raw_fd());
        mount(
            Some(source.as_str()),
            &staged_at(&args.parts[n]),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| std::io::Error::other(format!("binding {}: {e}", args.parts[n].display())))?;
    }
    drop(parts);
    let id = nix::unistd::Uid::from_raw(args.id);
    let gid = nix::unistd::Gid::from_raw(args.id);
    nix::unistd::setgroups(&[]).map_err(step("dropping groups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    nix::unistd::setresuid(id, id, id).map_err(step("setresuid"))?;
    let program = cstring(program)?;
    let argv = std::iter::once(Ok(program.clone()))
        .chain(rest.iter().map(cstring))
        .collect::<std::io::Result<Vec<CString>>>()?;
    nix::unistd::execv(&program, &argv).map_err(step("running bubblewrap"))
}

/// Where a part is bound for bubblewrap: its own path under [`STAGE`],
/// so bubblewrap's command line still names the bottle's directories.
fn staged_at(part: &Path) -> PathBuf {
    Path::new(STAGE).join(part.strip_prefix("/").unwrap_or(part))
}

fn cstring(text: &OsString) -> std::io::Result<CString> {
    CString::new(text.as_bytes()).map_err(std::io::Error::other)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_stable_and_in_its_range() {
        let root = tempfile::tempdir().unwrap();
        let a_dir = BottleDir::new(root.path().join("a"));
        let b_dir = BottleDir::new(root.path().join("b"));
        for d in [&a_dir, &b_dir] {
            std::fs::create_dir(&d.root).unwrap();
        }
        let a = host_id(&a_dir, "bottle-a").unwrap();
        assert_eq!(a, host_id(&a_dir, "bottle-a").unwrap(), "kept on record");
        assert!((FIRST_ID..FIRST_ID + IDS).contains(&a));
        // Another bottle whose identity starts at the same id gets the next.
        let b = host_id(&b_dir, "bottle-a").unwrap();
        assert_ne!(a, b, "two bottles never share an id");
        assert!(maps("0 0 4294967295\n", a));
        assert!(!maps("0 0 65536\n", a), "a narrow map does not cover it");
        assert!(maps("0 100000 65536\n1879048192 1 16777216\n", FIRST_ID));
    }

    #[test]
    fn only_the_bottles_own_parts_are_staged() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let args: Vec<OsString> = [
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            "/dev/null",
            "/proc/kcore",
            "--bind",
            home.to_str().unwrap(),
            "/home/agent",
            "--ro-bind-try",
            "/nonexistent",
            "/x",
            "--",
            "--bind",
            "a",
            "b",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let staged = stage(Path::new("/usr/bin/bwrap"), args, &[5], FIRST_ID).unwrap();
        assert_eq!(staged.keep_fds, vec![5]);
        assert_eq!(staged.parts, vec![home.clone()]);
        let c = &staged.command;
        assert_eq!(c[0], "/usr/bin/bwrap");
        assert_eq!(
            c[8],
            Path::new("/tmp").join(home.strip_prefix("/").unwrap())
        );
        assert_eq!(c[2], "/usr");
        assert_eq!(c[5], "/dev/null");
        assert_eq!(c[11], "/nonexistent", "a missing -try source stays");
        assert_eq!(c[15], "a", "the command's own arguments are its own");
    }

    #[test]
    fn the_helpers_command_line_parses_back() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: StageArgs,
        }
        let args = StageArgs {
            id: FIRST_ID,
            parts: vec!["/state/a b".into(), "/x".into()],
            keep_fds: vec![3, 7],
            command: vec!["bwrap".into(), "--part".into(), "--".into()],
        };
        let argv = std::iter::once(OsString::from("native-sandbox")).chain(args.to_args());
        assert_eq!(Wrap::try_parse_from(argv).unwrap().args, args);
    }
}
