//! A native bottle's agent sandbox: its bubblewrap command line and its
//! environment.

use std::path::PathBuf;

use bottle_manifest::plan::{
    AGENT_CA_PATH, AGENT_HOME, AGENT_UID, AGENT_USER, NODE_PRELOAD, Plan, TRUST_BUNDLE, WORKDIR,
};

use super::*;

impl NativeBackend {
    /// The agent's sandbox around `command`.
    pub(super) fn agent_args(
        &self,
        p: &NativePrepared,
        agent: &NativeAgent,
        run: &AgentRun<'_>,
        fds: &[i32],
    ) -> Result<Vec<std::ffi::OsString>, BackendError> {
        let plan = &p.plan;
        let dir = &p.dir;
        let etc = native_dir(dir).join("etc");
        let passwd = etc.join("passwd");
        let group = etc.join("group");
        write(
            &passwd,
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n{AGENT_USER}:x:{AGENT_UID}:{AGENT_UID}:{AGENT_USER}:{AGENT_HOME}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            )
            .as_bytes(),
        )?;
        write(
            &group,
            format!("root:x:0:\n{AGENT_USER}:x:{AGENT_UID}:\nnogroup:x:65534:\n").as_bytes(),
        )?;
        let hosts = etc.join("hosts");
        write(&hosts, bwrap::AGENT_HOSTS.as_bytes())?;
        let preload = etc.join("node-proxy.cjs");
        write(&preload, crate::sandbox::NODE_PROXY_JS.as_bytes())?;
        let hostname = etc.join("hostname");
        write(&hostname, b"bottle\n")?;
        let mut extra: Vec<(PathBuf, String)> = vec![
            (passwd, "/etc/passwd".to_owned()),
            (group, "/etc/group".to_owned()),
            (hosts, "/etc/hosts".to_owned()),
            (hostname, "/etc/hostname".to_owned()),
            (preload, NATIVE_NODE_PRELOAD.to_owned()),
            (dir.ca_cert(), AGENT_CA_PATH.to_owned()),
            (trust_bundle(dir), TRUST_BUNDLE.to_owned()),
        ];
        extra.extend(run.provisioned.iter().cloned());
        let view = etc::make(
            Path::new("/etc"),
            &native_dir(dir).join("etc-view"),
            bwrap::AGENT_ETC,
            etc::Links::Keep,
            &extra,
        )?;
        let exe = std::env::current_exe()?;
        let mut a = bwrap::Args::default();
        a.isolation(true)
            .args([
                "--uid",
                &AGENT_UID.to_string(),
                "--gid",
                &AGENT_UID.to_string(),
            ])
            .args(["--hostname", "bottle"])
            .system(Some(plan.resources.tmp_bytes))
            .etc(&view)
            .args(["--size", "1048576", "--tmpfs", "/run"])
            .ro_bind(&dir.socket_dir(), SOCKET_DIR)
            .ro_bind(&exe, SHIM);
        if let Some(claude) = &agent.claude {
            a.ro_bind(claude, CLAUDE_BINARY);
        }
        a.bind(&home_dir(dir), AGENT_HOME)
            .bind(&workspace_dir(dir), WORKDIR)
            .args(["--chdir", WORKDIR])
            // Nothing but the named mounts is writable: not the root's
            // own tmpfs (a /home beside /home/agent, a stray directory).
            .args(["--remount-ro", "/"]);
        for fd in fds {
            a.arg("--add-seccomp-fd").arg(fd.to_string());
        }
        a.arg("--");
        let shim = crate::sandbox::ShimArgs {
            nproc: u64::try_from(plan.resources.pids).ok(),
            data_limit: Some(plan.resources.memory_bytes),
            nofile: Some(plan.resources.nofile),
            // Launched by root, the agent is root outside its namespaces:
            // Landlock must hold, or it does not start.
            landlock: Some(if nix::unistd::getuid().is_root() {
                crate::sandbox::Landlock::Required
            } else {
                crate::sandbox::Landlock::BestEffort
            }),
            ..crate::sandbox::shim_args(plan, SOCKET_DIR, self.settings.gate_timeout, run.command)
        };
        a.args(crate::sandbox::shim_argv(SHIM, &shim));
        Ok(a.into_vec())
    }
}

/// The agent's environment in a native sandbox: a login's basics, then
/// the plan's (see [`crate::sandbox::agent_env`]).
pub(super) fn agent_env(plan: &Plan, tty: bool) -> Result<Vec<(String, String)>, BackendError> {
    let mut env = vec![
        (
            "PATH".to_owned(),
            format!("{CLAUDE_DIR}:/usr/local/bin:/usr/bin:/bin"),
        ),
        ("HOME".to_owned(), AGENT_HOME.to_owned()),
        ("USER".to_owned(), AGENT_USER.to_owned()),
        ("LOGNAME".to_owned(), AGENT_USER.to_owned()),
        ("SHELL".to_owned(), "/bin/bash".to_owned()),
    ];
    // The host's /usr is read-only here: Node's preload is in the
    // sandbox's own /etc instead.
    env.extend(
        crate::sandbox::agent_env(plan, tty)?
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "NODE_OPTIONS" => {
                    let value = value.replace(NODE_PRELOAD, NATIVE_NODE_PRELOAD);
                    (name, value)
                }
                _ => (name, value),
            }),
    );
    Ok(env)
}

/// The agent's trust bundle: the system's roots and the bottle's CA.
pub(super) fn trust_bundle(dir: &BottleDir) -> PathBuf {
    native_dir(dir).join("trust").join("ca-certificates.crt")
}
