//! A native bottle's gate roles: each a host process under bubblewrap,
//! in a mount namespace of its own that sees only its part of the state
//! directory.

use std::path::Path;

use super::*;

impl NativeBackend {
    /// A gate role's sandbox: its own files, the sockets, the audit log.
    pub(super) fn gate_args(
        &self,
        p: &NativePrepared,
        role: Role,
        fds: &[i32],
    ) -> Result<Vec<std::ffi::OsString>, BackendError> {
        let dir = &p.dir;
        let etc = native_dir(dir).join("etc");
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        let passwd = etc.join("gate-passwd");
        let group = etc.join("gate-group");
        write(
            &passwd,
            format!("bottle:x:{uid}:{gid}:bot-bottle gate:/var/lib/bottle:/usr/sbin/nologin\n")
                .as_bytes(),
        )?;
        write(&group, format!("bottle:x:{gid}:\n").as_bytes())?;
        let paths = GatePaths::standard();
        let exe = std::env::current_exe()?;
        // Each role's own configuration directory, read-only in its /etc.
        let (config_dir, inside) = match role {
            Role::Git => (dir.git_gate_dir(), paths.git_config_dir.clone()),
            _ => (dir.gate_dir(), paths.egress_dir.clone()),
        };
        let inside = inside.to_string_lossy().into_owned();
        let view = etc::make(
            Path::new("/etc"),
            &native_dir(dir).join(format!("etc-view-{}", role.as_str())),
            bwrap::GATE_ETC,
            etc::Links::Follow,
            &[
                (passwd, "/etc/passwd".to_owned()),
                (group, "/etc/group".to_owned()),
                (config_dir, inside.clone()),
            ],
        )?;
        let mut a = bwrap::Args::default();
        a.isolation(false)
            .system(None)
            .etc(&view)
            // The binary where the git gate's hooks run it; the host's
            // /usr/local is not shown.
            .args(["--tmpfs", "/usr/local"])
            .ro_bind(&exe, GATE_BINARY)
            .bind(&dir.socket_dir(), SOCKET_DIR)
            .bind(&dir.audit_log(), &paths.audit_log);
        let config = match role {
            Role::Git => {
                a.bind(&dir.git_dir(), &paths.git_dir);
                Path::new(&inside).join(GIT_CONFIG_FILE)
            }
            _ => {
                // Requests and the control socket.
                a.bind(&dir.supervise_dir(), &paths.supervise_dir);
                Path::new(&inside).join(EGRESS_CONFIG_FILE)
            }
        };
        for fd in fds {
            a.arg("--add-seccomp-fd").arg(fd.to_string());
        }
        a.args(["--", GATE_BINARY, "gate"])
            .args(bottle_contract::GateArgs { config }.to_args());
        Ok(a.into_vec())
    }

    /// Starts one gate role; returns its process.
    pub(super) fn spawn_gate(
        &self,
        p: &NativePrepared,
        role: Role,
        secrets: Vec<String>,
    ) -> Result<tokio::process::Child, BackendError> {
        let log_path = native_dir(&p.dir).join(format!("{}.log", role.as_str()));
        let log = std::fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let filters = session::filter_fds(&filters()?)?;
        session::inheritable(&filters)?;
        let raw: Vec<i32> = filters
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .collect();
        let spawned = session::command(
            &p.bwrap,
            [
                ("RUST_LOG", "info"),
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
                ("HOME", "/var/lib/bottle"),
            ],
        )
        .args(self.gate_args(p, role, &raw)?)
        .stdin(if secrets.is_empty() {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::piped()
        })
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn();
        drop(filters);
        let mut child =
            spawned.map_err(|e| BackendError::GateFailed(format!("{}: {e}", p.bwrap.display())))?;
        if let Some(pid) = child.id().and_then(Launcher::of) {
            Processes::add(&p.dir, role, pid)?;
        }
        if let Some(mut stdin) = child.stdin.take() {
            // The route secrets: on the gate's standard input, then closed;
            // never in a file, the environment or argv.
            let payload = serde_json::to_vec(&bottle_contract::config::Secrets { secrets })
                .map_err(|e| BackendError::GateFailed(e.to_string()))?;
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            });
        }
        Ok(child)
    }
}
