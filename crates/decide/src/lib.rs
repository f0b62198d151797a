//! What a person decides about an agent's request, in one place: `bottle
//! approve`, `bottle deny` and the dashboard all call [`decide`].
//!
//! An approval is written to the bottle's `grants.json` first (so `resume`
//! keeps it), then applied: a host or route through the running gate's
//! control socket (live, no restart), an image change by building the
//! bottle's own image and restarting the agent on it (a capability block).
//! A denial tells the agent why. Decisions on one bottle are serialised by
//! a lock, and a request is read again under it: two people deciding at
//! once never both decide. This path exists only on the host: the control
//! socket and the request files are in a directory the agent's sandbox
//! never mounts.

use std::fs::File;
use std::path::Path;

use bottle_backend::capability::{self, Restart};
use bottle_backend::state::{self, Record};
use bottle_backend::{Backend, BackendError, BackendName, Reporter};
use bottle_contract::control::{self, Change};
use bottle_gate::supervise::requests::{Ask, Request, State, Store, is_request_id, now};
use bottle_manifest::provision::{GrantedImage, GrantedRoute, GrantedRule, Grants};
use bottle_manifest::validate::is_env_name;

/// What kind of failure a decision met: each command line maps it to its
/// exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The person's input is wrong (a missing `--token-ref`, a bad note).
    Usage,
    /// The host's side is wrong (an unset variable, unreadable approvals).
    Config,
    /// No such request, or it is decided already.
    Request,
    /// Deciding failed midway (the gate did not apply it, a build failed).
    Software,
}

/// Why a decision was not made, or not carried out in full.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DecideError {
    pub kind: Kind,
    pub message: String,
}

impl DecideError {
    fn new(kind: Kind, message: impl Into<String>) -> DecideError {
        DecideError {
            kind,
            message: message.into(),
        }
    }
}

/// What the person decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve(Approval),
    Deny {
        /// What the agent is told.
        reason: Option<String>,
    },
}

/// The details of an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// For a route: the host variable holding the secret the gate injects.
    pub token_ref: Option<String>,
    /// For a route: what precedes the secret in the header.
    pub scheme: String,
    /// For an image change: what the agent is told besides the outcome.
    pub note: Option<String>,
}

impl Default for Approval {
    fn default() -> Approval {
        Approval {
            token_ref: None,
            scheme: "Bearer".to_owned(),
            note: None,
        }
    }
}

/// Who decides, where the bottles are, and what the decision may read.
pub struct Context<'a> {
    /// The state root the bottles' directories are under.
    pub state_root: &'a Path,
    /// The person deciding, for the record (see [`decider`]).
    pub by: String,
    /// The host's environment: where a route's `token_ref` is read.
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    /// Where progress goes (an image build's steps).
    pub reporter: &'a dyn Reporter,
}

/// A decision made.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The request as it is now (its state and outcome).
    pub request: Request,
    /// The bottle it came from.
    pub identity: String,
    /// One line for the person: what happened.
    pub message: String,
}

/// A request found in a bottle's store.
pub struct Found {
    pub record: Record,
    pub store: Store,
    pub request: Request,
}

/// Decides request `id` (`r-xxxxxx`, or `IDENTITY/r-xxxxxx`). `backend`
/// gives the backend a bottle runs on, for an image change's rebuild and
/// restart. Runs its own runtime: not to be called from async code.
pub fn decide<B: Backend>(
    ctx: &Context<'_>,
    id: &str,
    verdict: &Verdict,
    backend: impl FnOnce(BackendName) -> B,
) -> Result<Decided, DecideError> {
    if let Verdict::Approve(Approval {
        note: Some(note), ..
    }) = verdict
        && (note.chars().count() > 500 || note.contains(|c: char| c.is_control()))
    {
        return Err(DecideError::new(
            Kind::Usage,
            "the note is one line of at most 500 characters",
        ));
    }
    let found = find(ctx.state_root, id)?;
    let _lock = lock(&found.record)?;
    // Read again under the lock: another person may have decided, or the
    // bottle may have been removed since it was found.
    let gone = || {
        DecideError::new(
            Kind::Request,
            format!(
                "the bottle {} is gone (removed after request {} was found); nothing was decided",
                found.record.identity, found.request.id
            ),
        )
    };
    if !found.record.dir.root.is_dir() {
        return Err(gone());
    }
    let mut request = found
        .store
        .get(&found.request.id)
        .map_err(|e| DecideError::new(Kind::Software, e.to_string()))?
        .ok_or_else(gone)?;
    ensure_pending(&request)?;
    let decision = Decision {
        record: &found.record,
        store: &found.store,
        ctx,
    };
    let message = match verdict {
        Verdict::Deny { reason } => decision.deny(&mut request, reason.as_deref())?,
        Verdict::Approve(approval) => decision.approve(&mut request, approval, backend)?,
    };
    Ok(Decided {
        request,
        identity: found.record.identity.clone(),
        message,
    })
}

/// Finds request `id` (`r-xxxxxx`, or `IDENTITY/r-xxxxxx` to name the
/// bottle) under `state_root`. An id two bottles happen to share is an
/// error, never a guess: approving the wrong bottle's request would widen
/// the wrong bottle.
pub fn find(state_root: &Path, id: &str) -> Result<Found, DecideError> {
    let (bottle, id) = match id.split_once('/') {
        Some((bottle, id)) => (Some(bottle), id),
        None => (None, id),
    };
    let not_found = || {
        DecideError::new(
            Kind::Request,
            format!(
                "no request {:?}: `bottle requests` lists the pending ones",
                id.escape_debug().to_string()
            ),
        )
    };
    if !is_request_id(id) {
        return Err(not_found());
    }
    let mut found = Vec::new();
    for record in state::records(state_root)
        .into_iter()
        .filter(|r| bottle.is_none_or(|b| r.identity == b))
    {
        let store = store(&record);
        if let Some(request) = store
            .get(id)
            .map_err(|e| DecideError::new(Kind::Software, e.to_string()))?
        {
            found.push(Found {
                record,
                store,
                request,
            });
        }
    }
    if found.len() > 1 {
        let bottles: Vec<&str> = found.iter().map(|f| f.record.identity.as_str()).collect();
        return Err(DecideError::new(
            Kind::Request,
            format!(
                "request {id} exists in {} bottles ({}): name one, as {}/{id}",
                bottles.len(),
                bottles.join(", "),
                bottles[0]
            ),
        ));
    }
    found.pop().ok_or_else(not_found)
}

/// The requests of one bottle.
pub fn store(record: &Record) -> Store {
    Store::new(record.dir.requests_dir())
}

/// Fails unless `request` waits for a decision.
pub fn ensure_pending(request: &Request) -> Result<(), DecideError> {
    if request.state == State::Pending {
        return Ok(());
    }
    Err(DecideError::new(
        Kind::Request,
        format!(
            "request {} is {} already{}",
            request.id,
            request.state.as_str(),
            request
                .decided_by
                .as_ref()
                .map(|by| format!(" (by {by})"))
                .unwrap_or_default()
        ),
    ))
}

/// The host user deciding, for the record.
pub fn decider() -> String {
    let uid = nix::unistd::getuid();
    bottle_backend::accounts::name_of("passwd", uid.as_raw())
        .flatten()
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Serialises decisions on one bottle.
fn lock(record: &Record) -> Result<File, DecideError> {
    let path = record.dir.supervise_dir().join(".decide.lock");
    let failed = |e: std::io::Error| {
        DecideError::new(
            Kind::Software,
            format!(
                "{}: {e} (is the bottle {} gone?)",
                path.display(),
                record.identity
            ),
        )
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    file.lock().map_err(failed)?;
    Ok(file)
}

/// Appends a decision to the bottle's audit log, with who decided. The log
/// is the record of who widened what: failing to write it is reported,
/// but the decision stands (it is in the request file too).
fn audit(
    record: &Record,
    event: &str,
    request: &Request,
    by: &str,
    note: Option<&str>,
    reporter: &dyn Reporter,
) {
    let mut fields = serde_json::Map::new();
    fields.insert("request".into(), request.id.clone().into());
    fields.insert("kind".into(), request.ask.kind().into());
    fields.insert("ask".into(), request.ask.summary().into());
    fields.insert("decided_by".into(), by.into());
    if let Some(note) = note {
        fields.insert("note".into(), note.into());
    }
    if let Err(err) =
        bottle_gate::audit::append_now(&record.dir.audit_log(), "supervise", event, fields)
    {
        reporter.step(&format!(
            "could not write the audit log {}: {err}",
            record.dir.audit_log().display()
        ));
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, DecideError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DecideError::new(Kind::Software, e.to_string()))
}

struct Decision<'a> {
    record: &'a Record,
    store: &'a Store,
    ctx: &'a Context<'a>,
}

impl Decision<'_> {
    fn by(&self) -> &str {
        &self.ctx.by
    }

    fn save(&self, request: &Request) -> Result<(), DecideError> {
        self.store
            .save(request)
            .map_err(|e| DecideError::new(Kind::Software, e.to_string()))
    }

    fn deny(&self, request: &mut Request, reason: Option<&str>) -> Result<String, DecideError> {
        request.state = State::Denied;
        request.decided_by = Some(self.by().to_owned());
        request.decided = Some(now());
        request.outcome = Some(format!(
            "denied by {}: {}",
            self.by(),
            reason.unwrap_or("no reason given")
        ));
        self.save(request)?;
        audit(
            self.record,
            "denied",
            request,
            self.by(),
            reason,
            self.ctx.reporter,
        );
        Ok(format!(
            "denied {} ({}) for {}",
            request.id,
            request.ask.summary(),
            self.record.identity
        ))
    }

    fn approve<B: Backend>(
        &self,
        request: &mut Request,
        approval: &Approval,
        backend: impl FnOnce(BackendName) -> B,
    ) -> Result<String, DecideError> {
        let mut grants = Grants::load(&self.record.dir.grants())
            .map_err(|e| DecideError::new(Kind::Config, format!("the bottle's approvals: {e}")))?;
        let by = self.by().to_owned();
        match request.ask.clone() {
            Ask::Egress { .. } => {
                let rule = request.ask.rule().unwrap_or_default();
                grants.allow.push(GrantedRule {
                    rule: rule.clone(),
                    request: request.id.clone(),
                });
                self.save_grants(&grants)?;
                self.approved(request, None)?;
                let change = Change::Allow {
                    rule: rule.clone(),
                    request: request.id.clone(),
                    decided_by: by,
                };
                self.apply_live(request, &change, &format!("{rule} is allowed"))
            }
            Ask::Route { host, header } => {
                let Some(var) = approval.token_ref.as_deref() else {
                    return Err(DecideError::new(
                        Kind::Usage,
                        format!(
                            "request {} asks for a credential route to {host}: give the token reference (--token-ref VAR), the host variable holding the secret the gate injects",
                            request.id
                        ),
                    ));
                };
                let secret = self.read_secret(var, &host)?;
                let scheme = &approval.scheme;
                if scheme.contains(|c: char| c.is_control() || c.is_whitespace()) {
                    return Err(DecideError::new(
                        Kind::Usage,
                        "the scheme must be one word, such as Bearer",
                    ));
                }
                grants.allow.push(GrantedRule {
                    rule: host.clone(),
                    request: request.id.clone(),
                });
                grants.routes.retain(|r| r.host != host);
                grants.routes.push(GrantedRoute {
                    host: host.clone(),
                    header: header.clone(),
                    scheme: scheme.clone(),
                    token_ref: var.to_owned(),
                    request: request.id.clone(),
                });
                self.save_grants(&grants)?;
                self.approved(request, Some(var))?;
                let change = Change::Route {
                    host: host.clone(),
                    header: header.clone(),
                    scheme: scheme.clone(),
                    secret,
                    request: request.id.clone(),
                    decided_by: by,
                };
                self.apply_live(
                    request,
                    &change,
                    &format!("requests to {host} carry the credential in {header}"),
                )
            }
            Ask::Image { fragment } => {
                self.image_change(request, grants, fragment, approval.note.as_deref(), backend)
            }
        }
    }

    /// The secret in host variable `var`, checked.
    fn read_secret(&self, var: &str, host: &str) -> Result<String, DecideError> {
        if !is_env_name(var) {
            return Err(DecideError::new(
                Kind::Usage,
                format!("the token reference {var:?} is not a variable name"),
            ));
        }
        match (self.ctx.env)(var) {
            Some(value) if !value.is_empty() && !value.contains(['\r', '\n', '\0']) => Ok(value),
            Some(_) => Err(DecideError::new(
                Kind::Config,
                format!("the host variable {var} (the secret for {host}) is empty or spans lines"),
            )),
            None => Err(DecideError::new(
                Kind::Config,
                format!(
                    "the host variable {var} (the secret for {host}) is not set: export it and approve again"
                ),
            )),
        }
    }

    fn save_grants(&self, grants: &Grants) -> Result<(), DecideError> {
        self.record
            .dir
            .write_json(&self.record.dir.grants(), grants)
            .map_err(|e| DecideError::new(Kind::Software, e.to_string()))
    }

    /// Records the approval (state, decider, audit line).
    fn approved(&self, request: &mut Request, note: Option<&str>) -> Result<(), DecideError> {
        request.state = State::Approved;
        request.decided_by = Some(self.by().to_owned());
        request.decided = Some(now());
        request.outcome = Some(format!("approved by {}", self.by()));
        self.save(request)?;
        audit(
            self.record,
            "approved",
            request,
            self.by(),
            note,
            self.ctx.reporter,
        );
        Ok(())
    }

    fn finish(
        &self,
        request: &mut Request,
        state: State,
        outcome: String,
    ) -> Result<(), DecideError> {
        request.state = state;
        request.outcome = Some(outcome);
        self.save(request)
    }

    /// Hands `change` to the running gate; a bottle that is not running
    /// gets it at its next start (it is in grants.json already).
    fn apply_live(
        &self,
        request: &mut Request,
        change: &Change,
        what: &str,
    ) -> Result<String, DecideError> {
        let socket = self.record.dir.control_socket();
        let identity = &self.record.identity;
        let by = self.by().to_owned();
        if !self.record.is_live() || !socket.exists() {
            self.finish(
                request,
                State::Approved,
                format!("approved by {by}: {what} from the bottle's next start"),
            )?;
            return Ok(format!(
                "approved {}: {identity} is not running; {what} when it is resumed",
                request.id
            ));
        }
        let sent = runtime()?.block_on(control::send(&socket, change));
        match sent {
            Ok(reply) if reply.ok => {
                self.finish(
                    request,
                    State::Applied,
                    format!("approved by {by}: {what} now"),
                )?;
                Ok(format!(
                    "approved {}: in {identity}, {what} now",
                    request.id
                ))
            }
            Ok(reply) => Err(self.not_applied(request, &reply.message)),
            Err(err) => Err(self.not_applied(request, &err.to_string())),
        }
    }

    fn not_applied(&self, request: &mut Request, why: &str) -> DecideError {
        let _ = self.finish(
            request,
            State::Approved,
            format!(
                "approved by {}; applies from the bottle's next start",
                self.by()
            ),
        );
        DecideError::new(
            Kind::Software,
            format!(
                "approved {} and saved for the bottle's next start, but the running gate did not apply it: {why}",
                request.id
            ),
        )
    }

    /// A capability block: build the bottle's own image with the new
    /// fragment, then restart the agent on it. A failed build changes
    /// nothing but the request, which carries the outcome to the agent.
    fn image_change<B: Backend>(
        &self,
        request: &mut Request,
        mut grants: Grants,
        fragment: String,
        note: Option<&str>,
        backend: impl FnOnce(BackendName) -> B,
    ) -> Result<String, DecideError> {
        let identity = self.record.identity.clone();
        let by = self.by().to_owned();
        let mut granted = grants.image.clone().unwrap_or_else(|| GrantedImage {
            tag: capability::bottle_tag(&identity),
            fragments: Vec::new(),
            requests: Vec::new(),
        });
        granted.fragments.push(fragment.clone());
        granted.requests.push(request.id.clone());
        let approved: Vec<String> = grants.allow.iter().map(|g| g.rule.clone()).collect();
        let meta = self
            .record
            .metadata
            .as_ref()
            .map_err(|e| DecideError::new(Kind::Config, format!("{identity}: {e}")))?;
        let plan = &meta.plan;
        let backend_name: BackendName = meta.backend.parse().map_err(|e: String| {
            DecideError::new(
                Kind::Config,
                format!(
                    "{}: metadata.json names its backend: {e}",
                    self.record.dir.root.display()
                ),
            )
        })?;
        let backend = backend(backend_name);
        self.ctx.reporter.step(&format!(
            "the change {} is built step by step, in the bottle's policy, as:\n{}",
            request.id,
            bottle_manifest::fragment::render_text(&fragment).trim_end()
        ));
        self.approved(request, None)?;
        self.finish(
            request,
            State::Approved,
            format!(
                "approved by {by}: building the image; the bottle restarts on it once it is built (/workspace and home are kept)"
            ),
        )?;
        let software = |e: BackendError| DecideError::new(Kind::Software, format!("{e:#}"));
        // Kept from here on, even under --rm: the build is on its way.
        capability::mark_preserved(&self.record.dir).map_err(software)?;
        let runtime = runtime()?;
        let change = capability::ImageChange {
            granted: granted.clone(),
            approved,
        };
        if let Err(err) = runtime.block_on(backend.rebuild(plan, &change, self.ctx.reporter)) {
            let message = format!("{err:#}");
            // The agent is told a status, never what the commands printed
            // (that is the person's: the terminal and image/build.log).
            let status = match &err {
                BackendError::Build { message, .. } => message.clone(),
                BackendError::Refused { why, .. } => format!("{backend_name} cannot: {why}"),
                _ => "the build could not be carried out".to_owned(),
            };
            self.finish(
                request,
                State::Failed,
                format!(
                    "approved by {by}, but the image change did not build: {status}; the bottle keeps its old image{}",
                    note.map(|n| format!(". {}", n.trim())).unwrap_or_default()
                ),
            )?;
            audit(
                self.record,
                "apply_failed",
                request,
                &by,
                Some("image build failed"),
                self.ctx.reporter,
            );
            return Err(DecideError::new(
                Kind::Software,
                format!(
                    "the image change {} did not build; {identity} keeps running on its old image (the agent is told):\n{message}",
                    request.id
                ),
            ));
        }
        grants.image = Some(granted.clone());
        self.save_grants(&grants)?;
        audit(
            self.record,
            "applied",
            request,
            &by,
            Some(&granted.tag),
            self.ctx.reporter,
        );
        if !self.record.is_live() {
            self.finish(
                request,
                State::Approved,
                format!(
                    "approved by {by}: rebuilt as {}; the bottle runs it when resumed",
                    granted.tag
                ),
            )?;
            return Ok(format!(
                "approved {}: {identity} is not running; `bottle resume {identity}` starts it on {}",
                request.id, granted.tag
            ));
        }
        self.finish(
            request,
            State::Applied,
            format!(
                "approved by {by}: rebuilt as {}; the bottle restarted on it with /workspace and home kept",
                granted.tag
            ),
        )?;
        // The gate says so in show_policy (best effort: it only describes).
        let told = Change::Image {
            image: capability::describe(&granted, &plan.images.agent),
            request: request.id.clone(),
            decided_by: by.clone(),
        };
        let _ = runtime.block_on(control::send(&self.record.dir.control_socket(), &told));
        capability::request_restart(
            &self.record.dir,
            &Restart {
                request: request.id.clone(),
                image: granted.clone(),
            },
        )
        .map_err(software)?;
        let stopped = runtime
            .block_on(backend.stop_agent(&identity, &self.record.dir))
            .map_err(software)?;
        Ok(format!(
            "approved {}: {identity} {} on {}",
            request.id,
            if stopped { "restarts" } else { "will start" },
            granted.tag
        ))
    }
}
