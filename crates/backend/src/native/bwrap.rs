//! The bubblewrap command lines of a native bottle: the agent's sandbox
//! and each gate's. The filesystem is an allowlist: a fresh root with the
//! system directories read-only and only the named parts of the state
//! directory; nothing else of the host (`/home`, `/root`, `/var`, `/run`,
//! `/srv`, `/mnt`, `/media`, the state root, the Docker socket) exists
//! inside.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// System directories shown read-only, as on the host (a symbolic link
/// there, like `/bin -> usr/bin`, stays a link).
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
];

/// Files of the host's `/etc` a gate needs: name resolution and the
/// system's root certificates (never `ssl/private`).
pub(super) const GATE_ETC: &[&str] = &[
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "pki/tls/certs",
    "pki/ca-trust",
];

/// Entries of the host's `/etc` the agent sees: what programs need to
/// start, find libraries, name users and groups, read the time and locale,
/// and trust certificates. Anything not named stays out (a host's `/etc`
/// holds credentials of all kinds: `ssl/private`, runners' and clusters'
/// configuration, VPN keys, package-source passwords).
pub(super) const AGENT_ETC: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "bash_completion.d",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "host.conf",
    "inputrc",
    "issue",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "locale.conf",
    "locale.gen",
    "localtime",
    "lsb-release",
    "magic",
    "magic.mime",
    "mime.types",
    "nanorc",
    "networks",
    "nsswitch.conf",
    "os-release",
    "profile",
    "protocols",
    "python3",
    "rpc",
    "services",
    "shells",
    "skel",
    "terminfo",
    "timezone",
    "vim",
    "xdg",
    "ssl/certs",
    "ssl/openssl.cnf",
    "pki/tls/certs",
    "pki/ca-trust",
];

/// `/proc` entries shown read-only (as Docker does): writing them, as the
/// host's root outside the namespace would be allowed to, changes the
/// kernel.
const PROC_READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// `/proc` files hidden (as Docker does): the kernel's memory, keys and
/// timing internals.
const PROC_MASKED: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    // The kernel's memory layout, beyond Docker's list.
    "/proc/vmallocinfo",
    "/proc/slabinfo",
    "/proc/pagetypeinfo",
    "/proc/kpageflags",
    "/proc/kpagecount",
    "/proc/kpagecgroup",
];

/// `/proc` directories hidden (as Docker does).
const PROC_MASKED_DIRS: &[&str] = &["/proc/acpi", "/proc/scsi", "/proc/asound"];

/// A bubblewrap command line under construction.
#[derive(Debug, Default)]
pub struct Args {
    args: Vec<OsString>,
}

impl Args {
    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Args {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Args
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn ro_bind(&mut self, host: &Path, inside: impl AsRef<OsStr>) -> &mut Args {
        self.arg("--ro-bind").arg(host).arg(inside.as_ref())
    }

    pub fn bind(&mut self, host: &Path, inside: impl AsRef<OsStr>) -> &mut Args {
        self.arg("--bind").arg(host).arg(inside.as_ref())
    }

    pub fn into_vec(self) -> Vec<OsString> {
        self.args
    }

    /// Namespaces every native sandbox gets: user, pid, ipc, uts and
    /// cgroup (and network where `own_network`), no capabilities, no
    /// further user namespaces, a new session (no way to push keys into
    /// the launcher's terminal), killed with the launcher. The sandboxed
    /// process is pid 1, so no process of bubblewrap's (which would be
    /// readable inside) shares its pid namespace. Its environment is the
    /// one bubblewrap was started with: [`super::session::command`] clears
    /// the launcher's, which holds the route secrets, and sets only the
    /// sandbox's, never on a command line.
    pub fn isolation(&mut self, own_network: bool) -> &mut Args {
        self.args(["--unshare-user", "--disable-userns"]);
        self.args([
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]);
        if own_network {
            self.arg("--unshare-net");
        }
        self.args([
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--as-pid-1",
        ])
    }

    /// The system directories, read-only; `/proc`, a minimal `/dev`, a
    /// private `/tmp`.
    pub fn system(&mut self, tmp_bytes: Option<u64>) -> &mut Args {
        for dir in SYSTEM {
            let path = Path::new(dir);
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        self.arg("--symlink").arg(target).arg(dir);
                    }
                }
                Ok(meta) if meta.is_dir() => {
                    self.ro_bind(path, dir);
                }
                _ => {}
            }
        }
        self.args(["--proc", "/proc"]);
        for path in PROC_READ_ONLY {
            self.arg("--ro-bind-try").arg(path).arg(path);
        }
        // This kernel's /proc is the sandbox's: mask what it has.
        for path in PROC_MASKED.iter().filter(|p| Path::new(p).exists()) {
            self.arg("--ro-bind").arg("/dev/null").arg(path);
        }
        for dir in PROC_MASKED_DIRS {
            if Path::new(dir).is_dir() {
                self.args(["--tmpfs", dir]);
            }
        }
        self.args(["--dev", "/dev"]);
        // /tmp and /dev/shm are the sandbox's scratch space, both bounded.
        for dir in ["/tmp", "/dev/shm"] {
            if let Some(bytes) = tmp_bytes {
                self.arg("--size").arg(bytes.to_string());
            }
            self.args(["--perms", "1777", "--tmpfs", dir]);
        }
        self
    }

    /// A sandbox's `/etc`: the view made for it (see [`super::etc`]),
    /// read-only, with what is bound over it.
    pub fn etc(&mut self, view: &super::etc::EtcView) -> &mut Args {
        self.ro_bind(&view.root, "/etc");
        for (host, inside) in &view.binds {
            self.ro_bind(host, inside);
        }
        self
    }
}

/// The sandbox's own `/etc/hosts`: its loopback names, nothing of the
/// host's.
pub const AGENT_HOSTS: &str =
    "127.0.0.1\tlocalhost bottle\n::1\tlocalhost ip6-localhost ip6-loopback bottle\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_never_gets_the_hosts_accounts_or_home() {
        let view = super::super::etc::EtcView {
            root: "/x/etc-view".into(),
            binds: vec![("/etc/ssl/certs".into(), "/etc/ssl/certs".to_owned())],
        };
        let mut args = Args::default();
        args.isolation(true).system(Some(1 << 20)).etc(&view);
        let text: Vec<String> = args
            .into_vec()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = text.join(" ");
        for hidden in [
            "/etc/shadow",
            "/etc/sudoers",
            "/home",
            "/root",
            "/var",
            "docker.sock",
        ] {
            assert!(!joined.contains(hidden), "{hidden} is in {joined}");
        }
        assert!(joined.contains("--unshare-net"));
        assert!(joined.contains("--cap-drop ALL"));
        assert!(joined.contains("--disable-userns"));
        assert!(
            joined.contains("--ro-bind /x/etc-view /etc --ro-bind /etc/ssl/certs /etc/ssl/certs")
        );
        assert!(joined.contains("--ro-bind-try /proc/sys /proc/sys"));
    }

    #[test]
    fn no_allowlisted_name_leaves_etc() {
        for name in AGENT_ETC.iter().chain(GATE_ETC) {
            assert!(
                !name.starts_with('/') && !name.split('/').any(|c| c == ".." || c.is_empty()),
                "{name}"
            );
        }
    }
}
