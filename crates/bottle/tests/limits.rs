//! End to end: the limits a bottle runs under are in force. The agent's
//! root is read-only, it runs as a uid that is not the launcher's, its
//! cgroups bound memory, processes and CPU, its files and /tmp are
//! bounded, and a process that goes past a limit is stopped while the
//! bottle keeps working. The gates have limits and health checks too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

const LIMITS: &str = r#"
echo uid=$(id -u)
echo nofile=$(ulimit -n)
echo nproc=$(ulimit -u)
touch /usr/local/x 2>/dev/null; echo root_rc=$?
touch /etc/x 2>/dev/null; echo etc_rc=$?
chmod 0600 /dev/null 2>/dev/null; echo devchmod_rc=$?
touch /home/x 2>/dev/null; echo home_root_rc=$?
touch /run/bot-bottle/x 2>/dev/null; echo trust_rc=$?
touch /tmp/x && touch $HOME/x && touch /workspace/x; echo writable_rc=$?
# The kernel's settings, other namespaces and the host's secrets in /etc.
echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; echo sysctl_rc=$?
unshare -U true 2>/dev/null; echo userns_rc=$?
unshare -m true 2>/dev/null; echo mountns_rc=$?
ls /etc/ssl/private >/dev/null 2>&1; echo ssl_private_rc=$?
dd if=/dev/zero of=/dev/shm/fill bs=1M count=100 2>/dev/null; echo shm_rc=$?; rm -f /dev/shm/fill
# cgroup v1 or v2, whichever the kernel gives (gVisor emulates its own).
read_cg() { for f in "$@"; do [ -r "$f" ] && { cat "$f"; return; }; done; echo none; }
echo cg_memory=$(read_cg /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max)
echo cg_pids=$(read_cg /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max)
echo cg_cpu=$(read_cg /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max | cut -d' ' -f1)
# Past the process limit: forks fail, nothing else does.
python3 -c '
import os, time
pids = []
try:
    for i in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        pids.append(pid)
except OSError as e:
    print("fork_errno=%d" % e.errno)
print("forked=%d" % len(pids))
for p in pids:
    os.kill(p, 9)
    os.waitpid(p, 0)
' 
# Past the memory limit: the process is killed, the bottle lives. (Under
# gVisor the memory limit is the whole sandbox's, and going past it stops
# the sandbox: docs/security.md says so, and this is not tried there.)
if [ "$RUNTIME" = runc ]; then
  python3 -c 'x = bytearray(400 << 20); print(len(x))' >/dev/null 2>&1; echo hog_rc=$?
fi
echo memtotal=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
# Past /tmp's size: writing fails.
dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>/dev/null; echo fill_rc=$?
rm -f /tmp/fill
"#;

#[test]
fn limits_are_in_force_and_a_process_past_them_is_stopped() {
    let Some(world) = world() else { return };
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["resources"] = serde_json::json!({
        "memory": "256m", "pids": 64, "cpus": 0.5, "tmp": "32m", "nofile": 2048,
        "gate": { "cpus": 0.75, "memory": "128m" }
    });
    world.write_manifest(&manifest);
    let script = format!(
        "RUNTIME={}\n{LIMITS}{}echo ID=$BOTTLE_IDENTITY\nsleep 60\n",
        test_runtime(),
        curl("after", "https://allowed.test/after")
    );
    let mut cmd = world.command();
    cmd.args(["start", "probe", "-y", "--rm", "--", "bash", "-c", &script]);
    let running = Running::spawn_capturing(&mut cmd);
    let probe = &running.probe;
    assert_eq!(probe.get("uid"), "10001", "not the launcher's uid");
    assert_eq!(probe.get("nofile"), "2048");
    assert_ne!(probe.get("root_rc"), "0", "the root is read-only");
    assert_ne!(probe.get("etc_rc"), "0");
    assert_ne!(probe.get("trust_rc"), "0", "the trust stores are root's");
    assert_eq!(
        probe.get("writable_rc"),
        "0",
        "/tmp, home and /workspace are writable"
    );
    for key in ["sysctl_rc", "mountns_rc", "ssl_private_rc", "home_root_rc"] {
        assert_ne!(
            probe.get(key),
            "0",
            "{key}: {}",
            stdout(&running.probe.output)
        );
    }
    // A user namespace is refused by runc's and native's seccomp filters;
    // gVisor's kernel makes one inside its own sandbox, which is fine.
    if test_runtime() == "runc" || native() {
        assert_ne!(probe.get("userns_rc"), "0", "a user namespace was made");
    }
    // Launched by root too, a native agent is not root outside its
    // namespaces: the host's device nodes in its /dev are not its own.
    assert_ne!(
        probe.get("devchmod_rc"),
        "0",
        "the host's /dev/null changed mode"
    );
    // /dev/shm is bounded (Docker's 64 MiB, native's `tmp`); gVisor's is
    // the sandbox's memory.
    if test_runtime() == "runc" || native() {
        assert_ne!(probe.get("shm_rc"), "0", "/dev/shm is bounded");
    }
    let forked: u32 = probe.get("forked").parse().unwrap();
    assert!(forked < 64, "the pids limit stopped the forks at {forked}");
    assert_eq!(probe.get("fork_errno"), "11", "fork failed with EAGAIN");
    if test_runtime() == "runc" {
        assert_ne!(probe.get("hog_rc"), "0", "the memory hog was stopped");
    } else {
        assert_eq!(
            probe.get("memtotal"),
            (256u64 << 10).to_string(),
            "gVisor's memory is the limit"
        );
    }
    assert_ne!(probe.get("fill_rc"), "0", "/tmp is bounded");
    assert_eq!(
        probe.get("after"),
        "200",
        "the bottle still works: {}",
        probe.get("after_err")
    );
    // Where the kernel's cgroups are visible, they say the same.
    if probe.get("cg_memory") != "none" && test_runtime() == "runc" {
        assert_eq!(probe.get("cg_memory"), (256u64 << 20).to_string());
        assert_eq!(probe.get("cg_pids"), "64");
        assert_eq!(probe.get("cg_cpu"), "50000", "0.5 of a 100 ms period");
    }

    if native() {
        // No engine: the limits above are rlimits the shim set; CPU and
        // the gates' limits are the docker backend's (docs/security.md).
        drop(running);
        return;
    }
    // The engine's view of both kinds of container.
    let agent = running.agent();
    let gate = format!("{}-gate", running.identity);
    let field = |container: &str, f: &str| docker(&["inspect", "-f", f, container]);
    assert_eq!(field(&agent, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(field(&agent, "{{.HostConfig.NanoCpus}}"), "500000000");
    let pids_limit: i64 = field(&agent, "{{.HostConfig.PidsLimit}}").parse().unwrap();
    assert!(
        pids_limit == 64 || test_runtime() != "runc" && pids_limit > 64,
        "{pids_limit}"
    );
    assert_ne!(field(&agent, "{{.HostConfig.CpuShares}}"), "0");
    assert!(field(&agent, "{{json .Config.Healthcheck}}").contains("health"));
    assert_eq!(field(&gate, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(field(&gate, "{{.HostConfig.NanoCpus}}"), "750000000");
    assert_eq!(
        field(&gate, "{{.HostConfig.Memory}}"),
        (128u64 << 20).to_string()
    );
    assert!(field(&gate, "{{json .Config.Healthcheck}}").contains("egress.sock"));
    drop(running);
}

/// `list` shows whether each gate is healthy, from its health check.
#[test]
fn list_shows_the_gates_health() {
    let Some(world) = world() else { return };
    let running = Running::spawn(
        world
            .command()
            .args(["start", "probe", "-y", "--rm", "--", "bash", "-c"])
            .arg("echo ID=$BOTTLE_IDENTITY; sleep 120"),
    );
    let healthy = wait_until(std::time::Duration::from_secs(60), || {
        let out = world
            .command()
            .args(["list", "--format", "json"])
            .output()
            .unwrap();
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        rows.as_array()
            .into_iter()
            .flatten()
            .any(|r| r["identity"] == running.identity.as_str() && r["health"]["gate"] == "healthy")
    });
    assert!(healthy, "the gate never reported healthy");
    let text = world.command().arg("list").output().unwrap();
    assert!(stdout(&text).contains("gate:healthy"), "{}", stdout(&text));
    drop(running);
}
