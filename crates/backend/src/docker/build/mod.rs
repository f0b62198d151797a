//! Building a bottle's own image inside the bottle's policy.
//!
//! An approved image change is code the agent wrote, run as root. So it
//! does not go to the engine's builder (which would run it on a network
//! of the engine's, with no allowlist and no limits). bot-bottle carries
//! the parsed fragment out itself ([`bottle_manifest::fragment`]), step by
//! step, in a container made like the agent's:
//!
//! - **no network** but loopback, where a shim forwards `127.0.0.1:3128`
//!   to a *build gate*: a `bottle gate` of its own, with the bottle's
//!   allowlist, address checks and CA, and no credential — the build
//!   holds no secret, and none is injected into its fetches. Every fetch
//!   is in the bottle's audit log with `"phase": "build"`;
//! - the agent's **memory, process and CPU limits**, every capability
//!   dropped but the few package managers need, `no-new-privileges`, and
//!   a **time limit** (`resources.build.timeout`);
//! - `RUN` steps run with `docker exec` (the proxy and CA variables set
//!   for them alone); `ENV`, `ARG`, `WORKDIR`, `USER`, `LABEL` and `SHELL`
//!   are applied as Docker applies them; then bot-bottle's own files are
//!   laid back on top, the trust stores prepared again, and the container
//!   committed as the bottle's image.
//!
//! What the commands print goes to the person (their terminal and
//! `<state>/image/build.log`), never to the agent. Everything the build
//! creates carries the bottle's identity label and is removed when the
//! build ends, whether it succeeded or not.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bottle_contract::config::EgressConfig;
use bottle_manifest::fragment::{self, Command, Op};
use bottle_manifest::plan::{CA_BUNDLE_VARS, NO_PROXY, PROXY_PORT, TRUST_BUNDLE};
use futures_util::StreamExt;

mod containers;

use super::images::{INPUTS_LABEL, MANAGED_LABEL, SelfBinary};
use super::{IDENTITY_LABEL, ROLE_LABEL};
use crate::state::BottleDir;
use crate::{BackendError, Reporter};

/// Where the build container sees bot-bottle's binary and the CA.
const TOOLS: &str = "/run/bottle-build";
/// The build gate's socket directory inside the build container.
const SOCKETS: &str = "/run/bottle";
/// Paths in the build gate's container.
const GATE_DIR: &str = "/etc/bottle";
const GATE_BUILD_DIR: &str = "/etc/bottle-build";
const GATE_AUDIT_LOG: &str = "/var/log/bottle/audit.jsonl";
/// How much of the build's output is kept for the person.
const LOG_KEEP_BYTES: usize = 1 << 20;
/// Longest line of the build's output shown as one.
const LINE_BYTES: usize = 4096;
/// Capabilities a package manager needs as root (files, owners, its own
/// unprivileged user); no others.
const BUILD_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETFCAP",
];

/// The policy and limits a bottle's image is built under.
#[derive(Debug, Clone)]
pub struct BuildPolicy {
    pub identity: String,
    /// The bottle's state directory (its CA, its audit log).
    pub dir: BottleDir,
    /// The allowlist and private ranges (no routes: the build holds no
    /// secret).
    pub egress: EgressConfig,
    /// The Docker network the build gate reaches the outside through; the
    /// bottle's `gate_network`, else one made for the build.
    pub gate_network: Option<String>,
    pub gate_image: String,
    /// Whether the bottle has an extra upstream CA (in its gate directory).
    pub upstream_ca: bool,
    pub memory_bytes: u64,
    pub pids: i64,
    pub cpus: Option<f64>,
    pub timeout: Duration,
}

/// Why a build failed: a short status (what the agent may be told) and
/// the detail (the person's).
#[derive(Debug, Clone)]
pub struct Failed {
    pub status: String,
    pub detail: String,
}

/// The image a build makes.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The image it starts from.
    pub from: &'a str,
    /// The approved changes, in order.
    pub fragments: &'a [String],
    pub tag: &'a str,
    /// Labels the image carries.
    pub labels: &'a [(String, String)],
}

/// Builds `wanted` by carrying out its fragments under `policy`.
pub async fn build(
    docker: &Docker,
    policy: &BuildPolicy,
    wanted: Wanted<'_>,
    binary: &SelfBinary,
    reporter: &dyn Reporter,
) -> Result<(), BackendError> {
    let Wanted {
        from,
        fragments,
        tag,
        labels,
    } = wanted;
    let mut steps = Vec::new();
    for (n, text) in fragments.iter().enumerate() {
        let parsed = fragment::parse(text).map_err(|e| BackendError::Build {
            image: tag.to_owned(),
            message: format!("approved change {} does not parse: {e}", n + 1),
            log: String::new(),
        })?;
        steps.extend(parsed);
    }
    let run = Build::new(docker, policy, binary);
    let started = Instant::now();
    let result = match tokio::time::timeout(
        policy.timeout,
        run.carry_out(from, &steps, tag, labels, reporter),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(Failed {
            status: format!(
                "the build took longer than {} (resources.build.timeout) and was stopped",
                humantime::format_duration(policy.timeout)
            ),
            detail: String::new(),
        }),
    };
    run.clean_up().await;
    let log_path = policy.dir.root.join("image").join("build.log");
    let _ = std::fs::create_dir_all(policy.dir.root.join("image"));
    let _ = std::fs::write(
        &log_path,
        run.log.lock().map(|l| l.clone()).unwrap_or_default(),
    );
    match result {
        Ok(()) => {
            reporter.detail(&format!(
                "built {tag} in {} ms",
                started.elapsed().as_millis()
            ));
            Ok(())
        }
        Err(failed) => Err(BackendError::Build {
            image: tag.to_owned(),
            message: failed.status,
            log: format!(
                "{}(the whole log: {})",
                if failed.detail.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", failed.detail)
                },
                log_path.display()
            ),
        }),
    }
}

/// One build in progress: what it made, for the clean-up.
struct Build<'a> {
    docker: &'a Docker,
    policy: &'a BuildPolicy,
    binary: &'a SelfBinary,
    container: String,
    /// The container that lays bot-bottle's files over the steps' result.
    finisher: String,
    gate: String,
    /// The network made for the build, once made.
    network: std::sync::Mutex<Option<String>>,
    /// The image the steps' container was saved as, once saved.
    staging: std::sync::Mutex<Option<String>>,
    log: std::sync::Mutex<String>,
}

/// What the steps so far made the image's configuration.
#[derive(Clone)]
struct State {
    env: BTreeMap<String, String>,
    args: BTreeMap<String, String>,
    user: String,
    workdir: String,
    shell: Vec<String>,
    labels: HashMap<String, String>,
}

impl<'a> Build<'a> {
    fn new(docker: &'a Docker, policy: &'a BuildPolicy, binary: &'a SelfBinary) -> Build<'a> {
        Build {
            docker,
            policy,
            binary,
            container: format!("{}-build", policy.identity),
            finisher: format!("{}-build-finish", policy.identity),
            gate: format!("{}-build-gate", policy.identity),
            network: std::sync::Mutex::new(None),
            staging: std::sync::Mutex::new(None),
            log: std::sync::Mutex::new(String::new()),
        }
    }

    fn labels(&self, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (IDENTITY_LABEL.to_owned(), self.policy.identity.clone()),
            (ROLE_LABEL.to_owned(), role.to_owned()),
            (MANAGED_LABEL.to_owned(), "true".to_owned()),
        ])
    }

    fn note(&self, text: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.push_str(text);
            // Cut back to the last LOG_KEEP_BYTES once it is twice that:
            // bounded, and no copy on every chunk.
            if log.len() > 2 * LOG_KEEP_BYTES {
                let cut = log.len() - LOG_KEEP_BYTES;
                let mut at = cut;
                while !log.is_char_boundary(at) {
                    at += 1;
                }
                log.drain(..at);
            }
        }
    }

    /// The last lines the build printed, for the person.
    fn tail(&self) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|l| format!("  {}", fragment::visible(l, false)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn carry_out(
        &self,
        from: &str,
        steps: &[fragment::Instruction],
        tag: &str,
        labels: &[(String, String)],
        reporter: &dyn Reporter,
    ) -> Result<(), Failed> {
        let internal = |what: &str| {
            let what = what.to_owned();
            move |e: BackendError| Failed {
                status: format!("the build could not {what}"),
                detail: e.to_string(),
            }
        };
        let image = self.docker.inspect_image(from).await.map_err(|e| Failed {
            status: format!("the image {from} the change builds on is missing"),
            detail: e.to_string(),
        })?;
        let config = image.config.unwrap_or_default();
        self.start_gate()
            .await
            .map_err(internal("start its gate"))?;
        self.start_container(from, &config)
            .await
            .map_err(internal("start its container"))?;
        let mut state = State {
            env: config
                .env
                .clone()
                .unwrap_or_default()
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            args: BTreeMap::new(),
            user: config
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "0".into()),
            workdir: config
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            shell: config
                .shell
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]),
            labels: config.labels.clone().unwrap_or_default(),
        };
        // The fragment runs as root, as it would in a Dockerfile after
        // `USER root`; a USER step changes that.
        state.user = "0".into();
        let total = steps.len();
        for (n, step) in steps.iter().enumerate() {
            let at = |what: String| Failed {
                status: format!("step {} of {total} ({}) {what}", n + 1, lines(step.lines)),
                detail: String::new(),
            };
            let vars: BTreeMap<String, String> = state
                .args
                .iter()
                .chain(state.env.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let expand = |text: &str| {
                fragment::expand(text, &vars).map_err(|e| at(format!("cannot be expanded: {e}")))
            };
            match &step.op {
                Op::Run(command) => {
                    reporter.step(&format!(
                        "  step {}/{total}: RUN ({})",
                        n + 1,
                        lines(step.lines)
                    ));
                    let argv = match command {
                        Command::Shell(script) => {
                            let mut argv = state.shell.clone();
                            argv.push(script.clone());
                            argv
                        }
                        Command::Exec(argv) => argv.clone(),
                    };
                    let code = self
                        .exec(&argv, &state, reporter)
                        .await
                        .map_err(|e| Failed {
                            status: at("could not run".into()).status,
                            detail: e.to_string(),
                        })?;
                    if code != 0 {
                        let mut failed = at(format!("exited with status {code}"));
                        failed.detail = self.tail();
                        return Err(failed);
                    }
                }
                Op::Env(pairs) => {
                    for (k, v) in pairs {
                        let value = expand(v)?;
                        state.env.insert(k.clone(), value);
                    }
                }
                Op::Arg(name, default) => {
                    let value = match default {
                        Some(d) => expand(d)?,
                        None => String::new(),
                    };
                    state.args.insert(name.clone(), value);
                }
                Op::Workdir(path) => {
                    let path = expand(path)?;
                    let path = if path.starts_with('/') {
                        path
                    } else {
                        format!("{}/{path}", state.workdir.trim_end_matches('/'))
                    };
                    let helper = vec![
                        format!("{TOOLS}/bottle"),
                        "build-helper".into(),
                        "mkdir".into(),
                        path.clone(),
                    ];
                    let as_root = State {
                        user: "0".into(),
                        ..state.clone()
                    };
                    let code =
                        self.exec(&helper, &as_root, reporter)
                            .await
                            .map_err(|e| Failed {
                                status: at("could not make the directory".into()).status,
                                detail: e.to_string(),
                            })?;
                    if code != 0 {
                        return Err(at(format!("could not make {path}")));
                    }
                    state.workdir = path;
                }
                Op::Label(pairs) => {
                    for (k, v) in pairs {
                        state.labels.insert(expand(k)?, expand(v)?);
                    }
                }
                Op::User(user) => state.user = expand(user)?,
                Op::Shell(argv) => state.shell = argv.clone(),
            }
        }
        // bot-bottle's own files back on top, and the trust stores prepared
        // again, in a container of their own: the steps' container is
        // killed first, so no process a step left running (all of them
        // root's) can replace the shim or a link after it is laid.
        self.finish(tag, &config, &state, labels)
            .await
            .map_err(internal("lay bot-bottle's files back and save the image"))
    }

    fn build_dir(&self) -> PathBuf {
        self.policy.dir.root.join("build")
    }

    /// Runs `argv` in the build container as the state's user, in its
    /// working directory, with its environment and the proxy; streams the
    /// output to the person; returns the exit status.
    async fn exec(
        &self,
        argv: &[String],
        state: &State,
        reporter: &dyn Reporter,
    ) -> Result<i64, BackendError> {
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        let mut env: Vec<String> = state
            .args
            .iter()
            .chain(state.env.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push(format!("{var}={proxy}"));
        }
        env.push(format!("NO_PROXY={NO_PROXY}"));
        env.push(format!("no_proxy={NO_PROXY}"));
        for var in CA_BUNDLE_VARS {
            env.push(format!("{var}={TRUST_BUNDLE}"));
        }
        env.push(format!("NODE_EXTRA_CA_CERTS={TOOLS}/ca.pem"));
        let exec = self
            .docker
            .create_exec(
                &self.container,
                ExecConfig {
                    cmd: Some(argv.to_vec()),
                    env: Some(env),
                    user: Some(state.user.clone()),
                    working_dir: Some(state.workdir.clone()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BackendError::docker("create a build step", e))?;
        let started = self
            .docker
            .start_exec(&exec.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| BackendError::docker("start a build step", e))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            let mut pending = String::new();
            while let Some(Ok(chunk)) = output.next().await {
                let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                self.note(&text);
                pending.push_str(&text);
                // Whole lines, and a line no longer than LINE_BYTES: output
                // without newlines cannot grow the launcher's memory.
                loop {
                    let end = match pending.find('\n') {
                        Some(end) => end + 1,
                        None if pending.len() > LINE_BYTES => {
                            let mut at = LINE_BYTES;
                            while !pending.is_char_boundary(at) {
                                at -= 1;
                            }
                            at
                        }
                        None => break,
                    };
                    let line: String = pending.drain(..end).collect();
                    let line = fragment::visible(line.trim_end(), false);
                    if !line.trim().is_empty() {
                        reporter.detail(&format!("    {line}"));
                    }
                }
            }
        }
        let inspected = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| BackendError::docker("inspect a build step", e))?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }
}

fn lines((first, last): (usize, usize)) -> String {
    if first == last {
        format!("line {first}")
    } else {
        format!("lines {first}-{last}")
    }
}

/// The labels of a built image: its inputs' hash, managed, and `extra`.
pub fn image_labels(inputs: &str, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut labels = vec![
        (INPUTS_LABEL.to_owned(), inputs.to_owned()),
        (MANAGED_LABEL.to_owned(), "true".to_owned()),
    ];
    labels.extend_from_slice(extra);
    labels
}
