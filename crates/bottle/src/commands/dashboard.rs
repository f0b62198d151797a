//! `bottle dashboard`: the [`bottle_dashboard`] screen over this machine's
//! bottles. What it shows comes from the same inventory as `bottle list`
//! and the bottles' own files (requests, audit logs); approve and deny go
//! through [`bottle_decide::decide`], as `bottle approve` and `deny` do;
//! the other verbs run this binary's own commands (`stop`, `rm`,
//! `cleanup`, `start -d`, `resume -d`, `attach`), so each behaves exactly
//! as it does on the command line.

use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;
use bottle_backend::registry::AnyBackend;
use bottle_backend::{Backend, Reporter};
use bottle_dashboard::model::{BottleView, Kind, RequestView, Snapshot, State, TailLine, escape};
use bottle_dashboard::{Action, Options, Source};
use bottle_decide::{Approval, Context, Verdict};
use bottle_gate::supervise::requests::State as RequestState;

use super::inventory::{Bottle, gather};
use crate::settings::{Global, Start};
use crate::{Failure, env, exit};

/// How much of an audit log's end is read for the tail.
const TAIL_BYTES: u64 = 128 * 1024;
/// Lines of the tail kept.
const TAIL_LINES: usize = 200;

pub fn run() -> Result<i32, Failure> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow!(
                "the dashboard needs a terminal; `bottle list` and `bottle requests` print the same for scripts"
            ),
        ));
    }
    let global = Global::resolve()?;
    let settings = Start::resolve(None, &global)?;
    let backends = AnyBackend::all(&settings.backends);
    let runtime = super::runtime()?;
    let usable: Vec<String> = backends
        .iter()
        .filter(|b| runtime.block_on(b.availability()).is_usable())
        .map(|b| b.name().to_string())
        .collect();
    let agents = global
        .manifest_lookup(&Default::default())
        .resolve()
        .map_err(|e| e.to_string())
        .and_then(|path| bottle_manifest::load::load(&path).map_err(|e| e.to_string()))
        .map(|m| m.agents.keys().cloned().collect());
    let tmux = std::env::var_os("TMUX").is_some().then(|| {
        match env::read(env::BOTTLE_DASHBOARD_TMUX).as_deref() {
            Some("pane") => Tmux::Pane,
            _ => Tmux::Window,
        }
    });
    let mut source = Live {
        me: std::env::current_exe().map_err(|e| Failure::new(exit::SOFTWARE, e))?,
        global,
        settings,
        backends,
        runtime,
        bottles: Vec::new(),
        problems: Vec::new(),
        agents,
        usable,
        tmux,
        tails: Default::default(),
    };
    let options = Options {
        color: env::read(env::NO_COLOR).is_none(),
        health_every: Duration::from_secs(5),
    };
    bottle_dashboard::run(&mut source, options)
        .map_err(|e| Failure::new(exit::SOFTWARE, anyhow!("the dashboard: {e}")))?;
    Ok(0)
}

/// Where an agent opens inside tmux.
#[derive(Debug, Clone, Copy)]
enum Tmux {
    Window,
    Pane,
}

struct Live {
    me: PathBuf,
    global: Global,
    settings: Start,
    backends: Vec<AnyBackend>,
    runtime: tokio::runtime::Runtime,
    /// The last inventory: asked again on a full refresh.
    bottles: Vec<Bottle>,
    problems: Vec<String>,
    agents: Result<Vec<String>, String>,
    usable: Vec<String>,
    tmux: Option<Tmux>,
    /// Each audit log's decisions, with the length they were read at: a
    /// log is read again only once it grew.
    tails: std::collections::HashMap<PathBuf, (u64, Vec<TailLine>)>,
}

impl Source for Live {
    fn snapshot(&mut self, selected: Option<&str>, full: bool) -> Snapshot {
        if full || self.bottles.is_empty() {
            let (bottles, trouble) = self.runtime.block_on(gather(&self.global, &self.backends));
            self.bottles = bottles;
            self.problems = trouble.iter().map(ToString::to_string).collect();
        }
        let mut requests = Vec::new();
        let mut rows = Vec::new();
        for bottle in &self.bottles {
            let pending: Vec<RequestView> = bottle
                .record
                .as_ref()
                .and_then(|r| bottle_decide::store(r).list().ok())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.state == RequestState::Pending)
                .map(|r| RequestView {
                    id: r.id.clone(),
                    identity: bottle.identity.clone(),
                    kind: r.ask.kind().to_owned(),
                    summary: escape(&r.ask.summary()),
                    reason: escape(&r.reason),
                    created: r.created,
                    detail: grants(&r.ask),
                })
                .collect();
            let audit = bottle.record.as_ref().map(|r| r.dir.audit_log());
            let last_refusal = audit
                .as_deref()
                .and_then(|path| {
                    tail_of(&mut self.tails, path)
                        .iter()
                        .rev()
                        .find(|l| l.kind == Kind::Refused)
                })
                .map(|l| l.text.clone());
            rows.push(view(bottle, pending.len(), last_refusal));
            requests.extend(pending);
        }
        requests.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        let tail = selected
            .and_then(|id| self.bottles.iter().find(|b| b.identity == id))
            .and_then(|b| b.record.as_ref())
            .map(|r| r.dir.audit_log())
            .map(|path| tail_of(&mut self.tails, &path).to_vec())
            .unwrap_or_default();
        Snapshot {
            bottles: rows,
            requests,
            tail,
            agents: self.agents.clone(),
            backends: self.usable.clone(),
            problems: self.problems.clone(),
        }
    }

    fn watched(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.global.state_root.clone()];
        for record in self.bottles.iter().filter_map(|b| b.record.as_ref()) {
            dirs.push(record.dir.root.clone());
            dirs.push(record.dir.requests_dir());
        }
        dirs
    }

    fn needs_terminal(&self, action: &Action) -> bool {
        self.tmux.is_none()
            && matches!(
                action,
                Action::Attach(_) | Action::Resume(_) | Action::New { .. }
            )
    }

    fn perform(&mut self, action: &Action) -> Result<String, String> {
        match action {
            Action::Approve { request, token_ref } => self.decide(
                request,
                &Verdict::Approve(Approval {
                    token_ref: token_ref.clone(),
                    ..Approval::default()
                }),
            ),
            Action::Deny { request, reason } => self.decide(
                request,
                &Verdict::Deny {
                    reason: reason.clone(),
                },
            ),
            Action::Attach(id) => self.attach(id),
            Action::Stop(id) => self.bottle(&["stop", id]),
            Action::Remove(id) => self.bottle(&["rm", id, "-y"]),
            Action::Cleanup => self.bottle(&["cleanup", "-y"]),
            Action::Resume(id) => {
                self.bottle(&["resume", id, "-y", "-d"])?;
                self.attach(id)
            }
            Action::New { agent, backend } => {
                let said = self.bottle(&["start", agent, "--backend", backend, "-y", "-d"])?;
                let identity = said
                    .split_whitespace()
                    .next()
                    .filter(|id| {
                        id.starts_with(&format!("{agent}-"))
                            && id
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    })
                    .map(str::to_owned)
                    .ok_or_else(|| format!("started, but which bottle is unclear: {said}"))?;
                self.attach(&identity)
            }
        }
    }
}

impl Live {
    fn decide(&self, request: &str, verdict: &Verdict) -> Result<String, String> {
        let env = |name: &str| std::env::var(name).ok();
        let reporter = Collected::default();
        let ctx = Context {
            state_root: &self.global.state_root,
            by: bottle_decide::decider(),
            env: &env,
            reporter: &reporter,
        };
        let backends = &self.settings.backends;
        bottle_decide::decide(&ctx, request, verdict, |name| {
            AnyBackend::new(name, backends)
        })
        .map(|d| d.message)
        .map_err(|e| e.message)
    }

    /// Runs `bottle ARGS…` with its output captured: its last line, or
    /// its error.
    fn bottle(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.me)
            .args(args)
            .env(env::NO_COLOR, "1")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bottle {}: {e}", args.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stderr);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim_start_matches("bottle: error: ")
            .trim_start_matches("bottle: ")
            .to_owned();
        if out.status.success() {
            Ok(last)
        } else {
            Err(last)
        }
    }

    /// The agent of `identity`: in a tmux window or pane of its own, or on
    /// this terminal until it detaches.
    fn attach(&self, identity: &str) -> Result<String, String> {
        let me = self.me.display().to_string();
        match self.tmux {
            Some(how) => {
                // A failed attach stays on screen until read.
                let command = format!(
                    "{} attach {} || {{ echo 'bottle attach failed (above); Enter closes this'; read _; }}",
                    shell_quote(&me),
                    shell_quote(identity)
                );
                let mut args: Vec<String> = match how {
                    Tmux::Window => vec!["new-window".into(), "-n".into(), identity.into()],
                    Tmux::Pane => vec!["split-window".into(), "-h".into()],
                };
                // The tmux server's environment may not be this one: the
                // variables bot-bottle reads go with the command.
                for name in env::PASSED_ON {
                    if let Some(value) = std::env::var_os(name) {
                        args.push("-e".into());
                        args.push(format!("{name}={}", value.to_string_lossy()));
                    }
                }
                args.push(command);
                let out = Command::new("tmux")
                    .args(&args)
                    .output()
                    .map_err(|e| format!("cannot run tmux: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "tmux: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                if matches!(how, Tmux::Pane) {
                    let _ = Command::new("tmux")
                        .args(["select-pane", "-T", identity])
                        .status();
                }
                Ok(format!(
                    "{identity} opened in a tmux {}",
                    match how {
                        Tmux::Window => "window",
                        Tmux::Pane => "pane",
                    }
                ))
            }
            None => {
                let status = Command::new(&self.me)
                    .args(["attach", identity])
                    .status()
                    .map_err(|e| format!("cannot attach: {e}"))?;
                if status.success() {
                    Ok(format!("back from {identity}"))
                } else {
                    Err(format!("attach to {identity} ended with {status}"))
                }
            }
        }
    }
}

/// What a decision reported (an image build's steps), kept rather than
/// printed over the screen.
#[derive(Default)]
struct Collected(Mutex<Vec<String>>);

impl Reporter for Collected {
    fn step(&self, message: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(message.to_owned());
        }
    }
    fn detail(&self, _: &str) {}
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What approving `ask` grants, line by line, escaped: an image change's
/// steps exactly as they will be built.
fn grants(ask: &bottle_gate::supervise::requests::Ask) -> Vec<String> {
    use bottle_gate::supervise::requests::Ask;
    match ask {
        Ask::Egress { .. } => vec![format!(
            "the bottle may reach {} (an allow rule, kept for resume)",
            escape(&ask.rule().unwrap_or_default())
        )],
        Ask::Route { host, header } => vec![format!(
            "requests to {} carry a secret of yours in {} (you name its host variable next)",
            escape(host),
            escape(header)
        )],
        Ask::Image { fragment } => bottle_manifest::fragment::render_text(fragment)
            .lines()
            .map(escape)
            .collect(),
    }
}

/// A bottle's row.
fn view(bottle: &Bottle, pending: usize, last_refusal: Option<String>) -> BottleView {
    let row = bottle.row();
    let meta = bottle
        .record
        .as_ref()
        .and_then(|r| r.metadata.as_ref().ok());
    let runtime = match (row.backend, meta) {
        ("native", _) => "bubblewrap".to_owned(),
        (_, Some(m)) => format!("{:?}", m.plan.runtime).to_lowercase(),
        _ => "-".to_owned(),
    };
    let health = if row.health.is_empty() {
        "-".to_owned()
    } else {
        row.health.values().copied().collect::<Vec<_>>().join(",")
    };
    BottleView {
        identity: row.identity.to_owned(),
        agent: row.agent.unwrap_or("-").to_owned(),
        backend: row.backend.to_owned(),
        runtime,
        started: row
            .started_at
            .and_then(|t| humantime::parse_rfc3339(t).ok()),
        state: State::parse(row.state),
        health,
        pending,
        last_refusal,
    }
}

/// The decisions at the end of the audit log at `path`, read again only
/// when it has grown since `cache` took it.
fn tail_of<'a>(
    cache: &'a mut std::collections::HashMap<PathBuf, (u64, Vec<TailLine>)>,
    path: &Path,
) -> &'a [TailLine] {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let entry = cache
        .entry(path.to_owned())
        .or_insert((u64::MAX, Vec::new()));
    if entry.0 != len {
        *entry = (len, read_tail(path));
    }
    &entry.1
}

/// The decisions at the end of an audit log.
fn read_tail(path: &Path) -> Vec<TailLine> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    // A line cut by where the read began is not a line.
    if from > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let parsed: Vec<TailLine> = lines.iter().filter_map(|l| TailLine::parse(l)).collect();
    let skip = parsed.len().saturating_sub(TAIL_LINES);
    parsed.into_iter().skip(skip).collect()
}
