//! The push policy: which ref updates the git gate forwards upstream.

use crate::config::PushConfig;

/// The all-zero object id git uses for "no such ref".
pub fn is_zero(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'0')
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl Update {
    /// Parses a pre-receive line: `<old> <new> <ref>`, with object ids of
    /// SHA-1 or SHA-256 length, in lowercase hex, and a ref under `refs/`.
    pub fn parse(line: &str) -> Option<Update> {
        let mut parts = line.split(' ');
        let (old, new, refname) = (parts.next()?, parts.next()?, parts.next()?);
        let id = |s: &str| {
            matches!(s.len(), 40 | 64)
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let name_ok = refname.starts_with("refs/")
            && !refname.is_empty()
            && refname.bytes().all(|b| b > b' ' && b != 0x7f);
        (parts.next().is_none() && id(old) && id(new) && old.len() == new.len() && name_ok).then(
            || Update {
                old: old.to_owned(),
                new: new.to_owned(),
                refname: refname.to_owned(),
            },
        )
    }

    pub fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }

    pub fn is_create(&self) -> bool {
        is_zero(&self.old)
    }
}

/// Why an update was refused: the rule and the reason, as the agent reads
/// it on a `remote:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub rule: &'static str,
    pub reason: String,
}

/// Checks one update. `update.old` must be the ref's real value in the
/// mirror (never what the client claims). `deleted` is the value the ref
/// had when a push through this gate deleted it, if one did: creating the
/// ref again is then judged as an update from that value, so delete and
/// re-create cannot stand in for a force push or a moved tag.
/// `fast_forward(from)` says whether `from` is an ancestor of `new`.
pub fn check(
    policy: &PushConfig,
    update: &Update,
    deleted: Option<&str>,
    fast_forward: impl FnOnce(&str) -> bool,
) -> Result<(), Refused> {
    let refused = |rule, reason: String| Err(Refused { rule, reason });
    // What the ref last pointed at: now, or before this gate deleted it.
    let before = if update.is_create() {
        deleted.filter(|d| !is_zero(d))
    } else {
        Some(update.old.as_str())
    };
    if let Some(tag) = update.refname.strip_prefix("refs/tags/") {
        if !policy.tags {
            return refused(
                "push.tags",
                format!("pushing tags is not allowed (tag {tag})"),
            );
        }
        if update.is_delete() && !policy.delete {
            return refused("push.delete", format!("deleting tag {tag} is not allowed"));
        }
        if update.is_delete() {
            return Ok(());
        }
        match before {
            Some(old) if update.is_create() && old != update.new => {
                return refused(
                    "push.tags",
                    format!(
                        "tag {tag} was deleted through the gate and is being created at another commit; moving a tag is not allowed"
                    ),
                );
            }
            Some(_) if !update.is_create() => {
                return refused(
                    "push.tags",
                    format!("tag {tag} exists upstream; moving a tag is not allowed"),
                );
            }
            _ => {}
        }
        return Ok(());
    }
    let Some(branch) = update.refname.strip_prefix("refs/heads/") else {
        return refused(
            "push.branches",
            format!("{} is not a branch", update.refname),
        );
    };
    if !policy.branches.iter().any(|pattern| glob(pattern, branch)) {
        return refused(
            "push.branches",
            format!(
                "branch {branch} is not in push.branches ({})",
                policy.branches.join(", ")
            ),
        );
    }
    if update.is_delete() {
        if !policy.delete {
            return refused(
                "push.delete",
                format!("deleting branch {branch} is not allowed"),
            );
        }
        return Ok(());
    }
    if let Some(old) = before
        && !policy.force
        && !fast_forward(old)
    {
        let how = if update.is_create() {
            "re-creates it (deleted through the gate) at a commit that does not contain the one it had"
        } else {
            "is not a fast-forward"
        };
        return refused(
            "push.force",
            format!("the update of {branch} {how}, and force pushes are not allowed"),
        );
    }
    Ok(())
}

/// Glob match where `*` matches any run of characters (including `/`, as
/// in git refspecs) and `?` any one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PushConfig {
        PushConfig {
            branches: vec!["agent/*".into(), "bottle/*".into()],
            force: false,
            delete: false,
            tags: false,
            max_pack_bytes: None,
        }
    }

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn update(old: &str, new: &str, refname: &str) -> Update {
        Update::parse(&format!("{old} {new} {refname}")).unwrap_or_else(|| panic!("parse"))
    }

    #[test]
    fn globs() {
        assert!(glob("agent/*", "agent/x"));
        assert!(glob("agent/*", "agent/x/y"));
        assert!(!glob("agent/*", "agentx"));
        assert!(!glob("agent/*", "main"));
        assert!(glob("release-?", "release-1"));
        assert!(glob("*", "anything"));
    }

    #[test]
    fn the_default_policy() {
        let p = policy();
        assert!(check(&p, &update(Z, A, "refs/heads/agent/x"), None, |_| true).is_ok());
        assert!(check(&p, &update(A, B, "refs/heads/agent/x"), None, |_| true).is_ok());
        let rule = |u: Update, ff: bool| check(&p, &u, None, |_| ff).map_err(|r| r.rule);
        assert_eq!(
            rule(update(Z, A, "refs/heads/main"), true),
            Err("push.branches")
        );
        assert_eq!(
            rule(update(A, B, "refs/heads/agent/x"), false),
            Err("push.force")
        );
        assert_eq!(
            rule(update(A, Z, "refs/heads/agent/x"), true),
            Err("push.delete")
        );
        assert_eq!(rule(update(Z, A, "refs/tags/v1"), true), Err("push.tags"));
        assert_eq!(
            rule(update(Z, A, "refs/notes/commits"), true),
            Err("push.branches")
        );
    }

    #[test]
    fn allowances() {
        let p = PushConfig {
            force: true,
            delete: true,
            tags: true,
            ..policy()
        };
        assert!(check(&p, &update(A, B, "refs/heads/agent/x"), None, |_| false).is_ok());
        assert!(check(&p, &update(A, Z, "refs/heads/agent/x"), None, |_| true).is_ok());
        assert!(check(&p, &update(Z, A, "refs/tags/v1"), None, |_| true).is_ok());
        assert!(
            check(&p, &update(A, B, "refs/tags/v1"), None, |_| true).is_err(),
            "tags never move"
        );
        assert!(check(&p, &update(Z, A, "refs/heads/main"), None, |_| true).is_err());
    }

    #[test]
    fn delete_then_create_is_judged_against_what_was_deleted() {
        let p = PushConfig {
            delete: true,
            tags: true,
            ..policy()
        };
        let rule = |u: Update, deleted: Option<&str>, ff: bool| {
            check(&p, &u, deleted, |from| {
                assert_eq!(from, A, "judged from the deleted value");
                ff
            })
            .map_err(|r| r.rule)
        };
        // Re-created where the history goes on: fine.
        assert_eq!(
            rule(update(Z, B, "refs/heads/agent/x"), Some(A), true),
            Ok(())
        );
        // Re-created elsewhere: a force push in two steps.
        assert_eq!(
            rule(update(Z, B, "refs/heads/agent/x"), Some(A), false),
            Err("push.force")
        );
        // A tag deleted and re-created at another commit has moved.
        assert_eq!(
            rule(update(Z, B, "refs/tags/v1"), Some(A), true),
            Err("push.tags")
        );
        assert_eq!(rule(update(Z, A, "refs/tags/v1"), Some(A), true), Ok(()));
        let forced = PushConfig {
            force: true,
            ..p.clone()
        };
        assert!(
            check(
                &forced,
                &update(Z, B, "refs/heads/agent/x"),
                Some(A),
                |_| false
            )
            .is_ok()
        );
    }
}
