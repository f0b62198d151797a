//! A repository's git configuration as it enters the bottle: every entry
//! of it (with its includes read in) except those that carry or fetch a
//! credential, and with user information taken out of every URL.
//!
//! Removed: `credential.*` (helpers, usernames, per-URL settings),
//! `http.extraHeader` (any URL), `http.cookieFile`, `core.askPass`, the
//! include directives themselves (their entries are read in and filtered
//! like the rest); every entry whose section names a URL with user
//! information (`url."https://tok@host/".insteadOf`,
//! `http."https://u:p@host/".sslVerify`); the commands git runs on the
//! person's behalf, which may carry a credential inline and have nothing
//! to run in the bottle (`core.sshCommand`, `core.gitProxy`,
//! `core.fsmonitor`, shell aliases `!…`, filter, diff and merge drivers);
//! any key whose name says it holds a secret (`*token*`, `*password*`,
//! `*secret*`, `*pass`, …); and any entry whose key or value holds what
//! looks like a credential wherever it is ([`super::secrets::secret_in_text`]:
//! a token of a well-known format, an authorization header, a URL
//! parameter named for a secret). Kept, with `user:password@` removed:
//! remote, submodule, LFS and proxy URLs.

use std::path::Path;
use std::process::Command;

/// What was done to one configuration, for the preflight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sanitized {
    /// The configuration to write in the bottle.
    pub text: String,
    /// One line per change: `removed http.extraheader`, …
    pub changes: Vec<String>,
}

/// Reads the configuration at `file` (for `.git/config`, in the
/// repository `repo` so conditional includes are resolved as git would)
/// and returns it without credentials.
pub fn sanitize(repo: &Path, file: &Path) -> std::io::Result<Sanitized> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["config", "--includes", "--null", "--list", "--file"])
        .arg(file)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "git cannot read {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(filter(&out.stdout))
}

/// One entry of a section: its key and value (`None`: a bare boolean).
type Entry = (String, Option<String>);

/// The entries of `git config --null --list` output, filtered.
pub fn filter(listing: &[u8]) -> Sanitized {
    let mut sections: Vec<(String, Vec<Entry>)> = Vec::new();
    let mut changes = Vec::new();
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let (key, value) = match entry.split_once('\n') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (entry.into_owned(), None),
        };
        let Some((head, name)) = key.rsplit_once('.') else {
            continue;
        };
        let (section, subsection) = match head.split_once('.') {
            Some((s, sub)) => (s.to_ascii_lowercase(), Some(sub.to_owned())),
            None => (head.to_ascii_lowercase(), None),
        };
        let name = name.to_ascii_lowercase();
        // The key itself may name a credential (a rewrite's base URL):
        // what the preflight says must not.
        let shown = match &subsection {
            Some(sub) if super::secrets::secret_in_text(sub).is_some() => {
                format!("{section}.<a URL>.{name}")
            }
            _ => strip_userinfo(&key),
        };
        let clean = value.as_deref().map(strip_userinfo);
        if let Some(why) = dropped(&section, subsection.as_deref(), &name, clean.as_deref()) {
            changes.push(format!("removed {shown} ({why})"));
            continue;
        }
        if clean != value {
            changes.push(format!("removed user information from {shown}"));
        }
        let value = clean;
        let header = match &subsection {
            Some(sub) => format!("[{section} \"{}\"]", escape_subsection(sub)),
            None => format!("[{section}]"),
        };
        match sections.iter_mut().find(|(h, _)| *h == header) {
            Some((_, entries)) => entries.push((name, value)),
            None => sections.push((header, vec![(name, value)])),
        }
    }
    let mut text = String::new();
    for (header, entries) in sections {
        text.push_str(&header);
        text.push('\n');
        for (name, value) in entries {
            match value {
                Some(v) => text.push_str(&format!("\t{name} = \"{}\"\n", escape(&v))),
                None => text.push_str(&format!("\t{name}\n")),
            }
        }
    }
    changes.dedup();
    Sanitized { text, changes }
}

/// Why an entry is left out, if it is.
fn dropped(
    section: &str,
    subsection: Option<&str>,
    name: &str,
    value: Option<&str>,
) -> Option<&'static str> {
    if subsection.is_some_and(|sub| strip_userinfo(sub) != sub) {
        return Some("its section names a URL with user information");
    }
    let command = match (section, name) {
        ("core", "sshcommand" | "gitproxy" | "fsmonitor") => {
            value.is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "true" | "false"))
        }
        ("alias", _) => value.is_some_and(|v| v.trim_start().starts_with('!')),
        ("filter", "clean" | "smudge" | "process")
        | ("diff", "textconv" | "command" | "external")
        | ("merge", "driver")
        | ("mergetool" | "difftool", "cmd")
        | ("gpg", "program") => true,
        _ => false,
    };
    if command {
        return Some("a command run on the person's behalf may carry a credential");
    }
    let key_text = subsection.unwrap_or_default();
    if let Some(why) = super::secrets::secret_in_text(key_text)
        .or_else(|| value.and_then(super::secrets::secret_in_text))
    {
        return Some(why);
    }
    match (section, name) {
        ("credential", _) => return Some("credential settings"),
        ("http", "extraheader") => return Some("an extra header may carry a credential"),
        ("http", "cookiefile") => return Some("cookies"),
        ("core", "askpass") => return Some("a credential prompt"),
        ("include", "path") | ("includeif", "path") => {
            return Some("its entries are read in and filtered");
        }
        _ => {}
    }
    const SECRET_WORDS: &[&str] = &[
        "token",
        "password",
        "passwd",
        "secret",
        "apikey",
        "api-key",
        "privatekey",
        "accesskey",
        "credential",
        "auth",
    ];
    if SECRET_WORDS.iter().any(|w| name.contains(w))
        || name.ends_with("pass")
        || matches!(name, "pat" | "key")
    {
        return Some("its name says it holds a secret");
    }
    None
}

/// Every `scheme://user:password@host` in `text` without its user
/// information (`scheme://host`). An SSH URL keeps its user — `git@` names
/// an account, not a secret, and the git gate's rewrite of the upstream
/// matches on it — and loses only a password. scp-like SSH addresses
/// (`git@host:path`) are kept likewise, unless they carry a password
/// (`user:pw@host:path`).
pub fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let scheme = before[..before.len() - 3]
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let ssh = scheme.split('+').any(|part| part == "ssh");
        let end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(i) if ssh => {
                let user = authority[..i].split(':').next().unwrap_or_default();
                out.push_str(user);
                out.push_str(&authority[i..]);
            }
            Some(i) => out.push_str(&authority[i + 1..]),
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    // scp-like `user:password@host:path` (no scheme).
    if !out.contains("://")
        && let Some((userinfo, host)) = out.split_once('@')
        && userinfo.contains(':')
        && !userinfo.contains('/')
    {
        let user = userinfo.split(':').next().unwrap_or_default();
        return format!("{user}@{host}");
    }
    out
}

/// A subsection in git's quoted form: only `\\` and `"` are escaped
/// there (git reads `\t` in a subsection as `t`).
fn escape_subsection(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A value in git's quoted form.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in entries {
            out.extend_from_slice(key.as_bytes());
            if let Some(v) = value {
                out.push(b'\n');
                out.extend_from_slice(v.as_bytes());
            }
            out.push(0);
        }
        out
    }

    #[test]
    fn credentials_are_removed_and_the_rest_kept() {
        let input = listing(&[
            ("core.bare", Some("false")),
            ("core.logallrefupdates", None),
            (
                "remote.origin.url",
                Some("https://x-access-token:ghp_abc123@github.com/me/repo.git"),
            ),
            (
                "remote.origin.fetch",
                Some("+refs/heads/*:refs/remotes/origin/*"),
            ),
            ("remote.up.url", Some("git@github.com:me/repo.git")),
            (
                "http.https://github.com/.extraheader",
                Some("AUTHORIZATION: basic eDp5"),
            ),
            ("http.extraheader", Some("Authorization: Bearer t")),
            ("credential.helper", Some("store")),
            ("credential.https://example.com.username", Some("me")),
            (
                "url.https://tok@github.com/.insteadof",
                Some("https://github.com/"),
            ),
            ("url.git@github.com:.insteadof", Some("https://github.com/")),
            ("github.token", Some("ghp_secret")),
            ("sendemail.smtppass", Some("hunter2")),
            ("include.path", Some("../other")),
            (
                "submodule.lib.url",
                Some("https://user:pw@git.example.com/lib.git"),
            ),
            ("user.name", Some("A \"quoted\" name")),
            ("http.https://u:tok@example.com/.sslverify", Some("false")),
            ("core.sshcommand", Some("sshpass -p hunter3 ssh")),
            (
                "alias.pr",
                Some("!curl -s https://api.example.com -u me:hunter4"),
            ),
            ("alias.st", Some("status -sb")),
            ("filter.crypt.smudge", Some("decrypt --key hunter5")),
            (
                "lfs.url",
                Some("https://lfs.example.com/r?access_token=hunter6"),
            ),
            (
                "remote.origin.pushurl",
                Some(&format!(
                    "https://github.com/me/r?t=ghp_{}",
                    "a1".repeat(18)
                )),
            ),
            (
                "remote.mirror.url",
                Some(&format!(
                    "https://x:ghp_{}@github.com/me/r",
                    "b2".repeat(18)
                )),
            ),
            ("gitlab.note", Some("header Authorization: hunter7")),
            ("azure.pat", Some("hunter8")),
            ("cloud.accesskey", Some("hunter9")),
            ("diff.external", Some("differ --token hunter10")),
        ]);
        let out = filter(&input);
        for gone in [
            "ghp_abc123",
            "eDp5",
            "Bearer",
            "store",
            "tok@",
            "ghp_secret",
            "hunter2",
            "pw@",
            "other",
            "hunter3",
            "hunter4",
            "hunter5",
            "hunter6",
            "hunter7",
            "hunter8",
            "hunter9",
            "hunter10",
            "a1a1",
            "b2b2",
            "tok@",
            "sslverify",
        ] {
            assert!(!out.text.contains(gone), "{gone} in:\n{}", out.text);
        }
        for kept in [
            "[remote \"origin\"]\n\turl = \"https://github.com/me/repo.git\"",
            "fetch = \"+refs/heads/*:refs/remotes/origin/*\"",
            "url = \"git@github.com:me/repo.git\"",
            "[url \"git@github.com:\"]\n\tinsteadof = \"https://github.com/\"",
            "url = \"https://git.example.com/lib.git\"",
            "name = \"A \\\"quoted\\\" name\"",
            "\tlogallrefupdates\n",
            "[alias]\n\tst = \"status -sb\"",
            "[remote \"mirror\"]\n\turl = \"https://github.com/me/r\"",
        ] {
            assert!(
                out.text.contains(kept),
                "{kept} missing from:\n{}",
                out.text
            );
        }
        assert!(out.changes.iter().any(|c| c.contains("credential.helper")));
        assert!(
            out.changes
                .iter()
                .any(|c| c.contains("user information from remote.origin.url"))
        );
    }

    #[test]
    fn userinfo_goes_from_every_url() {
        assert_eq!(strip_userinfo("https://a:b@h/p"), "https://h/p");
        assert_eq!(strip_userinfo("https://h/p@x"), "https://h/p@x");
        assert_eq!(strip_userinfo("http://tok@h:8080"), "http://h:8080");
        assert_eq!(strip_userinfo("git@h:p.git"), "git@h:p.git");
        assert_eq!(strip_userinfo("ssh://git@h/p.git"), "ssh://git@h/p.git");
        assert_eq!(strip_userinfo("ssh://git:pw@h/p.git"), "ssh://git@h/p.git");
        assert_eq!(strip_userinfo("git+ssh://me:pw@h/p"), "git+ssh://me@h/p");
        assert_eq!(strip_userinfo("me:pw@h:p.git"), "me@h:p.git");
        assert_eq!(
            strip_userinfo("clone: from https://u:t@github.com/x"),
            "clone: from https://github.com/x"
        );
    }

    #[test]
    fn it_reads_what_git_writes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[remote \"origin\"]\n\turl = https://u:tok@example.com/r.git\n[http]\n\textraHeader = X: y\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = sanitize(dir.path(), &config).unwrap_or_else(|e| panic!("{e}"));
        let again = dir.path().join("again");
        std::fs::write(&again, &out.text).unwrap_or_else(|e| panic!("{e}"));
        let reread = sanitize(dir.path(), &again).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            reread.text, out.text,
            "git reads the rewritten file the same"
        );
        assert!(reread.changes.is_empty());
        assert!(out.text.contains("https://example.com/r.git"));
    }
}
