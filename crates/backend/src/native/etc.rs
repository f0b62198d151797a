//! A sandbox's `/etc`, made as a directory of the bottle's own and
//! mounted read-only in one piece. Each bind of bubblewrap's costs about
//! 0.2 ms at every start, and an `/etc` of forty bound entries was a
//! third of the agent sandbox's start; a copy of the same allowlist costs
//! a fraction of that. The view is made again at every start of the
//! sandbox, so a resumed bottle sees the host's `/etc` as it is then.
//!
//! What the view holds, from the allowlist of names it is given:
//! - a regular file the host lets every user read, copied (`0644`); one
//!   that not every user may read is left out, so the copy never shows
//!   more than a bind did to the agent's uid;
//! - a symbolic link as a link, resolved inside the sandbox;
//! - a directory as an empty mount point, the host's directory bound
//!   over it (read-only);
//! - the sandbox's own files (accounts, hosts, the bottle's CA): copied
//!   when they are files under `/etc` outside a bound directory, bound
//!   otherwise.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::io_err;
use crate::BackendError;

/// A made `/etc`: the directory mounted at `/etc`, and what is bound over
/// it (host path, path inside), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcView {
    pub root: PathBuf,
    pub binds: Vec<(PathBuf, String)>,
}

/// A new directory every user may enter (the sandbox's uid reads the
/// view), whatever the umask.
fn public_dir(at: &Path) -> Result<(), BackendError> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(at)
        .map_err(io_err(at))?;
    std::fs::set_permissions(at, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_err(at))
}

/// The directory `rel` of the view, made (`0755` at every level, whatever
/// the umask) where missing; `None` where a level of it is not a
/// directory of the view's own (a link recreated from the host's, a
/// file): nothing is ever written through a link.
fn view_dir(root: &Path, rel: &Path) -> Result<Option<PathBuf>, BackendError> {
    let mut at = root.to_owned();
    for part in rel.components() {
        let std::path::Component::Normal(part) = part else {
            return Ok(None);
        };
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => public_dir(&at)?,
            Err(e) => return Err(io_err(&at)(e)),
        }
    }
    Ok(Some(at))
}

/// Where `rel` goes in the view, its parent made; `None` as for
/// [`view_dir`].
fn view_parent(root: &Path, rel: &Path) -> Result<Option<PathBuf>, BackendError> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(None);
    };
    Ok(view_dir(root, parent)?.map(|dir| dir.join(name)))
}

/// Writes `bytes` at `rel` in the view (`0644`), replacing a link or a
/// file there; `false` where it cannot be placed without going through a
/// link.
fn place_file(root: &Path, rel: &Path, bytes: &[u8]) -> Result<bool, BackendError> {
    let Some(to) = view_parent(root, rel)? else {
        return Ok(false);
    };
    match std::fs::symlink_metadata(&to) {
        Ok(meta) if meta.is_dir() => return Ok(false),
        Ok(_) => std::fs::remove_file(&to).map_err(io_err(&to))?,
        Err(_) => {}
    }
    crate::state::write_file(&to, bytes, 0o644)?;
    Ok(true)
}

/// How the host's links among the named entries are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// As links, resolved inside the sandbox (the agent's: its `/usr` is
    /// the host's, so `localtime -> /usr/share/zoneinfo/…` holds).
    Keep,
    /// Resolved on the host, the target shown in the link's place (a
    /// gate's: `resolv.conf -> ../run/systemd/resolve/stub-resolv.conf`
    /// would point nowhere in its sandbox).
    Follow,
}

/// Makes `root` afresh from `entries` (names under `host_etc`) and
/// `extra` (host path, path inside the sandbox), laid over them.
pub fn make(
    host_etc: &Path,
    root: &Path,
    entries: &[&str],
    links: Links,
    extra: &[(PathBuf, String)],
) -> Result<EtcView, BackendError> {
    match std::fs::remove_dir_all(root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(root)(e)),
        _ => {}
    }
    public_dir(root)?;
    let mut binds = Vec::new();
    // Inside paths of the bound directories: what is laid over a path in
    // one of them must be bound too.
    let mut bound: Vec<String> = Vec::new();
    for name in entries {
        let rel = Path::new(name);
        let host = host_etc.join(rel);
        let inside = format!("/etc/{name}");
        let meta = match links {
            Links::Keep => std::fs::symlink_metadata(&host),
            Links::Follow => std::fs::metadata(&host),
        };
        let Ok(meta) = meta else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Some(at) = view_parent(root, rel)? {
                let target = std::fs::read_link(&host).map_err(io_err(&host))?;
                std::os::unix::fs::symlink(target, &at).map_err(io_err(&at))?;
            }
        } else if meta.is_dir() {
            // A mount point where the view can hold one; else bubblewrap
            // makes it, or refuses to start.
            view_dir(root, rel)?;
            binds.push((host, inside.clone()));
            bound.push(inside);
        } else if meta.is_file() && meta.mode() & 0o004 != 0 {
            let bytes = std::fs::read(&host).map_err(io_err(&host))?;
            if !place_file(root, rel, &bytes)? {
                binds.push((host, inside));
            }
        }
    }
    for (host, inside) in extra {
        let in_bound = bound.iter().any(|dir| {
            inside
                .strip_prefix(dir.as_str())
                .is_some_and(|r| r.starts_with('/'))
        });
        let rel = inside.strip_prefix("/etc/").filter(|rel| {
            !in_bound
                && !rel
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.is_empty())
        });
        let placed = match rel {
            Some(rel) if host.is_dir() => {
                if view_dir(root, Path::new(rel))?.is_some() {
                    bound.push(inside.clone());
                }
                false
            }
            Some(rel) => {
                let bytes = std::fs::read(host).map_err(io_err(host))?;
                place_file(root, Path::new(rel), &bytes)?
            }
            None => false,
        };
        if !placed {
            binds.push((host.clone(), inside.clone()));
        }
    }
    Ok(EtcView {
        root: root.to_owned(),
        binds,
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_view_holds_what_every_user_may_read_of_the_allowlist_and_the_sandboxs_own() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("etc");
        std::fs::create_dir_all(host.join("ssl/certs")).unwrap();
        std::fs::create_dir_all(host.join("ssl/private")).unwrap();
        std::fs::write(host.join("ssl/certs/ca-certificates.crt"), "roots").unwrap();
        std::fs::write(host.join("ssl/openssl.cnf"), "cnf").unwrap();
        std::fs::write(host.join("services"), "svc").unwrap();
        std::fs::write(host.join("shadow"), "root:hash").unwrap();
        std::fs::write(host.join("hosts"), "the host's own names").unwrap();
        // In the allowlist but not every user's to read.
        std::fs::write(host.join("locked.conf"), "token").unwrap();
        for (name, mode) in [
            ("services", 0o644),
            ("locked.conf", 0o640),
            ("shadow", 0o640),
        ] {
            std::fs::set_permissions(host.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", host.join("localtime")).unwrap();
        let own = tmp.path().join("own");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("passwd"), "agent:x:10001").unwrap();
        std::fs::write(own.join("hosts"), "127.0.0.1 localhost").unwrap();
        std::fs::write(own.join("bundle"), "roots+ca").unwrap();
        let root = tmp.path().join("view");
        // A view of an earlier start is replaced whole.
        std::fs::create_dir_all(root.join("stale")).unwrap();
        let entries = [
            "services",
            "locked.conf",
            "localtime",
            "hosts",
            "ssl/certs",
            "ssl/openssl.cnf",
            "missing",
        ];
        let extra = [
            (own.join("passwd"), "/etc/passwd".to_owned()),
            (own.join("hosts"), "/etc/hosts".to_owned()),
            (
                own.join("bundle"),
                "/etc/ssl/certs/ca-certificates.crt".to_owned(),
            ),
            (own.join("passwd"), "/home/agent/.x".to_owned()),
        ];
        let view = make(&host, &root, &entries, Links::Keep, &extra).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
        assert_eq!(read("services").as_deref(), Some("svc"));
        assert_eq!(read("ssl/openssl.cnf").as_deref(), Some("cnf"));
        assert_eq!(read("passwd").as_deref(), Some("agent:x:10001"));
        assert_eq!(read("hosts").as_deref(), Some("127.0.0.1 localhost"));
        assert_eq!(read("locked.conf"), None, "not every user's to read");
        assert_eq!(read("shadow"), None, "not in the allowlist");
        assert!(!root.join("stale").exists());
        assert!(!root.join("ssl/private").exists());
        assert_eq!(
            std::fs::read_link(root.join("localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        // The directory is a mount point; the host's is bound over it,
        // and what lies in it is bound over that.
        assert!(root.join("ssl/certs").is_dir());
        assert_eq!(
            std::fs::read_dir(root.join("ssl/certs")).unwrap().count(),
            0
        );
        assert_eq!(
            view.binds,
            vec![
                (host.join("ssl/certs"), "/etc/ssl/certs".to_owned()),
                (
                    own.join("bundle"),
                    "/etc/ssl/certs/ca-certificates.crt".to_owned()
                ),
                (own.join("passwd"), "/home/agent/.x".to_owned()),
            ]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(&root.join("ssl")), 0o755);
        assert_eq!(mode(&root.join("services")), 0o644);
    }

    #[test]
    fn a_link_is_kept_or_followed_and_nothing_is_written_through_one() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("etc");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(host.join("ssl")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("stub-resolv.conf"), "nameserver 127.0.0.53").unwrap();
        std::fs::set_permissions(
            elsewhere.join("stub-resolv.conf"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::os::unix::fs::symlink(elsewhere.join("stub-resolv.conf"), host.join("resolv.conf"))
            .unwrap();
        // The host's certificates directory is a link to a directory
        // outside: what lies in it in the sandbox is bound, never
        // written there.
        std::os::unix::fs::symlink(&elsewhere, host.join("ssl/certs")).unwrap();
        let bundle = tmp.path().join("bundle");
        std::fs::write(&bundle, "roots+ca").unwrap();
        let extra = [(
            bundle.clone(),
            "/etc/ssl/certs/ca-certificates.crt".to_owned(),
        )];
        let entries = ["resolv.conf", "ssl/certs"];

        let agent = tmp.path().join("agent-view");
        let view = make(&host, &agent, &entries, Links::Keep, &extra).unwrap();
        assert!(
            std::fs::symlink_metadata(agent.join("resolv.conf"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            view.binds,
            vec![(
                bundle.clone(),
                "/etc/ssl/certs/ca-certificates.crt".to_owned()
            )]
        );
        assert!(!elsewhere.join("ca-certificates.crt").exists());

        let gate = tmp.path().join("gate-view");
        let view = make(&host, &gate, &entries, Links::Follow, &extra).unwrap();
        assert_eq!(
            std::fs::read_to_string(gate.join("resolv.conf")).unwrap(),
            "nameserver 127.0.0.53"
        );
        assert_eq!(
            view.binds,
            vec![
                (host.join("ssl/certs"), "/etc/ssl/certs".to_owned()),
                (bundle, "/etc/ssl/certs/ca-certificates.crt".to_owned()),
            ]
        );
        assert!(!elsewhere.join("ca-certificates.crt").exists());
    }
}
