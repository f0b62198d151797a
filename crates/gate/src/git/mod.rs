//! The git role (DESIGN.md §6): the agent's fetches and pushes of each
//! upstream go to the gate over the smart HTTP protocol. The gate keeps a
//! bare mirror per upstream, fetched over SSH with the key only it holds.
//! A push is received into the mirror, where a `pre-receive` hook
//! (`bottle git-hook pre-receive`) checks the push policy and forwards the
//! accepted updates upstream before any ref moves: a refusal or an
//! upstream failure leaves every ref where it was.

pub mod hook;
pub mod policy;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Map;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::process::Command;
use tokio::sync::Mutex;
use tokio_util::io::ReaderStream;

use crate::audit::Audit;
use crate::config::{GitConfig, GitEntryConfig};

type Body = BoxBody<Bytes, std::io::Error>;

/// How long fetching from an upstream may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a git service on a mirror may run (it holds the mirror's lock
/// meanwhile): a client that stops sending frees the mirror after this.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The gate's configuration inside the gate container (for the hook).
pub const CONFIG_ENV: &str = "BOTTLE_GATE_CONFIG";
/// Which entry a hook runs for.
pub const ENTRY_ENV: &str = "BOTTLE_GIT_ENTRY";

/// The SSH command git runs for `entry`: its key only, the pinned (or
/// first-seen) host key only, never a prompt.
pub fn ssh_command(entry: &GitEntryConfig, dir: &Path) -> String {
    let (known_hosts, checking) = match &entry.known_hosts {
        Some(pinned) => (pinned.clone(), "yes"),
        None => (learned_hosts(dir, &entry.name), "accept-new"),
    };
    // One SSH connection per upstream is kept open a while and shared by
    // the fetches and pushes that follow: no handshake per operation.
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={} \
         -o StrictHostKeyChecking={checking} -o ConnectTimeout=10 \
         -o ServerAliveInterval=15 -o ServerAliveCountMax=4 \
         -o ControlMaster=auto -o ControlPath={} -o ControlPersist=120",
        shell_quote(&entry.identity_file.to_string_lossy()),
        shell_quote(&known_hosts.to_string_lossy()),
        shell_quote(&dir.join(format!(".ssh-{}", entry.name)).to_string_lossy()),
    )
}

/// Where a host key seen on first use is recorded.
pub fn learned_hosts(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.known_hosts"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The environment git needs in the gate: a writable home, no prompts.
fn git_env(cmd: &mut Command, dir: &Path) {
    cmd.env("HOME", dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_CONFIG_GLOBAL");
}

/// The git role: serves every entry's mirror.
pub struct Git {
    config: GitConfig,
    gate_config: PathBuf,
    audit: Arc<Audit>,
    /// One lock per mirror: fetches and pushes of a mirror take turns, and
    /// a push holds it until receive-pack (and its hook) has exited.
    locks: HashMap<String, Arc<Mutex<bool>>>,
}

impl Git {
    pub fn new(config: GitConfig, gate_config: PathBuf, audit: Arc<Audit>) -> Git {
        let locks = config
            .entries
            .iter()
            .map(|e| (e.name.clone(), Arc::new(Mutex::new(false))))
            .collect();
        Git {
            config,
            gate_config,
            audit,
            locks,
        }
    }

    fn mirror(&self, name: &str) -> PathBuf {
        self.config.dir.join(format!("{name}.git"))
    }

    /// Serves smart HTTP on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let git = Arc::clone(&self);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let git = Arc::clone(&git);
                    async move { Ok::<_, Infallible>(git.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if crate::egress::proxy::is_health_check(&req) {
            return plain(StatusCode::OK, "bottle git gate: ok\n");
        }
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let Some((name, rest)) = path.strip_prefix('/').and_then(|p| p.split_once(".git/")) else {
            return plain(
                StatusCode::NOT_FOUND,
                "bottle git gate: no such repository\n",
            );
        };
        let Some(entry) = self.config.entries.iter().find(|e| e.name == name) else {
            return plain(
                StatusCode::NOT_FOUND,
                &format!("bottle git gate: no upstream named {name:?} in this bottle\n"),
            );
        };
        let service = match (req.method(), rest) {
            (&Method::GET, "info/refs") => {
                match query.split('&').find_map(|kv| kv.strip_prefix("service=")) {
                    Some("git-upload-pack") => Service::UploadPack { advertise: true },
                    Some("git-receive-pack") => Service::ReceivePack { advertise: true },
                    _ => {
                        return plain(
                            StatusCode::FORBIDDEN,
                            "bottle git gate: only the smart HTTP protocol is served\n",
                        );
                    }
                }
            }
            (&Method::POST, "git-upload-pack") => Service::UploadPack { advertise: false },
            (&Method::POST, "git-receive-pack") => Service::ReceivePack { advertise: false },
            _ => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "bottle git gate: not a git smart HTTP request\n",
                );
            }
        };
        let gzip = req
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if gzip {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bottle git gate: compressed requests are not accepted; set http.postBuffer higher or gc.auto\n",
            );
        }

        let lock = match self.locks.get(name) {
            Some(lock) => lock,
            None => return plain(StatusCode::INTERNAL_SERVER_ERROR, "no lock\n"),
        };
        let mut ready = Arc::clone(lock).lock_owned().await;
        if !*ready {
            if let Err(err) = self.init(entry).await {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    &format!("bottle git gate: {err}\n"),
                );
            }
            *ready = true;
        }
        // Every advertisement starts from what the upstream has now.
        if let Service::UploadPack { advertise: true } | Service::ReceivePack { advertise: true } =
            service
            && let Err(err) = self.fetch(entry).await
        {
            self.record("fetch", entry, "deny", &err);
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("bottle git gate: cannot fetch from the upstream of {name}: {err}\n"),
            );
        }
        // The lock goes with the git process, and is released when it
        // exits: the answer streams after this returns, and the hook runs
        // while it does.
        self.run(entry, service, req.into_body(), ready).await
    }

    /// Creates the bare mirror of `entry` if it is missing, and sets its
    /// configuration and hook (again, on every gate start: a resumed
    /// bottle's mirror gets this start's policy).
    async fn init(&self, entry: &GitEntryConfig) -> Result<(), String> {
        let mirror = self.mirror(&entry.name);
        if !mirror.join("HEAD").exists() {
            git(
                &self.config.dir,
                &["init", "--quiet", "--bare", &mirror.to_string_lossy()],
            )
            .await?;
        }
        let mut settings = vec![
            ("remote.upstream.url", entry.upstream.clone()),
            ("core.sshCommand", ssh_command(entry, &self.config.dir)),
            ("receive.denyDeletes", "false".to_owned()),
            ("receive.denyNonFastForwards", "false".to_owned()),
            ("http.receivepack", "true".to_owned()),
            ("uploadpack.allowTipSHA1InWant", "false".to_owned()),
            // Every object the agent sends, and every object fetched, is
            // checked before it is taken: a malformed object is a refusal,
            // not input for the git that reads it next.
            // The hook names every ref it pushes; a push without one must
            // push nothing, whatever git's default would be.
            ("push.default", "nothing".to_owned()),
            ("receive.fsckObjects", "true".to_owned()),
            ("fetch.fsckObjects", "true".to_owned()),
            ("transfer.fsckObjects", "true".to_owned()),
        ];
        if let Some(max) = entry.push.max_pack_bytes {
            settings.push(("receive.maxInputSize", max.to_string()));
        }
        for (key, value) in settings {
            git(&mirror, &["config", key, &value]).await?;
        }
        let hook = mirror.join("hooks").join("pre-receive");
        let script = format!(
            "#!/bin/sh\nexport {CONFIG_ENV}={} {ENTRY_ENV}={}\nexec /usr/local/bin/bottle git-hook pre-receive\n",
            shell_quote(&self.gate_config.to_string_lossy()),
            shell_quote(&entry.name)
        );
        fs_err::write(&hook, script).map_err(|e| e.to_string())?;
        fs_err::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Brings the mirror up to the upstream's branches and tags.
    async fn fetch(&self, entry: &GitEntryConfig) -> Result<(), String> {
        let mirror = self.mirror(&entry.name);
        let fetched = tokio::time::timeout(
            FETCH_TIMEOUT,
            git(
                &mirror,
                &[
                    "fetch",
                    "--quiet",
                    "--prune",
                    "--no-write-fetch-head",
                    "upstream",
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            ),
        )
        .await
        .map_err(|_| "the fetch timed out".to_owned())?;
        match fetched {
            Ok(_) => {
                self.record("fetch", entry, "allow", "");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Runs upload-pack or receive-pack on the mirror, streaming the
    /// request body in and the answer out.
    async fn run(
        &self,
        entry: &GitEntryConfig,
        service: Service,
        body: Incoming,
        lock: tokio::sync::OwnedMutexGuard<bool>,
    ) -> Response<Body> {
        let mirror = self.mirror(&entry.name);
        let (name, advertise) = match service {
            Service::UploadPack { advertise } => ("upload-pack", advertise),
            Service::ReceivePack { advertise } => ("receive-pack", advertise),
        };
        let mut cmd = Command::new("git");
        cmd.arg(name).arg("--stateless-rpc");
        if advertise {
            cmd.arg("--advertise-refs");
        }
        cmd.arg(&mirror)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a time limit stops the hook and
            // the push it runs with it.
            .process_group(0);
        git_env(&mut cmd, &self.config.dir);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot run git: {err}\n"),
                );
            }
        };
        let mut stdin = child.stdin.take();
        if !advertise && let Some(mut input) = stdin.take() {
            tokio::spawn(async move {
                let mut body = body;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref()
                        && input.write_all(data).await.is_err()
                    {
                        return;
                    }
                }
                let _ = input.shutdown().await;
            });
        }
        drop(stdin);
        let Some(stdout) = child.stdout.take() else {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "no output from git\n");
        };
        let stderr = child.stderr.take();
        tokio::spawn(async move {
            let ran = tokio::time::timeout(SERVICE_TIMEOUT, async {
                if let Some(mut stderr) = stderr {
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut sink).await;
                    if !sink.is_empty() {
                        tracing::debug!(stderr = %String::from_utf8_lossy(&sink), "git");
                    }
                }
                child.wait().await
            })
            .await;
            if ran.is_err() {
                tracing::warn!("git service ran past its time limit; stopped");
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill().await;
            }
            drop(lock);
        });
        let stream = ReaderStream::with_capacity(stdout, 64 << 10).map_ok(Frame::data);
        let mut prefix = Vec::new();
        if advertise {
            let line = format!("# service=git-{name}\n");
            prefix.extend_from_slice(format!("{:04x}{line}0000", line.len() + 4).as_bytes());
        }
        let body = StreamBody::new(
            futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(prefix)))
            })
            .chain(stream),
        );
        let content_type = if advertise {
            format!("application/x-git-{name}-advertisement")
        } else {
            format!("application/x-git-{name}-result")
        };
        let mut response = Response::new(BodyExt::boxed(body));
        if let Ok(value) = header::HeaderValue::from_str(&content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        response
    }

    fn record(&self, event: &str, entry: &GitEntryConfig, decision: &str, reason: &str) {
        let mut fields = Map::new();
        fields.insert("remote".into(), entry.name.clone().into());
        fields.insert("upstream".into(), entry.upstream.clone().into());
        fields.insert("decision".into(), decision.into());
        if !reason.is_empty() {
            fields.insert("reason".into(), reason.into());
        }
        self.audit.record("git", event, fields);
    }
}

#[derive(Debug, Clone, Copy)]
enum Service {
    UploadPack { advertise: bool },
    ReceivePack { advertise: bool },
}

/// Runs git in `dir`; its stderr is the error.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args).stdin(Stdio::null());
    git_env(&mut cmd, dir.parent().unwrap_or(dir));
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.trim().lines().last().unwrap_or("git failed").to_owned())
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}
