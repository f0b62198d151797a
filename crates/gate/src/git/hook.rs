//! `bottle git-hook pre-receive`: runs inside `git receive-pack` on the
//! gate's mirror, after the agent's objects arrived (in quarantine) and
//! before any ref moves. It checks every update against the push policy
//! and forwards the accepted ones upstream, all or nothing (`--atomic`).
//! Its exit status decides: non-zero and git moves no ref. What it prints
//! reaches the agent as `remote:` lines.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value, json};

use super::policy::{self, Update, is_zero};
use crate::audit::append_now;
use crate::config::GateConfig;

/// Most ref updates one push may carry.
pub const MAX_UPDATES: usize = 1000;

/// Runs the hook; returns its exit status.
///
/// The old value of each ref is read from the mirror, never taken from
/// the push: receive-pack hands the hook the values the client claimed,
/// and the upstream is pushed before receive-pack would notice a claim
/// was false. The upstream push then carries a lease on each of those
/// values, so it moves nothing if the upstream moved in between.
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
    // Every line is read as bytes and must be one update: a line that is
    // not UTF-8 (git allows such ref names) or a read error refuses the
    // whole push rather than ending the list early, which would let the
    // updates after it through unchecked.
    let mut claimed = Vec::new();
    for line in input.split(b'\n') {
        let line = match line {
            Ok(line) => line,
            Err(err) => {
                eprintln!("bot-bottle: cannot read the push's updates ({err}); nothing was pushed");
                return 1;
            }
        };
        let Ok(line) = String::from_utf8(line) else {
            eprintln!("bot-bottle: a ref name in the push is not UTF-8; nothing was pushed");
            return 1;
        };
        if line.is_empty() {
            continue;
        }
        if claimed.len() == MAX_UPDATES {
            eprintln!(
                "bot-bottle: a push may update at most {MAX_UPDATES} refs; nothing was pushed"
            );
            return 1;
        }
        match Update::parse(&line) {
            Some(update) => claimed.push(update),
            None => {
                eprintln!(
                    "bot-bottle: git sent an update line the gate cannot read; nothing was pushed"
                );
                return 1;
            }
        }
    }
    if claimed.is_empty() {
        eprintln!("bot-bottle: a push without updates; nothing was pushed");
        return 1;
    }
    // One push of a mirror at a time, whatever started it: the gate holds
    // the mirror's lock while receive-pack runs, and this lock keeps the
    // record of deleted refs read, judged and written by one hook alone.
    let _turn = match take_turn(&config.git.dir, &entry.name) {
        Ok(lock) => lock,
        Err(err) => {
            eprintln!("bot-bottle: cannot lock the mirror ({err}); nothing was pushed");
            return 1;
        }
    };
    let current = match current_refs() {
        Ok(refs) => refs,
        Err(err) => {
            eprintln!("bot-bottle: cannot read the mirror's refs ({err}); nothing was pushed");
            return 1;
        }
    };
    let zero = "0".repeat(claimed.first().map_or(40, |u| u.new.len()));
    let updates: Vec<Update> = claimed
        .into_iter()
        .map(|u| Update {
            old: current
                .get(&u.refname)
                .cloned()
                .unwrap_or_else(|| zero.clone()),
            ..u
        })
        .collect();
    let deleted_path = deleted_record(&config.git.dir, &entry.name);
    let deleted = match read_deleted(&deleted_path) {
        Ok(map) => map,
        Err(err) => {
            eprintln!("bot-bottle: {err}; nothing was pushed");
            return 1;
        }
    };
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
        let before = deleted.get(&update.refname).map(String::as_str);
        if let Err(r) = policy::check(&entry.push, update, before, |from| {
            is_ancestor(from, &update.new)
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

    // Deletions are recorded before they go upstream, and a push whose
    // record cannot be written goes nowhere: a delete the gate forgot
    // would let the ref be re-created anywhere later. (A record of a delete
    // the upstream then refuses only makes a later create stricter.)
    let mut after = deleted.clone();
    for update in updates.iter().filter(|u| u.is_delete()) {
        after.insert(update.refname.clone(), update.old.clone());
    }
    if after != deleted
        && let Err(err) = crate::files::write_json_atomic(&deleted_path, &after)
    {
        eprintln!("bot-bottle: cannot record the deleted refs ({err}); nothing was pushed");
        audit(
            "deny",
            Some("internal"),
            "the record of deleted refs cannot be written",
        );
        return 1;
    }
    match forward(&updates) {
        Ok(()) => {
            for update in updates.iter().filter(|u| !u.is_delete()) {
                after.remove(&update.refname);
            }
            if let Err(err) = crate::files::write_json_atomic(&deleted_path, &after) {
                eprintln!("bot-bottle: warning: cannot update the record of deleted refs: {err}");
            }
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

/// An exclusive lock on `DIR/NAME.lock`, held until it is dropped.
fn take_turn(dir: &Path, remote: &str) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let path = dir.join(format!("{remote}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Waited for, but not for ever: a push stuck upstream must not stop
    // every later one.
    let deadline = std::time::Instant::now() + TURN_WAIT;
    let mut file = file;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(format!(
                    "another push of this mirror has run for over {} s",
                    TURN_WAIT.as_secs()
                ));
            }
            Err((_, errno)) => return Err(format!("{}: {errno}", path.display())),
        }
    }
}

/// Longest a hook waits for another push of its mirror to finish.
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Where the values of refs deleted through the gate are kept.
pub fn deleted_record(dir: &Path, remote: &str) -> PathBuf {
    dir.join(format!("{remote}.deleted.json"))
}

fn read_deleted(path: &Path) -> Result<BTreeMap<String, String>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a record of deleted refs: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Every ref of the mirror (the hook runs in it) and its value.
fn current_refs() -> Result<BTreeMap<String, String>, String> {
    let out = Command::new("git")
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect())
}

/// Whether `old` is an ancestor of `new` (a fast-forward).
fn is_ancestor(old: &str, new: &str) -> bool {
    Command::new("git")
        .args(["merge-base", "--is-ancestor", old, new])
        .status()
        .is_ok_and(|s| s.success())
}

/// Pushes the updates upstream with the gate's key, atomically, each with
/// a lease on the value the policy judged it from.
fn forward(updates: &[Update]) -> Result<(), String> {
    if updates.is_empty() {
        // `git push` without a refspec would push what push.default says.
        return Err("nothing to push".to_owned());
    }
    let mut args: Vec<String> = Vec::new();
    for u in updates {
        let expect = if is_zero(&u.old) { "" } else { u.old.as_str() };
        args.push(format!("--force-with-lease={}:{expect}", u.refname));
    }
    args.push("upstream".to_owned());
    for u in updates {
        args.push(if u.is_delete() {
            format!(":{}", u.refname)
        } else {
            format!("{}:{}", u.new, u.refname)
        });
    }
    let out = Command::new("git")
        .args(["push", "--atomic", "--porcelain", "--quiet"])
        .args(&args)
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
