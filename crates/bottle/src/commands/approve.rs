//! `bottle approve ID [--token-ref VAR]`: a person widens a bottle.
//!
//! The approval is written to the bottle's `grants.json` first (so `resume`
//! keeps it), then applied: a host or route through the running gate's
//! control socket (live, no restart), an image change by building the
//! bottle's own image and restarting the agent on it (a capability block).
//! This path exists only on the host: the control socket and the request
//! files are in a directory the agent's sandbox never mounts.

use std::fs::File;

use anyhow::anyhow;
use bottle_backend::capability::{self, Restart};
use bottle_backend::registry::AnyBackend;
use bottle_backend::state::Record;
use bottle_backend::{Backend, BackendError, BackendName};
use bottle_gate::supervise::control::{self, Change};
use bottle_gate::supervise::requests::{Ask, Request, State, Store, now};
use bottle_manifest::provision::{GrantedImage, GrantedRoute, GrantedRule, Grants};
use bottle_manifest::validate::is_env_name;

use super::requests::{decider, ensure_pending, find};
use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, exit};

pub fn run(
    id: &str,
    token_ref: Option<&str>,
    scheme: &str,
    note: Option<&str>,
    printer: &Printer,
) -> Result<i32, Failure> {
    if let Some(note) = note
        && (note.chars().count() > 500 || note.contains(|c: char| c.is_control()))
    {
        return Err(Failure::new(
            exit::USAGE,
            anyhow!("--note is one line of at most 500 characters"),
        ));
    }
    let global = Global::resolve()?;
    let (record, store, found) = find(&global, id)?;
    let id = found.id.as_str();
    let _lock = lock(&record)?;
    // Read again under the lock: another person may have decided.
    let mut request = store
        .get(id)
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| anyhow!("request {id} disappeared"))?;
    ensure_pending(&request)?;
    let by = decider();
    let mut grants = Grants::load(&record.dir.grants())
        .map_err(|e| Failure::new(exit::CONFIG, anyhow!("the bottle's approvals: {e}")))?;
    let decision = Decision {
        record: &record,
        store: &store,
        by: &by,
        printer,
        note,
    };
    match request.ask.clone() {
        Ask::Egress { .. } => {
            let rule = request.ask.rule().unwrap_or_default();
            grants.allow.push(GrantedRule {
                rule: rule.clone(),
                request: request.id.clone(),
            });
            decision.save_grants(&grants)?;
            decision.approved(&mut request, None)?;
            let change = Change::Allow {
                rule: rule.clone(),
                request: request.id.clone(),
                decided_by: by.clone(),
            };
            decision.apply_live(&mut request, &change, &format!("{rule} is allowed"))
        }
        Ask::Route { host, header } => {
            let Some(var) = token_ref else {
                return Err(Failure::new(
                    exit::USAGE,
                    anyhow!(
                        "request {id} asks for a credential route to {host}: pass --token-ref VAR, the host variable holding the secret the gate injects"
                    ),
                ));
            };
            let secret = read_secret(var, &host)?;
            if scheme.contains(|c: char| c.is_control() || c.is_whitespace()) {
                return Err(Failure::new(
                    exit::USAGE,
                    anyhow!("--scheme must be one word, such as Bearer"),
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
                scheme: scheme.to_owned(),
                token_ref: var.to_owned(),
                request: request.id.clone(),
            });
            decision.save_grants(&grants)?;
            decision.approved(&mut request, Some(var))?;
            let change = Change::Route {
                host: host.clone(),
                header: header.clone(),
                scheme: scheme.to_owned(),
                secret,
                request: request.id.clone(),
                decided_by: by.clone(),
            };
            decision.apply_live(
                &mut request,
                &change,
                &format!("requests to {host} carry the credential in {header}"),
            )
        }
        Ask::Image { fragment } => decision.image_change(&mut request, grants, fragment, &global),
    }
}

/// Serialises decisions on one bottle.
pub fn lock(record: &Record) -> Result<File, Failure> {
    let path = record.dir.supervise_dir().join(".decide.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(file)
}

/// Appends a decision to the bottle's audit log, with who decided.
pub fn audit(
    record: &Record,
    event: &str,
    request: &Request,
    by: &str,
    note: Option<&str>,
    printer: &Printer,
) {
    let mut fields = serde_json::Map::new();
    fields.insert("request".into(), request.id.clone().into());
    fields.insert("kind".into(), request.ask.kind().into());
    fields.insert("ask".into(), request.ask.summary().into());
    fields.insert("decided_by".into(), by.into());
    if let Some(note) = note {
        fields.insert("note".into(), note.into());
    }
    // The log is the record of who widened what: failing to write it is
    // reported, but the decision stands (it is in the request file too).
    if let Err(err) =
        bottle_gate::audit::append_now(&record.dir.audit_log(), "supervise", event, fields)
    {
        printer.error(&format!(
            "could not write the audit log {}: {err}",
            record.dir.audit_log().display()
        ));
    }
}

/// The secret in host variable `var`, checked.
fn read_secret(var: &str, host: &str) -> Result<String, Failure> {
    if !is_env_name(var) {
        return Err(Failure::new(
            exit::USAGE,
            anyhow!("--token-ref {var:?} is not a variable name"),
        ));
    }
    match std::env::var(var) {
        Ok(value) if !value.is_empty() && !value.contains(['\r', '\n', '\0']) => Ok(value),
        Ok(_) => Err(Failure::new(
            exit::CONFIG,
            anyhow!("the host variable {var} (the secret for {host}) is empty or spans lines"),
        )),
        Err(_) => Err(Failure::new(
            exit::CONFIG,
            anyhow!(
                "the host variable {var} (the secret for {host}) is not set: export it and approve again"
            ),
        )),
    }
}

struct Decision<'a> {
    record: &'a Record,
    store: &'a Store,
    by: &'a str,
    printer: &'a Printer,
    /// What the person chose to tell the agent about the outcome.
    note: Option<&'a str>,
}

impl Decision<'_> {
    fn save_grants(&self, grants: &Grants) -> Result<(), Failure> {
        self.record
            .dir
            .write_json(&self.record.dir.grants(), grants)
            .map_err(Failure::from)
    }

    /// Records the approval (state, decider, audit line).
    fn approved(&self, request: &mut Request, note: Option<&str>) -> Result<(), Failure> {
        request.state = State::Approved;
        request.decided_by = Some(self.by.to_owned());
        request.decided = Some(now());
        request.outcome = Some(format!("approved by {}", self.by));
        self.store.save(request).map_err(anyhow::Error::from)?;
        audit(
            self.record,
            "approved",
            request,
            self.by,
            note,
            self.printer,
        );
        Ok(())
    }

    fn finish(&self, request: &mut Request, state: State, outcome: String) -> Result<(), Failure> {
        request.state = state;
        request.outcome = Some(outcome);
        self.store.save(request).map_err(anyhow::Error::from)?;
        Ok(())
    }

    /// Hands `change` to the running gate; a bottle that is not running
    /// gets it at its next start (it is in grants.json already).
    fn apply_live(
        &self,
        request: &mut Request,
        change: &Change,
        what: &str,
    ) -> Result<i32, Failure> {
        let socket = self.record.dir.control_socket();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(exit::SOFTWARE, e))?;
        let identity = &self.record.identity;
        if !self.record.is_live() || !socket.exists() {
            self.finish(
                request,
                State::Approved,
                format!(
                    "approved by {}: {what} from the bottle's next start",
                    self.by
                ),
            )?;
            self.printer.step(&format!(
                "approved {}: {identity} is not running; {what} when it is resumed",
                request.id
            ));
            return Ok(0);
        }
        match runtime.block_on(control::send(&socket, change)) {
            Ok(reply) if reply.ok => {
                self.finish(
                    request,
                    State::Applied,
                    format!("approved by {}: {what} now", self.by),
                )?;
                self.printer.step(&format!(
                    "approved {}: in {identity}, {what} now",
                    request.id
                ));
                Ok(0)
            }
            Ok(reply) => Err(self.not_applied(request, &reply.message)),
            Err(err) => Err(self.not_applied(request, &err.to_string())),
        }
    }

    fn not_applied(&self, request: &mut Request, why: &str) -> Failure {
        let _ = self.finish(
            request,
            State::Approved,
            format!(
                "approved by {}; applies from the bottle's next start",
                self.by
            ),
        );
        Failure::new(
            exit::SOFTWARE,
            anyhow!(
                "approved {} and saved for the bottle's next start, but the running gate did not apply it: {why}",
                request.id
            ),
        )
    }

    /// A capability block: build the bottle's own image with the new
    /// fragment, then restart the agent on it. A failed build changes
    /// nothing but the request, which carries the build log to the agent.
    fn image_change(
        &self,
        request: &mut Request,
        mut grants: Grants,
        fragment: String,
        global: &Global,
    ) -> Result<i32, Failure> {
        let identity = self.record.identity.clone();
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
            .map_err(|e| Failure::new(exit::CONFIG, anyhow!("{identity}: {e}")))?;
        let plan = &meta.plan;
        let backend_name: BackendName = meta.backend.parse().map_err(|e: String| {
            Failure::new(
                exit::CONFIG,
                anyhow!(
                    "{}: metadata.json names its backend: {e}",
                    self.record.dir.root.display()
                ),
            )
        })?;
        let backend = AnyBackend::new(
            backend_name,
            &crate::settings::Start::resolve(None, global)?.backends,
        );
        self.printer.step(&format!(
            "the change {} is built step by step, in the bottle's policy, as:\n{}",
            request.id,
            bottle_manifest::fragment::render_text(&fragment).trim_end()
        ));
        self.approved(request, None)?;
        self.finish(
            request,
            State::Approved,
            format!(
                "approved by {}: building the image; the bottle restarts on it once it is built (/workspace and home are kept)",
                self.by
            ),
        )?;
        // Kept from here on, even under --rm: the build is on its way.
        capability::mark_preserved(&self.record.dir)?;
        let runtime = super::runtime()?;
        let change = capability::ImageChange {
            granted: granted.clone(),
            approved,
        };
        if let Err(err) = runtime.block_on(backend.rebuild(plan, &change, self.printer)) {
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
                    "approved by {}, but the image change did not build: {status}; the bottle keeps its old image{}",
                    self.by,
                    self.note
                        .map(|n| format!(". {}", n.trim()))
                        .unwrap_or_default()
                ),
            )?;
            audit(
                self.record,
                "apply_failed",
                request,
                self.by,
                Some("image build failed"),
                self.printer,
            );
            return Err(Failure::new(
                exit::SOFTWARE,
                anyhow!(
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
            self.by,
            Some(&granted.tag),
            self.printer,
        );
        if !self.record.is_live() {
            self.finish(
                request,
                State::Approved,
                format!(
                    "approved by {}: rebuilt as {}; the bottle runs it when resumed",
                    self.by, granted.tag
                ),
            )?;
            self.printer.step(&format!(
                "approved {}: {identity} is not running; `bottle resume {identity}` starts it on {}",
                request.id, granted.tag
            ));
            return Ok(0);
        }
        self.finish(
            request,
            State::Applied,
            format!(
                "approved by {}: rebuilt as {}; the bottle restarted on it with /workspace and home kept",
                self.by, granted.tag
            ),
        )?;
        // The gate says so in show_policy (best effort: it only describes).
        let told = Change::Image {
            image: capability::describe(&granted, &plan.images.agent),
            request: request.id.clone(),
            decided_by: self.by.to_owned(),
        };
        let _ = runtime.block_on(control::send(&self.record.dir.control_socket(), &told));
        capability::request_restart(
            &self.record.dir,
            &Restart {
                request: request.id.clone(),
                image: granted.clone(),
            },
        )?;
        let stopped = runtime.block_on(backend.stop_agent(&identity, &self.record.dir))?;
        self.printer.step(&format!(
            "approved {}: {identity} {} on {}",
            request.id,
            if stopped { "restarts" } else { "will start" },
            granted.tag
        ));
        Ok(0)
    }
}
