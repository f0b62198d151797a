//! The git gate's pre-receive hook against real repositories (no Docker):
//! it judges every update from the mirror's real ref values, never from
//! what the client claims, and pushes upstream with a lease on them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ZERO: &str = "0000000000000000000000000000000000000000";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Repos {
    dir: tempfile::TempDir,
    c1: String,
    c2: String,
    unrelated: String,
}

impl Repos {
    fn upstream(&self) -> PathBuf {
        self.dir.path().join("upstream.git")
    }
    fn mirror(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    /// An upstream and a mirror with agent/x at c1; c2 (a child of c1)
    /// and an unrelated commit exist in the mirror only.
    fn new() -> Repos {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for bare in ["upstream.git", "origin.git"] {
            git(root, &["init", "-q", "--bare", bare]);
        }
        let work = root.join("work");
        git(root, &["init", "-q", "work"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let c1 = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let c2 = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["checkout", "-q", "--orphan", "other"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "unrelated"]);
        let unrelated = git(&work, &["rev-parse", "HEAD"]);
        let upstream = root.join("upstream.git");
        let mirror = root.join("origin.git");
        git(
            &work,
            &[
                "push",
                "-q",
                upstream.to_str().unwrap(),
                &format!("{c1}:refs/heads/agent/x"),
            ],
        );
        git(
            &work,
            &[
                "push",
                "-q",
                mirror.to_str().unwrap(),
                &format!("{c1}:refs/heads/agent/x"),
            ],
        );
        git(
            &work,
            &[
                "push",
                "-q",
                mirror.to_str().unwrap(),
                &format!("{c2}:refs/heads/keep-c2"),
            ],
        );
        git(
            &work,
            &[
                "push",
                "-q",
                mirror.to_str().unwrap(),
                &format!("{unrelated}:refs/heads/keep-u"),
            ],
        );
        git(
            &mirror,
            &["remote", "add", "upstream", upstream.to_str().unwrap()],
        );
        let config = serde_json::json!({
            "identity": "hook-test",
            "role": "git",
            "socket_dir": root,
            "audit_log": root.join("audit.jsonl"),
            "git": { "dir": root, "entries": [{
                "name": "origin",
                "upstream": upstream,
                "identity_file": "/dev/null",
                "known_hosts": null,
                "push": { "branches": ["agent/*"], "force": false, "delete": false, "tags": false,
                          "max_pack_bytes": null }
            }]}
        });
        std::fs::write(root.join("git.json"), config.to_string()).unwrap();
        std::fs::write(root.join("audit.jsonl"), "").unwrap();
        Repos {
            dir,
            c1,
            c2,
            unrelated,
        }
    }

    fn hook(&self, input: &str) -> Output {
        self.spawn_hook(input.as_bytes())
            .wait_with_output()
            .unwrap()
    }

    /// The hook, running in the mirror with `input` written to it.
    fn spawn_hook(&self, input: &[u8]) -> std::process::Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bottle"))
            .args(["git-hook", "pre-receive"])
            .current_dir(self.mirror())
            .env("BOTTLE_GATE_CONFIG", self.dir.path().join("git.json"))
            .env("BOTTLE_GIT_ENTRY", "origin")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
        child
    }

    fn upstream_ref(&self, name: &str) -> String {
        git(&self.upstream(), &["rev-parse", name])
    }
}

#[test]
fn a_client_claiming_a_ref_is_new_cannot_force_it() {
    let repos = Repos::new();
    // The client says agent/x does not exist: a "create" needs no
    // fast-forward. The mirror knows it is at c1.
    let out = repos.hook(&format!("{ZERO} {} refs/heads/agent/x\n", repos.unrelated));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rule push.force"), "{stderr}");
    assert_eq!(repos.upstream_ref("agent/x"), repos.c1);
    let audit = std::fs::read_to_string(repos.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains(&format!("\"old\":\"{}\"", repos.c1)),
        "the real old value is logged: {audit}"
    );
}

#[test]
fn a_claimed_old_value_is_not_trusted_either_way() {
    let repos = Repos::new();
    // The client claims agent/x is at the unrelated commit, so the update
    // to c2 would look like a force; it is a fast-forward from c1.
    let out = repos.hook(&format!(
        "{} {} refs/heads/agent/x\n",
        repos.unrelated, repos.c2
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(repos.upstream_ref("agent/x"), repos.c2);
}

#[test]
fn the_upstream_push_holds_a_lease_on_what_was_judged() {
    let repos = Repos::new();
    // Someone else moves the upstream after the mirror was fetched.
    git(
        &repos.mirror(),
        &[
            "push",
            "-q",
            "upstream",
            &format!("+{}:refs/heads/agent/x", repos.unrelated),
        ],
    );
    let out = repos.hook(&format!("{} {} refs/heads/agent/x\n", repos.c1, repos.c2));
    assert!(!out.status.success(), "the push was not refused");
    assert_eq!(
        repos.upstream_ref("agent/x"),
        repos.unrelated,
        "nothing was overwritten"
    );
}

#[test]
fn garbage_and_floods_are_refused_whole() {
    let repos = Repos::new();
    for input in [
        "not an update line\n".to_owned(),
        format!("{} {} refs/heads/agent/x extra\n", repos.c1, repos.c2),
        format!("{} {}\n", repos.c1, repos.c2),
        format!("{} {} heads/agent/x\n", repos.c1, repos.c2),
        format!("{ZERO} {} refs/heads/agent/{}\n", repos.c2, "a").repeat(1001),
    ] {
        let out = repos.hook(&input);
        assert!(!out.status.success(), "{input:.80}");
        assert_eq!(repos.upstream_ref("agent/x"), repos.c1);
    }
}

/// Found by review: a ref name that is not UTF-8 ended the hook's list of
/// updates early, so what followed went unchecked, and an empty list made
/// `git push` fall back to its default. Both refuse the push now.
#[test]
fn a_ref_name_that_is_not_utf8_refuses_the_whole_push() {
    let repos = Repos::new();
    let mut input = format!("{ZERO} {} refs/heads/", repos.c2).into_bytes();
    input.push(0xff);
    input.extend_from_slice(format!("\n{} {} refs/heads/master\n", repos.c1, repos.c2).as_bytes());
    let out = repos.spawn_hook(&input).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
    let empty = repos.hook("");
    assert!(!empty.status.success(), "an empty push is refused");
    assert_eq!(repos.upstream_ref("agent/x"), repos.c1);
}

/// Found by review: two pushes at once each read the record of deleted
/// refs, added their own and wrote it back, so one delete was forgotten
/// and its ref could later be re-created anywhere. Hooks of one mirror
/// take turns now; every delete is remembered.
#[test]
fn concurrent_deletes_are_all_remembered() {
    let repos = Repos::new();
    let config_path = repos.dir.path().join("git.json");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"delete\":false", "\"delete\":true");
    assert!(config.contains("\"delete\":true"), "{config}");
    std::fs::write(&config_path, config).unwrap();
    const N: usize = 8;
    for i in 0..N {
        for repo in [repos.upstream(), repos.mirror()] {
            git(
                &repo,
                &["update-ref", &format!("refs/heads/agent/d{i}"), &repos.c1],
            );
        }
    }
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let line = format!("{} {ZERO} refs/heads/agent/d{i}\n", repos.c1);
            repos.spawn_hook(line.as_bytes())
        })
        .collect();
    for child in handles {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let record: std::collections::BTreeMap<String, String> = serde_json::from_slice(
        &std::fs::read(repos.dir.path().join("origin.deleted.json")).unwrap(),
    )
    .unwrap();
    for i in 0..N {
        assert_eq!(
            record.get(&format!("refs/heads/agent/d{i}")),
            Some(&repos.c1),
            "delete {i} forgotten: {record:?}"
        );
    }
}
