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

use crate::BackendError;

/// A made `/etc`: the directory mounted at `/etc`, and what is bound over
/// it (host path, path inside), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcView {
    pub root: PathBuf,
    pub binds: Vec<(PathBuf, String)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A directory every user may enter (the sandbox's uid reads the view).
fn public_dir(path: &Path) -> Result<(), BackendError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(io_err(path))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_err(path))
}

fn copy_file(from: &Path, to: &Path) -> Result<(), BackendError> {
    let bytes = std::fs::read(from).map_err(io_err(from))?;
    if let Some(parent) = to.parent() {
        public_dir(parent)?;
    }
    if std::fs::symlink_metadata(to).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(to).map_err(io_err(to))?;
    }
    crate::state::write_file(to, &bytes, 0o644)
}

/// Makes `root` afresh from `entries` (names under `host_etc`) and
/// `extra` (host path, path inside the sandbox), laid over them.
pub fn make(
    host_etc: &Path,
    root: &Path,
    entries: &[&str],
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
        let host = host_etc.join(name);
        let at = root.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        if let Some(parent) = at.parent() {
            public_dir(parent)?;
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host).map_err(io_err(&host))?;
            std::os::unix::fs::symlink(target, &at).map_err(io_err(&at))?;
        } else if meta.is_dir() {
            public_dir(&at)?;
            let inside = format!("/etc/{name}");
            binds.push((host, inside.clone()));
            bound.push(inside);
        } else if meta.is_file() && meta.mode() & 0o004 != 0 {
            copy_file(&host, &at)?;
        }
    }
    for (host, inside) in extra {
        let in_bound = bound.iter().any(|dir| {
            inside
                .strip_prefix(dir.as_str())
                .is_some_and(|r| r.starts_with('/'))
        });
        match inside.strip_prefix("/etc/") {
            Some(rel) if !in_bound && !rel.split('/').any(|c| c == ".." || c.is_empty()) => {
                if host.is_dir() {
                    public_dir(&root.join(rel))?;
                    binds.push((host.clone(), inside.clone()));
                } else {
                    copy_file(host, &root.join(rel))?;
                }
            }
            _ => binds.push((host.clone(), inside.clone())),
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
        std::fs::write(host.join("hosts"), "10.0.0.1 internal").unwrap();
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
        let view = make(&host, &root, &entries, &extra).unwrap();
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
}
