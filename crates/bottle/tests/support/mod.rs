//! Shared harness of the end-to-end tests: real Docker, the real `bottle`
//! binary, and an "internet" made of containers on a network the test
//! creates. Every resource a test makes is removed when it is dropped,
//! also when the test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use std::time::{Duration, Instant};

pub const BASE_IMAGE: &str = "bot-bottle/base:bookworm";
pub const ORIGIN_IMAGE: &str = "bot-bottle-test/origin:latest";
pub const IDENTITY_LABEL: &str = "bot-bottle.identity";

/// The `bottle` binary under test.
pub fn bottle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bottle"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The runner's cache home (`XDG_CACHE_HOME`, else `~/.cache`), shared
/// by every world: Claude Code is fetched into it once.
pub fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        })
}

/// The Claude Code version bot-bottle pins.
pub fn pinned_claude() -> String {
    let pin: serde_json::Value =
        serde_json::from_str(include_str!("../../../../images/agent/claude.json")).unwrap();
    pin["claude"].as_str().unwrap().to_owned()
}

/// Whether Docker tests can run. Under `CI=true` a missing engine is a
/// failure, never a skip.
pub fn docker_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !available {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and the Docker engine is not reachable: Docker tests must run in CI");
        }
        eprintln!("skipping: the Docker engine is not reachable");
    }
    available
}

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker ARGS`, ignoring failure.
pub fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// Makes the images the tests need, once per test process: the base (by
/// `scripts/base-image` when missing), the origin, and the bottle images
/// (by starting one bottle, which builds them).
pub fn ensure_images() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    if Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| !s.success())
    {
        let status = Command::new(repo_root().join("scripts/base-image"))
            .status()
            .expect("run scripts/base-image");
        assert!(status.success(), "scripts/base-image failed");
    }
    // Claude Code, as `start` would fetch it, into the runner's cache
    // (CI's set-up has fetched it already: no test reaches PyPI there).
    let fetched = Command::new(bottle_bin())
        .args(["update-agent", "--fetch"])
        .env("XDG_CACHE_HOME", cache_home())
        // The pin bot-bottle ships, as in every world.
        .env("XDG_CONFIG_HOME", "/nonexistent/bot-bottle-test-config")
        .env_remove("BOTTLE_INSTALL_CLAUDE")
        .env_remove("BOTTLE_CLAUDE_BIN")
        .output()
        .expect("run bottle update-agent --fetch");
    assert!(
        fetched.status.success(),
        "bottle update-agent --fetch failed: {}",
        stderr(&fetched)
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/origin");
    docker(&[
        "build",
        "-q",
        "-t",
        ORIGIN_IMAGE,
        fixtures.to_str().unwrap(),
    ]);

    let world = World::new();
    let out = world.bottle("probe", &["true"]);
    assert!(
        out.status.success(),
        "first bottle failed: {}",
        stderr(&out)
    );
    *done = true;
}

/// An "internet" of our own: a network, an origin container answering as
/// `allowed.test` and `forbidden.test`, and a temporary home, state
/// directory and manifest for the bottles of one test.
pub struct World {
    pub network: String,
    pub origin: String,
    pub origin_ip: String,
    pub gateway: String,
    /// The test network's subnet (a native gate's `allow_private`).
    pub subnet: String,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let suffix = random_suffix();
        let network = format!("bbtest-{suffix}");
        let origin = format!("bbtest-origin-{suffix}");
        docker(&["network", "create", "--label", "bbtest=1", &network]);
        let world_dir = tempfile::tempdir().unwrap();
        let certs = world_dir.path().join("certs");
        make_certs(&certs);
        let mut world = World {
            network: network.clone(),
            origin: origin.clone(),
            origin_ip: String::new(),
            gateway: String::new(),
            subnet: String::new(),
            dir: world_dir,
        };
        docker(&[
            "run",
            "-d",
            "--name",
            &origin,
            "--label",
            "bbtest=1",
            "--network",
            &network,
            "--network-alias",
            "allowed.test",
            "--network-alias",
            "forbidden.test",
            "--network-alias",
            "other.allowed.test",
            "--network-alias",
            "route.test",
            "--network-alias",
            "model.test",
            // Remote Control talks to Anthropic's own API alone: the
            // origin answers for that name on the test's own network.
            "--network-alias",
            "api.anthropic.com",
            "-v",
            &format!("{}:/certs:ro", certs.display()),
            ORIGIN_IMAGE,
        ]);
        // Ready when nginx answers on its TLS port.
        let ready = wait_until(Duration::from_secs(30), || {
            Command::new("docker")
                .args([
                    "exec",
                    &origin,
                    "bash",
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/443 && exec 4<>/dev/tcp/127.0.0.1/8080",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !ready {
            let logs = Command::new("docker")
                .args(["logs", &origin])
                .output()
                .unwrap();
            panic!(
                "the origin never came up: {}",
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        world.origin_ip = docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &origin,
        ]);
        world.gateway = docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &network,
        ]);
        world.subnet = docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            &network,
        ]);
        std::fs::write(world.hosts(), "127.0.0.1 localhost\n").unwrap();
        world.add_host(
            &world.origin_ip.clone(),
            &[
                "allowed.test",
                "forbidden.test",
                "other.allowed.test",
                "route.test",
                "model.test",
                "api.anthropic.com",
            ],
        );
        std::fs::create_dir_all(world.home()).unwrap();
        world.write_manifest(&world.manifest(&[]));
        world
    }

    /// The names a native gate resolves (the `/etc/hosts` its launcher
    /// sees; a Docker gate finds the network's aliases instead).
    pub fn hosts(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// Everything a backend holds for `identity`: on Docker what carries
    /// its label (containers, networks, volumes); on the native backend
    /// its processes (found in /proc) and its kept data (workspace, home).
    pub fn parts(&self, identity: &str) -> Vec<String> {
        if !native() {
            return labelled_resources(identity);
        }
        let mut found = running_parts(identity);
        for data in ["home", "workspace"] {
            let dir = self.state_root().join(identity).join("native").join(data);
            if dir.exists() {
                found.push(format!("directory {}", dir.display()));
            }
        }
        found
    }

    /// The running `role` (`agent`, `gate`, `git`) of this world's bottle
    /// of `agent`, if there is one: its identity, and its container (Docker)
    /// or process id (native).
    pub fn running(&self, agent: &str, role: &str) -> Option<(String, String)> {
        if !native() {
            let id = self.containers(&[
                &format!("label=bot-bottle.role={role}"),
                &format!("label=bot-bottle.agent={agent}"),
                "status=running",
            ]);
            let id = id.lines().next()?.to_owned();
            let identity = docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"bot-bottle.identity\"}}",
                &id,
            ]);
            return Some((identity, id));
        }
        for entry in std::fs::read_dir(self.state_root()).ok()?.flatten() {
            let dir = entry.path();
            let Ok(meta) = std::fs::read(dir.join("metadata.json")) else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap_or_default();
            if meta["agent"] != agent {
                continue;
            }
            let Ok(record) = std::fs::read(dir.join("native/processes.json")) else {
                continue;
            };
            let record: serde_json::Value = serde_json::from_slice(&record).unwrap_or_default();
            let Some(pid) = record["roles"][role]
                .as_str()
                .and_then(|p| p.split(':').next())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                return Some((
                    entry.file_name().to_string_lossy().into_owned(),
                    pid.to_owned(),
                ));
            }
        }
        None
    }

    /// Kills what [`World::running`] found, as a crash would (SIGKILL).
    pub fn kill(&self, id: &str) {
        if native() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(id.parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        } else {
            docker(&["kill", id]);
        }
    }

    /// Adds `names` for `ip` to [`World::hosts`], in place (the file is
    /// bind-mounted by inode).
    pub fn add_host(&self, ip: &str, names: &[&str]) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.hosts())
            .unwrap();
        writeln!(file, "{ip} {}", names.join(" ")).unwrap();
    }

    /// The test CA, which the manifest's `upstream_ca` makes the gate trust.
    pub fn test_ca(&self) -> PathBuf {
        self.dir.path().join("certs").join("ca.pem")
    }

    /// The secret of the route to `route.test`: in the launcher's
    /// environment only.
    pub fn secret(&self) -> String {
        format!("bbtest-secret-{}-Zq9", self.network)
    }

    /// The default test manifest with `extra_allow` added. On the native
    /// backend the gate is the host's, so the test network is a private
    /// range it may reach, not a Docker network it joins.
    pub fn manifest(&self, extra_allow: &[&str]) -> serde_json::Value {
        let mut manifest = default_manifest(&self.network, &self.test_ca(), extra_allow);
        if native() {
            let bottle = manifest["bottles"]["test"].as_object_mut().unwrap();
            bottle.remove("gate_network");
            bottle.remove("runtime");
            bottle.insert("allow_private".into(), serde_json::json!([self.subnet]));
        }
        manifest
    }

    /// Lines the origin logged for requests it received (`REQUEST {...}`).
    pub fn origin_requests(&self) -> Vec<serde_json::Value> {
        docker(&["logs", &self.origin])
            .lines()
            .filter_map(|l| l.strip_prefix("REQUEST "))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Ids of this world's containers (by the state directory they name)
    /// that match every `docker ps` filter given.
    pub fn containers(&self, filters: &[&str]) -> String {
        let mut args = vec!["ps", "-q"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        let root = self.state_root().to_string_lossy().into_owned();
        docker(&args)
            .lines()
            .filter(|id| {
                docker(&[
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"bot-bottle.state\"}}",
                    id,
                ])
                .starts_with(&root)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn state_root(&self) -> PathBuf {
        self.dir.path().join("state").join("bot-bottle")
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("bottle.json")
    }

    pub fn write_manifest(&self, manifest: &serde_json::Value) {
        std::fs::write(
            self.manifest_path(),
            serde_json::to_vec_pretty(manifest).unwrap(),
        )
        .unwrap();
    }

    /// A `bottle` command set up for this world. On the native backend
    /// the launcher runs in a mount namespace of its own whose
    /// `/etc/hosts` is [`World::hosts`]: its gate resolves the test's
    /// names as a Docker gate does on the test network.
    pub fn command(&self) -> Command {
        let mut cmd = if native() {
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            ])
            .arg(self.hosts())
            .arg(bottle_bin());
            cmd
        } else {
            Command::new(bottle_bin())
        };
        cmd.env("HOME", self.home())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("BOTTLE_MANIFEST", self.manifest_path())
            // The pinned Claude Code, fetched once into the runner's own
            // cache (see `ensure_images`).
            .env("XDG_CACHE_HOME", cache_home())
            .env(SECRET_VAR, self.secret())
            .env("NO_COLOR", "1")
            .env("BOTTLE_BACKEND", test_backend())
            .stdin(Stdio::null());
        cmd
    }

    /// `bottle start AGENT -y --rm -- CMD…`, waited for.
    pub fn bottle(&self, agent: &str, cmd: &[&str]) -> Output {
        self.command()
            .args(["start", agent, "-y", "--rm", "--"])
            .args(cmd)
            .output()
            .expect("run bottle")
    }

    /// Runs a shell script in a bottle and parses its `key=value` lines.
    pub fn probe(&self, agent: &str, script: &str) -> Probe {
        let out = self.bottle(agent, &["bash", "-c", script]);
        Probe::new(out)
    }

    /// [`World::probe`], keeping the bottle's state (its audit log) for
    /// the test to read; the world removes its volumes when dropped.
    pub fn probe_keeping_state(&self, agent: &str, script: &str) -> Probe {
        let out = self
            .command()
            .args(["start", agent, "-y", "--", "bash", "-c", script])
            .output()
            .expect("run bottle");
        Probe::new(out)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Bottles started without --rm keep their volumes: remove them.
        if let Ok(entries) = std::fs::read_dir(self.state_root()) {
            for entry in entries.flatten() {
                let identity = entry.file_name().to_string_lossy().into_owned();
                for id in docker(&[
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("label={IDENTITY_LABEL}={identity}"),
                ])
                .lines()
                {
                    docker_quiet(&["volume", "rm", id]);
                }
            }
        }
        docker_quiet(&["rm", "-f", &self.origin]);
        docker_quiet(&["network", "rm", &self.network]);
    }
}

/// The agent runtime the end-to-end tests use: `runc` unless
/// `BBTEST_RUNTIME` says otherwise (`runsc` runs the suite under gVisor;
/// `auto` lets the engine decide). Pinned so that a machine's engine
/// configuration cannot change what CI tests.
pub fn test_runtime() -> String {
    std::env::var("BBTEST_RUNTIME").unwrap_or_else(|_| "runc".to_owned())
}

/// The backend the end-to-end tests run on: `docker` unless
/// `BBTEST_BACKEND` says `native` (the suite is one, run once per
/// backend).
pub fn test_backend() -> String {
    std::env::var("BBTEST_BACKEND").unwrap_or_else(|_| "docker".to_owned())
}

/// Whether the suite runs on the native backend.
pub fn native() -> bool {
    test_backend() == "native"
}

/// For a test of something only Docker has (containers by name, image
/// builds, gVisor): says so and returns true on another backend.
pub fn docker_only(what: &str) -> bool {
    if native() {
        eprintln!(
            "not on the native backend: {what} (a Docker-only feature; its test runs in the docker pass)"
        );
        return true;
    }
    false
}

/// The launcher's variable holding the route secret.
pub const SECRET_VAR: &str = "BBTEST_ROUTE_TOKEN";

/// The default test manifest: agent `probe` (and `sigint`, `killgate`) in
/// a bottle that allows `allowed.test` on the default ports (and 80 for
/// CONNECT, 8444 where the certificate is untrusted, 8081 where the origin
/// answers in raw HTTP/1.1 of its own), `route.test` with a
/// credential route, the gate on the test's network trusting the test CA.
pub fn default_manifest(network: &str, ca: &Path, extra_allow: &[&str]) -> serde_json::Value {
    let mut allow = vec![
        "allowed.test",
        "allowed.test:80",
        "allowed.test:8444",
        "allowed.test:8081",
        "other.allowed.test:8080",
        "route.test",
    ];
    allow.extend_from_slice(extra_allow);
    serde_json::json!({
        "agents": {
            "probe": { "bottle": "test", "command": ["true"] },
            "sigint": { "bottle": "test", "command": ["sleep", "120"] },
            "killgate": { "bottle": "test", "command": ["true"] }
        },
        "bottles": {
            "test": {
                                "allow": allow,
                "gate_network": network,
                "runtime": test_runtime(),
                "egress_proxy": {
                    "upstream_ca": ca,
                    "routes": [{ "host": "route.test", "token_ref": SECRET_VAR }]
                },
                "resources": { "memory": "512m", "pids": 256 }
            }
        }
    })
}

/// Output of a probe script: `key=value` lines.
pub struct Probe {
    pub output: Output,
    pub values: HashMap<String, String>,
}

impl Probe {
    pub fn new(output: Output) -> Probe {
        let values = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Probe { output, values }
    }

    pub fn get(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "probe printed no {key}=; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&self.output.stdout),
                stderr(&self.output)
            )
        })
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The identity `start -y` announced on stderr.
pub fn identity_from(stderr_text: &str) -> Option<String> {
    stderr_text
        .lines()
        .find_map(|l| l.split("starting ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// Everything Docker holds with `identity`'s label: containers, networks,
/// volumes.
pub fn labelled_resources(identity: &str) -> Vec<String> {
    let filter = format!("label={IDENTITY_LABEL}={identity}");
    let mut found = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-a", "-q", "--filter", &filter]),
        ("network", vec!["network", "ls", "-q", "--filter", &filter]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
    ] {
        for id in docker(&args).lines().filter(|l| !l.is_empty()) {
            found.push(format!("{kind} {id}"));
        }
    }
    found
}

/// What of `identity` must not outlive its launcher: on Docker its
/// containers and networks (volumes are kept for resume unless `--rm`);
/// on the native backend every process whose command line names the
/// bottle's state directory, found in /proc, not in bot-bottle's record.
pub fn running_parts(identity: &str) -> Vec<String> {
    if native() {
        return processes_naming(&format!("/{identity}/"));
    }
    labelled_resources(identity)
        .into_iter()
        .filter(|r| !r.starts_with("volume "))
        .collect()
}

/// Processes (but this one) whose command line contains `needle`.
pub fn processes_naming(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // The guardian names the bottle too, and waits for its launcher.
        if cmdline.contains(needle) && !cmdline.contains(" reap ") {
            found.push(format!("process {name}: {cmdline}"));
        }
    }
    found
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A test CA, the origin's certificate signed by it (for every name the
/// origin answers to), and an untrusted certificate from another CA.
fn make_certs(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "bbtest CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let names: Vec<String> = [
        "allowed.test",
        "forbidden.test",
        "other.allowed.test",
        "route.test",
        "model.test",
        "api.anthropic.com",
        "localhost",
    ]
    .map(String::from)
    .to_vec();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names.clone())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("origin.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("origin.key"), key.serialize_pem()).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let untrusted = CertificateParams::new(names)
        .unwrap()
        .self_signed(&other_key)
        .unwrap();
    std::fs::write(dir.join("untrusted.pem"), untrusted.pem()).unwrap();
    std::fs::write(dir.join("untrusted.key"), other_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("big.bin"), b"small in tests\n").unwrap();
    // nginx runs as www-data in the origin.
    for entry in std::fs::read_dir(dir).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let path = entry.unwrap().path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

pub const UPSTREAM_IMAGE: &str = "bot-bottle-test/upstream:latest";
/// The upstream's URL as the bottle knows it.
pub const UPSTREAM_URL: &str = "ssh://git@upstream.test/srv/git/repo.git";

/// A git upstream of our own on the world's network: sshd accepting only
/// the test key, a bare repository, and a checkout of it on the host.
pub struct Upstream {
    pub container: String,
    pub key: PathBuf,
    /// `upstream.test ssh-ed25519 AAAA…`.
    pub host_key: String,
    pub checkout: PathBuf,
}

impl Upstream {
    pub fn new(world: &World) -> Upstream {
        static BUILT: OnceLock<()> = OnceLock::new();
        BUILT.get_or_init(|| {
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream");
            docker(&[
                "build",
                "-q",
                "-t",
                UPSTREAM_IMAGE,
                fixtures.to_str().unwrap(),
            ]);
        });
        let keys = world.dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let key = keys.join("id_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "bbtest", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::copy(keys.join("id_ed25519.pub"), keys.join("authorized_keys")).unwrap();
        let container = format!("{}-upstream", world.origin);
        docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            "bbtest=1",
            "--network",
            &world.network,
            "--network-alias",
            "upstream.test",
            "-v",
            &format!("{}:/keys:ro", keys.display()),
            UPSTREAM_IMAGE,
        ]);
        assert!(wait_for_port(&container, 22), "sshd never came up");
        let public = docker(&[
            "exec",
            &container,
            "cat",
            "/etc/ssh/ssh_host_ed25519_key.pub",
        ]);
        let mut fields = public.split_whitespace();
        let host_key = format!(
            "upstream.test {} {}",
            fields.next().unwrap(),
            fields.next().unwrap()
        );
        // A checkout on the host, cloned over the network we made, whose
        // origin names the upstream as the bottle knows it.
        let ip = docker(&[
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                world.network
            ),
            &container,
        ]);
        // A native git gate resolves it as its launcher does.
        world.add_host(&ip, &["upstream.test"]);
        let checkout = world.dir.path().join("checkout");
        let ssh = format!(
            "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            key.display()
        );
        let clone = Command::new("git")
            .args(["clone", "-q", &format!("ssh://git@{ip}/srv/git/repo.git")])
            .arg(&checkout)
            .env("GIT_SSH_COMMAND", &ssh)
            .output()
            .unwrap();
        assert!(
            clone.status.success(),
            "{}",
            String::from_utf8_lossy(&clone.stderr)
        );
        git(&checkout, &["remote", "set-url", "origin", UPSTREAM_URL]);
        std::fs::write(checkout.join("notes.txt"), "untracked but not ignored\n").unwrap();
        std::fs::write(checkout.join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(checkout.join("target")).unwrap();
        std::fs::write(checkout.join("target/build.o"), "ignored build output\n").unwrap();
        Upstream {
            container,
            key,
            host_key,
            checkout,
        }
    }

    /// The upstream's refs: `refname -> id`.
    pub fn refs(&self) -> HashMap<String, String> {
        docker(&[
            "exec",
            "-u",
            "git",
            &self.container,
            "git",
            "-C",
            "/srv/git/repo.git",
            "show-ref",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect()
    }

    /// The manifest's git entry for this upstream.
    pub fn entry(&self, host_key: Option<&str>) -> serde_json::Value {
        let mut entry = serde_json::json!({
            "Name": "origin",
            "Upstream": UPSTREAM_URL,
            "IdentityFile": self.key,
        });
        if let Some(line) = host_key {
            entry["HostKey"] = line.into();
        }
        entry
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        docker_quiet(&["rm", "-f", &self.container]);
    }
}

/// `git ARGS` in `dir`, returning stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A world of its own for a test, or `None` (skip) where Docker is not
/// available and CI is not asking for it.
pub fn world() -> Option<World> {
    if !docker_available() {
        return None;
    }
    ensure_images();
    Some(World::new())
}

/// A shell snippet running `curl ARGS` through the proxy and printing
/// `NAME=<status>`, `NAME_rc=`, `NAME_body=` (first 600 bytes) and
/// `NAME_err=` for [`Probe`].
pub fn curl(name: &str, args: &str) -> String {
    format!(
        "out=$(curl -sS -m 10 -o /tmp/{name}.body -w '%{{http_code}}' {args} 2>/tmp/{name}.err); echo {name}_rc=$?; echo {name}=$out; \
         echo {name}_body=$(head -c 600 /tmp/{name}.body | tr '\\n' ' '); echo {name}_err=$(tr '\\n' ' ' < /tmp/{name}.err)\n"
    )
}

/// Pid 1 of a native bottle's sandbox for `container` (`IDENTITY-agent`,
/// `IDENTITY-gate`, `IDENTITY-git`): the child of the bubblewrap process
/// that binds that part's own directory.
pub fn native_pid1(container: &str) -> Option<u32> {
    let (identity, part) = container.rsplit_once('-')?;
    let bound = match part {
        "agent" => "native/workspace",
        "gate" => "gate",
        "git" => "gate-git",
        _ => return None,
    };
    let needle = format!("/{identity}/{bound}\0");
    let mut found = None;
    wait_until(Duration::from_secs(30), || {
        found = std::fs::read_dir("/proc").ok().and_then(|d| {
            d.flatten().find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline);
                if !cmdline.starts_with("/usr/bin/bwrap\0") || !cmdline.contains(&needle) {
                    return None;
                }
                let children =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
                children.split_whitespace().next()?.parse().ok()
            })
        });
        found.is_some()
    });
    found
}

/// A command run inside the bottle whose agent is `container`
/// (`IDENTITY-agent`): `docker exec` on Docker; on the native backend
/// `nsenter` into the sandbox's namespaces with the sandbox's environment.
/// `user` is `agent` (the agent's uid) or `root` (a root that sees what
/// the sandbox shows, for searching it).
pub fn exec_in(container: &str, user: &str, args: &[&str]) -> Command {
    // The test's own containers (the origin, the upstream) are Docker's
    // on every backend.
    let bottle_part = ["-agent", "-gate", "-git"]
        .iter()
        .any(|p| container.ends_with(p));
    if !native() || !bottle_part {
        let mut cmd = Command::new("docker");
        cmd.arg("exec")
            .arg("-i")
            .arg("-u")
            .arg(if user == "root" { "0" } else { "10001:10001" })
            .arg(container)
            .args(args);
        return cmd;
    }
    let shim = native_pid1(container)
        .unwrap_or_else(|| panic!("no sandbox of {container} runs"))
        .to_string();
    let mut cmd = Command::new("/usr/bin/nsenter");
    cmd.args(["-t", &shim, "-m", "-p", "-n", "-i", "-u", "-r", "-w"]);
    if user != "root" && container.ends_with("-agent") {
        cmd.args(["-U", "-S", "10001", "-G", "10001"]);
    }
    cmd.arg("--").args(args);
    // A gate is not dumpable: its environment is not readable, and a
    // search needs only a PATH.
    cmd.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
    let environ = std::fs::read(format!("/proc/{shim}/environ")).unwrap_or_default();
    for pair in environ.split(|b| *b == 0) {
        let pair = String::from_utf8_lossy(pair);
        if let Some((k, v)) = pair.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd
}

/// Asserts `needle` is in no file of `container` and in no process's
/// environment or command line. The needle goes in on stdin, never argv.
pub fn assert_nowhere_in(container: &str, needle: &str) {
    let procs = exec_in(
        container,
        "root",
        &[
            "sh",
            "-c",
            "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null",
        ],
    )
    .output()
    .unwrap();
    assert!(!procs.stdout.is_empty(), "read no process of {container}");
    assert!(
        !procs
            .stdout
            .windows(needle.len())
            .any(|w| w == needle.as_bytes()),
        "found in /proc of {container}"
    );
    let mut grep = exec_in(container, "root", &["grep", "-rlsF", "-f", "-", "/"])
        .args([
            "--exclude-dir=proc",
            "--exclude-dir=sys",
            "--exclude-dir=dev",
        ])
        // A native sandbox shows the host's read-only /usr (gigabytes,
        // nothing of the bottle's); a container's /usr is its image's.
        .args(native().then_some("--exclude-dir=usr"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut grep.stdin.take().unwrap(), needle.as_bytes()).unwrap();
    let found = grep.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&found.stdout),
        "",
        "files of {container} holding it"
    );
}

/// Waits until `container` accepts connections on `port`.
pub fn wait_for_port(container: &str, port: u16) -> bool {
    wait_until(Duration::from_secs(30), || {
        exec_in(
            container,
            "agent",
            &["bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")],
        )
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    })
}

/// A bottle left running by its command, so a test can look inside it.
/// Its command must print `ID=$BOTTLE_IDENTITY` once ready; dropping it
/// stops the launcher (SIGTERM), which tears the bottle down.
pub struct Running {
    pub child: std::process::Child,
    pub identity: String,
    /// What the command printed before its `ID=` line, as a probe.
    pub probe: Probe,
}

impl Running {
    /// Spawns `cmd` (a `bottle start …`) and waits for its `ID=` line.
    pub fn spawn(cmd: &mut Command) -> Running {
        Running::spawn_capturing(cmd)
    }

    /// [`Running::spawn`], keeping the `key=value` lines printed before
    /// `ID=` in [`Running::probe`].
    pub fn spawn_capturing(cmd: &mut Command) -> Running {
        use std::io::BufRead;
        use std::os::unix::process::ExitStatusExt;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("BBTEST_DEBUG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut before = String::new();
        let identity = loop {
            let line = lines
                .next()
                .expect("the bottle printed its identity")
                .unwrap();
            if let Some(id) = line.strip_prefix("ID=") {
                break id.to_owned();
            }
            before.push_str(&line);
            before.push('\n');
        };
        // The rest is read and dropped: a bottle whose reader went away
        // would get SIGPIPE on its next line, where the bottle's own
        // output is its launcher's (the native backend).
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let probe = Probe::new(Output {
            status: std::process::ExitStatus::from_raw(0),
            stdout: before.into_bytes(),
            stderr: Vec::new(),
        });
        Running {
            child,
            identity,
            probe,
        }
    }

    /// The agent's container.
    pub fn agent(&self) -> String {
        format!("{}-agent", self.identity)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The scripted MCP client the tests run inside a bottle, as an agent's.
pub const CLIENT: &str = include_str!("../fixtures/mcp_client.py");

/// Runs the MCP client in the bottle with `args`.
pub fn mcp(container: &str, args: &[&str]) -> String {
    let mut child = exec_in(container, "agent", &["python3", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), CLIENT.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mcp client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Calls `tool`; returns its text and whether it was an error.
pub fn call(container: &str, tool: &str, args: serde_json::Value) -> (String, bool) {
    let out = mcp(container, &["call", tool, &args.to_string()]);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        answer["text"].as_str().unwrap().to_owned(),
        answer["error"].as_bool().unwrap(),
    )
}

/// tmux, for the tests that drive a real terminal.
pub fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A detached tmux session of 100×20 running `line`.
pub fn new_session(session: &str, line: &str) {
    tmux(&[
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "100",
        "-y",
        "20",
        line,
    ]);
}

/// `env VARS… bottle`: the world's bottle as a shell line for a tmux pane.
pub fn bottle_line(world: &World) -> String {
    let cmd = world.command();
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    // The world's command as it is (on native, the launcher's own view of
    // /etc/hosts), each word quoted for the pane's shell.
    let quote = |w: &std::ffi::OsStr| format!("'{}'", w.to_string_lossy().replace('\'', r"'\''"));
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    format!("env {} {}", envs.join(" "), words.join(" "))
}
