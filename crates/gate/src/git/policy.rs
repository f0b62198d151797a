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
    /// Parses a pre-receive line: `<old> <new> <ref>`.
    pub fn parse(line: &str) -> Option<Update> {
        let mut parts = line.split_whitespace();
        let (old, new, refname) = (parts.next()?, parts.next()?, parts.next()?);
        parts.next().is_none().then(|| Update {
            old: old.to_owned(),
            new: new.to_owned(),
            refname: refname.to_owned(),
        })
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

/// Checks one update. `fast_forward` says whether `old` is an ancestor of
/// `new` (asked only for updates of existing refs).
pub fn check(
    policy: &PushConfig,
    update: &Update,
    fast_forward: impl FnOnce() -> bool,
) -> Result<(), Refused> {
    let refused = |rule, reason: String| Err(Refused { rule, reason });
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
        if !update.is_create() && !update.is_delete() {
            return refused(
                "push.tags",
                format!("tag {tag} exists upstream; moving a tag is not allowed"),
            );
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
    if !update.is_create() && !policy.force && !fast_forward() {
        return refused(
            "push.force",
            format!(
                "the update of {branch} is not a fast-forward, and force pushes are not allowed"
            ),
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
        assert!(check(&p, &update(Z, A, "refs/heads/agent/x"), || true).is_ok());
        assert!(check(&p, &update(A, B, "refs/heads/agent/x"), || true).is_ok());
        let rule = |u: Update, ff: bool| check(&p, &u, || ff).map_err(|r| r.rule);
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
        assert!(check(&p, &update(A, B, "refs/heads/agent/x"), || false).is_ok());
        assert!(check(&p, &update(A, Z, "refs/heads/agent/x"), || true).is_ok());
        assert!(check(&p, &update(Z, A, "refs/tags/v1"), || true).is_ok());
        assert!(
            check(&p, &update(A, B, "refs/tags/v1"), || true).is_err(),
            "tags never move"
        );
        assert!(check(&p, &update(Z, A, "refs/heads/main"), || true).is_err());
    }
}
