//! `bottle gate`: one async process per bottle serving its roles on Unix
//! sockets in a directory shared only with that bottle (DESIGN.md §2).
//!
//! Roles: [`egress`] (the HTTP forward proxy with TLS interception and
//! credential injection), [`git`] (fetches and pushes under the push
//! policy) and [`supervise`] (the agent's requests for more, and the
//! person's approvals applied live). Every decision is appended to the bottle's
//! [`audit`] log. Anything the gate cannot set up makes it exit: a gate
//! that is not serving is a closed door, never an open one.
#![forbid(unsafe_code)]

pub mod audit;
pub mod ca;
pub use bottle_contract::config;
pub mod egress;
pub use bottle_contract::files;
pub mod git;
pub mod supervise;

pub use bottle_contract::GateArgs;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;

pub use config::GateConfig;
use config::Secrets;
use egress::credentials::{Credentials, Route, Secret};

/// Errors that stop the gate from starting.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("gate configuration {}: {message}", .path.display())]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    LoadConfig(#[from] config::ConfigError),
    #[error("invalid allow rule in the gate configuration: {0}")]
    Rule(#[from] bottle_manifest::host::RuleError),
    #[error("the bottle's CA: {0}")]
    Ca(#[from] ca::CaError),
    #[error("credential routes: {0}")]
    Routes(String),
}

/// Installs the process's TLS crypto provider (ring). Call once at start.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads the routes' secrets from standard input (the launcher writes them
/// there and closes it), when there are routes.
pub fn read_secrets(config: &GateConfig) -> Result<Vec<Secret>, GateError> {
    if config.egress.routes.is_empty() {
        return Ok(Vec::new());
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let secrets: Secrets = serde_json::from_str(&text).map_err(|e| {
        GateError::Routes(format!("the secrets on standard input are not valid: {e}"))
    })?;
    if secrets.secrets.len() != config.egress.routes.len() {
        return Err(GateError::Routes(format!(
            "{} routes but {} secrets",
            config.egress.routes.len(),
            secrets.secrets.len()
        )));
    }
    Ok(secrets.secrets.into_iter().map(Secret::new).collect())
}

/// The routes of `config` with their secrets.
fn routes(config: &GateConfig, secrets: Vec<Secret>) -> Result<Vec<Route>, GateError> {
    config
        .egress
        .routes
        .iter()
        .zip(secrets)
        .map(|(route, secret)| {
            let host = bottle_manifest::host::normalize_host(&route.host)
                .map_err(|e| GateError::Routes(format!("route host {:?}: {e}", route.host)))?;
            let header = http::HeaderName::from_bytes(route.header.as_bytes())
                .map_err(|e| GateError::Routes(format!("route header {:?}: {e}", route.header)))?;
            if secret.expose().is_empty() || secret.expose().contains(['\r', '\n', '\0']) {
                return Err(GateError::Routes(format!(
                    "the secret for {} is empty or spans lines",
                    route.host
                )));
            }
            Ok(Route {
                host,
                header,
                scheme: route.scheme.clone(),
                secret,
                placeholder: route.placeholder.clone(),
                paths: route.paths.clone(),
            })
        })
        .collect()
}

/// Most worker threads, whatever the machine.
const MAX_WORKERS: usize = 4;

/// Runs the gate until SIGTERM or SIGINT: the roles its configuration
/// names, and nothing else.
///
/// The process is made non-dumpable first: no other process of the same
/// user can attach to it or read its memory (`/proc/PID/mem`), and it
/// leaves no core file, so the secrets it holds stay in memory it owns.
pub fn run(config_path: &Path, config: GateConfig, secrets: Vec<Secret>) -> Result<(), GateError> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)?;
    // The stop signals are caught before anything else: a gate is pid 1
    // of its sandbox, which drops a signal it has no handler for, so a
    // SIGTERM sent while it still read its CA (the agent's command ended
    // at once) would be lost and the gate killed after the grace, its
    // audit queue with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _entered = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let mut context = serde_json::Map::new();
    if let Some(phase) = &config.phase {
        context.insert("phase".into(), phase.clone().into());
    }
    let audit = Arc::new(audit::Audit::open_with(&config.audit_log, context)?);
    match config.role {
        config::GateRole::Egress => serve_egress(&config, secrets, &audit)?,
        config::GateRole::Git => serve_git(config_path, &config, &audit)?,
    }
    tracing::info!(identity = %config.identity, role = ?config.role, "gate serving");
    audit.record("gate", "start", role_fields(config.role));

    runtime.block_on(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    audit.record("gate", "stop", role_fields(config.role));
    audit.close();
    Ok(())
}

fn role_fields(role: config::GateRole) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    fields.insert(
        "serves".into(),
        match role {
            config::GateRole::Egress => "egress",
            config::GateRole::Git => "git",
        }
        .into(),
    );
    fields
}

/// The egress proxy (and the supervise server, when configured).
///
/// One single-threaded runtime per worker thread, each accepting from the
/// same socket and keeping a connection — the agent's side, its tunnel and
/// the upstream connections it uses — on one thread: no cross-thread
/// wake-ups on the hot path.
fn serve_egress(
    config: &GateConfig,
    secrets: Vec<Secret>,
    audit: &Arc<audit::Audit>,
) -> Result<(), GateError> {
    let tls = config.tls.as_ref().ok_or_else(|| GateError::Config {
        path: PathBuf::from("gate.json"),
        message: "the egress role needs \"tls\" (the bottle's CA)".to_owned(),
    })?;
    let policy = egress::Policy::new(config.egress.rules()?, &config.egress);
    // Listening first: the agent's sandbox starts while the gate reads its
    // CA and the system's roots; its first connections wait in the
    // backlog until the workers below accept them.
    let listener = bind(&config.socket_dir, config::EGRESS_SOCKET, 0o666)?;
    let minter = Arc::new(ca::LeafMinter::new(
        &fs_err::read_to_string(&tls.ca_cert)?,
        &fs_err::read_to_string(&tls.ca_key)?,
    )?);
    let upstream_tls = egress::upstream::UpstreamTls::new(tls.upstream_ca.as_deref())?;
    let live = Arc::new(egress::Live::new(
        policy,
        Credentials::new(routes(config, secrets)?).map_err(GateError::Routes)?,
    ));
    // No record of this gate's holds a secret, whatever the agent put in
    // a refused request: routes approved later are scrubbed too.
    let held = Arc::clone(&live);
    audit.set_scrubber(Box::new(move |bytes| {
        held.credentials().scrub(bytes);
    }));
    // Half the cores: the gate shares the machine with its agent, the
    // upstreams it talks to and other bottles. (On 2 cores one worker
    // measured faster than two.)
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .clamp(1, MAX_WORKERS);
    for i in 0..workers {
        let listener = listener.try_clone()?;
        let egress = egress::Egress::new(
            Arc::clone(&live),
            Arc::clone(&minter),
            egress::upstream::Upstreams::new(Arc::clone(&live), &upstream_tls),
            Arc::clone(audit),
        );
        let egress = Arc::new(egress);
        spawn_worker(format!("egress-{i}"), listener, move |l| egress.serve(l))?;
    }
    if let Some(dir) = &config.control_dir {
        // The control socket first: by the time the agent can file a
        // request, a person can approve it.
        let control = bind(dir, supervise::control::CONTROL_SOCKET, 0o600)?;
        let (applied_to, audited) = (Arc::clone(&live), Arc::clone(audit));
        spawn_worker("control".into(), control, move |l| {
            supervise::control::serve(l, applied_to, audited)
        })?;
    }
    if let Some(supervise) = &config.supervise {
        let listener = bind(&config.socket_dir, config::SUPERVISE_SOCKET, 0o666)?;
        let shared = Arc::new(supervise::tools::Shared {
            identity: config.identity.clone(),
            store: supervise::requests::Store::new(supervise.dir.join("requests")),
            live: Arc::clone(&live),
            audit: Arc::clone(audit),
            config: supervise.clone(),
        });
        spawn_worker("supervise".into(), listener, move |l| {
            supervise::serve(l, shared)
        })?;
    }
    Ok(())
}

/// The git gate: fetches and pushes of the bottle's upstreams.
fn serve_git(
    config_path: &Path,
    config: &GateConfig,
    audit: &Arc<audit::Audit>,
) -> Result<(), GateError> {
    let listener = bind(&config.socket_dir, config::GIT_SOCKET, 0o666)?;
    let git = Arc::new(git::Git::new(
        config.git.clone(),
        config_path.to_owned(),
        Arc::clone(audit),
    ));
    spawn_worker("git".into(), listener, move |l| git.serve(l))?;
    Ok(())
}

/// Serves `listener` with `serve` on a thread of its own, in a
/// single-threaded runtime. A worker that cannot serve takes the gate
/// down: fail closed.
fn spawn_worker<F, Fut>(
    name: String,
    listener: std::os::unix::net::UnixListener,
    serve: F,
) -> std::io::Result<()>
where
    F: FnOnce(UnixListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async move {
                        serve(UnixListener::from_std(listener)?).await;
                        Ok(())
                    })
                });
            if let Err(err) = served {
                tracing::error!(%err, worker = %name, "gate worker failed");
                std::process::exit(70);
            }
        })?;
    Ok(())
}

/// Binds a socket under a temporary name and renames it into place once it
/// listens, so a client never finds a socket that refuses connections
/// because the gate is still starting.
fn bind(dir: &Path, name: &str, mode: u32) -> Result<std::os::unix::net::UnixListener, GateError> {
    let path = dir.join(name);
    let staging = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = std::os::unix::net::UnixListener::bind(&staging)?;
    listener.set_nonblocking(true)?;
    // The agent runs as another user: it must be able to connect to its
    // sockets (0666); the control socket is the launching user's (0600).
    fs_err::set_permissions(&staging, std::fs::Permissions::from_mode(mode))?;
    fs_err::rename(&staging, &path)?;
    Ok(listener)
}
