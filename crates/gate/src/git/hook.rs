//! `bottle git-hook pre-receive`: runs inside `git receive-pack` on the
//! gate's mirror, after the agent's objects arrived (in quarantine) and
//! before any ref moves. It checks every update against the push policy
//! and forwards the accepted ones upstream, all or nothing (`--atomic`).
//! Its exit status decides: non-zero and git moves no ref. What it prints
//! reaches the agent as `remote:` lines.

use std::io::BufRead;
use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value, json};

use super::policy::{self, Update};
use crate::audit::append_now;
use crate::config::{GateConfig, GitEntryConfig};

/// Runs the hook; returns its exit status.
pub fn pre_receive(config: &Path, entry: &str, input: impl BufRead) -> i32 {
    let config = match GateConfig::load(config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!(
                "bot-bottle: the git gate cannot read its configuration ({err}); nothing was pushed"
            );
            return 1;
        }
    };
    let Some(entry) = config.git.entries.iter().find(|e| e.name == entry) else {
        eprintln!("bot-bottle: no upstream named {entry}; nothing was pushed");
        return 1;
    };
    let updates: Vec<Update> = input
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| Update::parse(&l))
        .collect();
    let audit = |decision: &str, rule: Option<&str>, reason: &str| {
        let refs: Vec<Value> = updates
            .iter()
            .map(|u| json!({ "ref": u.refname, "old": u.old, "new": u.new }))
            .collect();
        let mut fields = Map::new();
        fields.insert("remote".into(), entry.name.clone().into());
        fields.insert("upstream".into(), entry.upstream.clone().into());
        fields.insert("refs".into(), refs.into());
        fields.insert("decision".into(), decision.into());
        if let Some(rule) = rule {
            fields.insert("rule".into(), rule.into());
        }
        if !reason.is_empty() {
            fields.insert("reason".into(), reason.into());
        }
        if let Err(err) = append_now(&config.audit_log, "git", "push", fields) {
            eprintln!("bot-bottle: warning: cannot write the audit log: {err}");
        }
    };

    let mut refused = Vec::new();
    for update in &updates {
        if let Err(r) = policy::check(&entry.push, update, || {
            is_ancestor(&update.old, &update.new)
        }) {
            eprintln!(
                "bot-bottle: refused {}: {} (rule {})",
                update.refname, r.reason, r.rule
            );
            refused.push(r);
        }
    }
    if let Some(first) = refused.first() {
        eprintln!(
            "bot-bottle: nothing was pushed upstream; the push policy is set in the bottle's manifest"
        );
        audit("deny", Some(first.rule), &first.reason);
        return 1;
    }

    match forward(entry, &updates) {
        Ok(()) => {
            audit("allow", None, "");
            0
        }
        Err(err) => {
            eprintln!("bot-bottle: the upstream did not take the push, so nothing changed: {err}");
            audit("deny", Some("upstream"), &err);
            1
        }
    }
}

/// Whether `old` is an ancestor of `new` (a fast-forward).
fn is_ancestor(old: &str, new: &str) -> bool {
    Command::new("git")
        .args(["merge-base", "--is-ancestor", old, new])
        .status()
        .is_ok_and(|s| s.success())
}

/// Pushes the updates upstream with the gate's key, atomically.
fn forward(entry: &GitEntryConfig, updates: &[Update]) -> Result<(), String> {
    let specs: Vec<String> = updates
        .iter()
        .map(|u| {
            if u.is_delete() {
                format!(":{}", u.refname)
            } else if entry.push.force && !u.is_create() {
                format!("+{}:{}", u.new, u.refname)
            } else {
                format!("{}:{}", u.new, u.refname)
            }
        })
        .collect();
    let out = Command::new("git")
        .args(["push", "--atomic", "--porcelain", "--quiet", "upstream"])
        .args(&specs)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git push: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let detail: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines().filter(|l| l.starts_with('!')))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Err(detail.join("; "))
}
