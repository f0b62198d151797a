//! End to end, real git and sshd: the agent works on a copy of the host's
//! checkout, and its pushes leave only through the git gate, which holds
//! the key and applies the push policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

fn setup() -> Option<(World, Upstream)> {
    if !docker_available() {
        return None;
    }
    ensure_images();
    let world = World::new();
    let upstream = Upstream::new(&world);
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["git"] =
        serde_json::json!([upstream.entry(Some(&upstream.host_key))]);
    world.write_manifest(&manifest);
    Some((world, upstream))
}

/// Runs `script` in a bottle started with `--cwd` in the checkout.
fn in_bottle(world: &World, upstream: &Upstream, script: &str) -> Probe {
    let out = world
        .command()
        .current_dir(&upstream.checkout)
                .args(["start", "probe", "-y", "--cwd", "--", "bash", "-c"])
        .arg(format!(
            "cd /workspace && git config user.email agent@bottle && git config user.name agent\n{script}"
        ))
        .output()
        .unwrap();
    Probe::new(out)
}

const PUSHES: &str = r#"
echo copied=$(ls -A | sort | tr '\n' ' ')
echo owner=$(stat -c %U README notes.txt .git/config | sort -u | tr '\n' ' ')
echo remote=$(git config remote.origin.url)
git fetch origin >/tmp/fetch 2>&1; echo fetch_rc=$?
echo change >> README && git commit -qam "agent work"
git push origin HEAD:agent/x >/tmp/push 2>&1; echo push_rc=$?
echo pushed=$(git rev-parse HEAD)
git push origin HEAD:main >/tmp/main 2>&1; echo main_rc=$?; echo main_err=$(tr '\n' ' ' < /tmp/main)
git commit -q --amend -m rewritten
git push -f origin HEAD:agent/x >/tmp/force 2>&1; echo force_rc=$?; echo force_err=$(tr '\n' ' ' < /tmp/force)
git push origin :agent/x >/tmp/delete 2>&1; echo delete_rc=$?; echo delete_err=$(tr '\n' ' ' < /tmp/delete)
git tag v1 && git push origin v1 >/tmp/tag 2>&1; echo tag_rc=$?; echo tag_err=$(tr '\n' ' ' < /tmp/tag)
ssh -o BatchMode=yes -o ConnectTimeout=5 git@upstream.test true >/dev/null 2>&1; echo ssh_rc=$?
echo edited > notes.txt
"#;

#[test]
fn pushes_leave_only_through_the_gate_and_its_policy() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let before = upstream.refs();
    let host_head = git(&upstream.checkout, &["rev-parse", "HEAD"]);
    let probe = in_bottle(&world, &upstream, PUSHES);

    // The copy: tracked and untracked-unignored files and .git; not the
    // ignored build output; owned by the agent.
    let copied = probe.get("copied");
    assert!(
        copied.contains(".git ") && copied.contains("README") && copied.contains("notes.txt"),
        "{copied}"
    );
    assert!(
        !copied.contains("target"),
        "ignored files are not copied: {copied}"
    );
    assert_eq!(probe.get("owner"), "agent");
    assert_eq!(
        probe.get("remote"),
        UPSTREAM_URL,
        "the remote keeps its real URL"
    );

    assert_eq!(probe.get("fetch_rc"), "0", "{}", stdout(&probe.output));
    assert_eq!(probe.get("push_rc"), "0", "{}", stdout(&probe.output));
    let after = upstream.refs();
    assert_eq!(
        after.get("refs/heads/agent/x"),
        Some(&probe.get("pushed").to_owned()),
        "the upstream has the commit"
    );

    assert_ne!(probe.get("main_rc"), "0");
    assert!(
        probe.get("main_err").contains("rule push.branches"),
        "{}",
        probe.get("main_err")
    );
    assert_ne!(probe.get("force_rc"), "0");
    assert!(
        probe.get("force_err").contains("rule push.force"),
        "{}",
        probe.get("force_err")
    );
    assert_ne!(probe.get("delete_rc"), "0");
    assert!(
        probe.get("delete_err").contains("rule push.delete"),
        "{}",
        probe.get("delete_err")
    );
    assert_ne!(probe.get("tag_rc"), "0");
    assert!(
        probe.get("tag_err").contains("rule push.tags"),
        "{}",
        probe.get("tag_err")
    );
    assert_eq!(
        after.get("refs/heads/main"),
        before.get("refs/heads/main"),
        "main unchanged"
    );
    assert!(!after.contains_key("refs/tags/v1"), "no tag upstream");
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only agent/x was added: {after:?}"
    );

    assert_ne!(probe.get("ssh_rc"), "0", "ssh from the agent has no route");

    // Every fetch and push is in the audit log, with refs, verdict and rule.
    let identity = identity_from(&stderr(&probe.output)).unwrap();
    let audit =
        std::fs::read_to_string(world.state_root().join(&identity).join("audit.jsonl")).unwrap();
    let pushes: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["role"] == "git" && l["event"] == "push")
        .collect();
    let rules: Vec<&str> = pushes.iter().filter_map(|p| p["rule"].as_str()).collect();
    assert_eq!(
        rules,
        ["push.branches", "push.force", "push.delete", "push.tags"],
        "{audit}"
    );
    assert_eq!(pushes[0]["decision"], "allow");
    assert_eq!(pushes[0]["refs"][0]["ref"], "refs/heads/agent/x");
    assert_eq!(pushes[0]["refs"][0]["new"], probe.get("pushed"));
    assert!(audit.contains("\"event\":\"fetch\""), "fetches are logged");

    // The host's checkout is untouched.
    assert_eq!(git(&upstream.checkout, &["rev-parse", "HEAD"]), host_head);
    assert_eq!(
        std::fs::read_to_string(upstream.checkout.join("notes.txt")).unwrap(),
        "untracked but not ignored\n"
    );
    assert!(!git(&upstream.checkout, &["log", "--oneline", "-3"]).contains("agent work"));
}

#[test]
fn the_key_never_enters_the_bottle() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let key = std::fs::read_to_string(&upstream.key).unwrap();
    // A line of the key's body: distinctive, and what a copy would hold.
    let needle = key.lines().nth(2).unwrap().to_owned();
    let bottle = Running::spawn(
        world
            .command()
            .current_dir(&upstream.checkout)
            .args(["start", "probe", "-y", "--rm", "--cwd", "--", "bash", "-c"])
            .arg("cd /workspace && git fetch -q origin && echo ID=$BOTTLE_IDENTITY && sleep 60"),
    );
    assert_nowhere_in(&bottle.agent(), &needle);
}

#[test]
fn an_upstream_that_is_down_changes_nothing() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let before = upstream.refs();
    let probe = {
        // Stop the upstream once the bottle has fetched.
        let mut child = world
            .command()
            .current_dir(&upstream.checkout)
            .args(["start", "probe", "-y", "--rm", "--cwd", "--", "bash", "-c"])
            .arg(
                "cd /workspace && git config user.email a@b && git config user.name a && git fetch -q origin \
                 && echo FETCHED && read -r go && echo x >> README && git commit -qam down \
                                  && git push origin HEAD:agent/down >/tmp/push 2>&1; echo push_rc=$?; echo push_err=$(tr '\\n' ' ' < /tmp/push)",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line.trim(), "FETCHED");
        docker(&["stop", "-t", "1", &upstream.container]);
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        child.wait().unwrap();
        rest
    };
    assert!(!probe.contains("push_rc=0"), "{probe}");
    assert!(
        probe.contains("cannot fetch from the upstream of origin"),
        "the agent is told why: {probe}"
    );
    docker(&["start", &upstream.container]);
    assert!(wait_until(std::time::Duration::from_secs(20), || {
        Command::new("docker")
            .args([
                "exec",
                &upstream.container,
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/22",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }));
    assert_eq!(upstream.refs(), before, "nothing was half-applied upstream");
}

#[test]
fn a_host_key_that_does_not_match_is_refused() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    // Pin some other key for the upstream.
    let other = world.dir.path().join("other");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let fields: Vec<&str> = public.split_whitespace().collect();
    let wrong = format!("upstream.test {} {}", fields[0], fields[1]);
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["git"] = serde_json::json!([upstream.entry(Some(&wrong))]);
    world.write_manifest(&manifest);
    let before = upstream.refs();
    let probe = in_bottle(
        &world,
        &upstream,
        "echo x >> README && git commit -qam mitm\n\
         git push origin HEAD:agent/mitm >/tmp/push 2>&1; echo push_rc=$?; echo push_err=$(tr '\\n' ' ' < /tmp/push)",
    );
    assert_ne!(probe.get("push_rc"), "0");
    assert!(
        probe
            .get("push_err")
            .contains("cannot fetch from the upstream"),
        "{}",
        probe.get("push_err")
    );
    assert_eq!(upstream.refs(), before);
}

#[test]
fn an_upstream_refusal_moves_no_ref() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    // The upstream itself refuses agent/reject*: our policy allows it, the
    // forward fails, and the agent's push must fail whole.
    docker(&[
        "exec",
        "-u",
        "git",
        &upstream.container,
        "sh",
        "-c",
        "printf '#!/bin/sh\\nwhile read o n r; do case $r in refs/heads/agent/reject*) echo no >&2; exit 1;; esac; done\\n' \
         > /srv/git/repo.git/hooks/pre-receive && chmod +x /srv/git/repo.git/hooks/pre-receive",
    ]);
    let before = upstream.refs();
    let probe = in_bottle(
        &world,
        &upstream,
        "echo x >> README && git commit -qam refused\n\
         git push origin HEAD:agent/reject >/tmp/push 2>&1; echo push_rc=$?; echo push_err=$(tr '\\n' ' ' < /tmp/push)\n\
         echo mirror=$(git ls-remote origin refs/heads/agent/reject | wc -l)",
    );
    assert_ne!(probe.get("push_rc"), "0");
    assert!(
        probe
            .get("push_err")
            .contains("the upstream did not take the push, so nothing changed"),
        "{}",
        probe.get("push_err")
    );
    assert_eq!(
        probe.get("mirror"),
        "0",
        "the gate's mirror did not move either"
    );
    assert_eq!(upstream.refs(), before);
}

#[test]
fn without_a_host_key_the_first_one_seen_is_pinned() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["git"] = serde_json::json!([upstream.entry(None)]);
    world.write_manifest(&manifest);
    let probe = in_bottle(
        &world,
        &upstream,
        "git fetch origin >/tmp/f 2>&1; echo fetch_rc=$?",
    );
    assert_eq!(probe.get("fetch_rc"), "0", "{}", stderr(&probe.output));
    let identity = identity_from(&stderr(&probe.output)).unwrap();
    let learned = std::fs::read_to_string(
        world
            .state_root()
            .join(&identity)
            .join("git/origin.known_hosts"),
    )
    .unwrap();
    let key = upstream.host_key.split_whitespace().nth(2).unwrap();
    assert!(
        learned.contains(key),
        "the upstream's key is recorded in the state: {learned}"
    );
}

#[test]
fn a_directory_that_is_not_a_repository_is_copied_whole() {
    let Some((world, _upstream)) = setup() else {
        return;
    };
    let plain = world.dir.path().join("plain");
    std::fs::create_dir_all(plain.join("sub")).unwrap();
    std::fs::write(plain.join("a.txt"), "a\n").unwrap();
    std::fs::write(plain.join("sub/b.txt"), "b\n").unwrap();
    let out = world
        .command()
        .current_dir(&plain)
        .args(["start", "probe", "-y", "--rm", "--cwd", "--", "bash", "-c"])
        .arg("cd /workspace && echo files=$(find . -type f | sort | tr '\\n' ' ') && echo > sub/c.txt && echo wrote=$?")
        .output()
        .unwrap();
    let probe = Probe::new(out);
    assert_eq!(probe.get("files"), "./a.txt ./sub/b.txt");
    assert_eq!(
        probe.get("wrote"),
        "0",
        "the agent owns the copied directories"
    );
    assert!(
        !plain.join("sub/c.txt").exists(),
        "the host's directory is untouched"
    );
    assert!(stderr(&probe.output).contains("workspace: copied 2 files"));
}

/// The git gate runs `git` on what the agent sends. A hook in its mirror
/// (standing in for code run by a bug in git) finds neither the CA key nor
/// the route secret, cannot read the gate process's memory, and the
/// egress gate in turn holds no SSH key.
#[test]
fn each_gate_role_reads_only_its_own_secrets() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let secret = world.secret();
    let key = std::fs::read_to_string(&upstream.key).unwrap();
    let key_line = key.lines().nth(2).unwrap().to_owned();
    let mut bottle = Running::spawn(
        world
            .command()
            .current_dir(&upstream.checkout)
            .args(["start", "probe", "-y", "--rm", "--cwd", "--", "bash", "-c"])
            .arg(
                "cd /workspace && git config user.email a@b && git config user.name a \
                 && git fetch -q origin && echo ID=$BOTTLE_IDENTITY && read -r go \
                 && echo x >> README && git commit -qam probe && git push -q origin HEAD:agent/probe; \
                 echo pushed=$?; sleep 30",
            )
            .stdin(Stdio::piped()),
    );
    let state = world.state_root().join(&bottle.identity);
    let hook = state.join("git/origin.git/hooks/update");
    let needle = base64_of(&secret);
    // A native gate sees the host's read-only /usr (gigabytes, nothing of
    // the bottle's); a gate container's /usr is its image's.
    let skip_usr = if native() { "--exclude-dir=usr" } else { "" };
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n\
             out=/var/lib/bottle/git/probe.txt\n\
             {{ echo uid=$(id -u)\n\
               echo config=$(ls /etc/bottle | tr '\\n' ' ')\n\
               cat /etc/bottle/ca.key >/dev/null 2>&1; echo ca_key_rc=$?\n\
               cat /etc/bottle/gate.json >/dev/null 2>&1; echo egress_config_rc=$?\n\
               cat /proc/1/environ >/dev/null 2>&1; echo gate_environ_rc=$?\n\
               head -c 1 /proc/1/mem >/dev/null 2>&1; echo gate_mem_rc=$?\n\
               secret=$(echo {needle} | base64 -d)\n\
               echo \"secret_in=$(grep -rlsF \"$secret\" / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev {skip_usr} | head -3 | tr '\\n' ' ')\"\n\
               for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; done > /var/lib/bottle/git/procs.tmp\n\
               echo secret_in_procs=$(grep -c -F \"$secret\" /var/lib/bottle/git/procs.tmp)\n\
             }} > $out 2>&1\n\
             exit 0\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bottle
        .child
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let probe_file = state.join("git/probe.txt");
    assert!(
        wait_until(std::time::Duration::from_secs(60), || probe_file.exists()
            && std::fs::read_to_string(&probe_file)
                .unwrap_or_default()
                .contains("secret_in_procs=")),
        "the hook ran; it wrote {:?}; hooks {:?}; the git gate said: {}",
        std::fs::read_to_string(&probe_file).unwrap_or_default(),
        std::fs::read_dir(state.join("git/origin.git/hooks"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
        std::fs::read_to_string(state.join("native/git.log")).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&probe_file).unwrap();
    let probe: std::collections::HashMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(probe["config"].trim(), "git git.json", "{text}");
    assert_ne!(probe["ca_key_rc"], "0", "{text}");
    assert_ne!(probe["egress_config_rc"], "0", "{text}");
    assert_ne!(
        probe["gate_environ_rc"], "0",
        "the gate is not dumpable: {text}"
    );
    assert_ne!(probe["gate_mem_rc"], "0", "{text}");
    assert_eq!(probe["secret_in"], "", "{text}");
    assert_eq!(probe["secret_in_procs"], "0", "{text}");

    // The egress gate has the CA but no key.
    let gate = format!("{}-gate", bottle.identity);
    let listing = exec_in(&gate, "root", &["ls", "/etc/bottle"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("ca.key") && !listing.contains("git"),
        "{listing}"
    );
    assert_nowhere_in(&gate, &key_line);
    let git_gate = format!("{}-git", bottle.identity);
    assert_nowhere_in(&git_gate, &secret);
    drop(bottle);
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// With deletes allowed and force pushes not, deleting a branch and
/// creating it again elsewhere is a force push, refused; a tag deleted and
/// created at another commit has moved, refused. Re-creating where the
/// history goes on is fine.
#[test]
fn delete_then_recreate_is_judged_as_the_force_it_is() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let mut manifest = world.manifest(&[]);
    let mut entry = upstream.entry(Some(&upstream.host_key));
    entry["push"] = serde_json::json!({ "branches": ["agent/*"], "delete": true, "tags": true });
    manifest["bottles"]["test"]["git"] = serde_json::json!([entry]);
    world.write_manifest(&manifest);
    let probe = in_bottle(
        &world,
        &upstream,
        r#"
git fetch -q origin
echo one >> README && git commit -qam one && first=$(git rev-parse HEAD)
git push -q origin HEAD:agent/y; echo push_rc=$?
git tag t1 && git push -q origin t1; echo tag_rc=$?
git push -q origin :agent/y; echo delete_rc=$?
git push -q origin :refs/tags/t1; echo tag_delete_rc=$?
git checkout -q --orphan other && git commit -qm unrelated && other=$(git rev-parse HEAD)
git push origin HEAD:agent/y >/tmp/re 2>&1; echo recreate_rc=$?; echo recreate_err=$(tr '\n' ' ' < /tmp/re)
git tag -f t1 >/dev/null && git push origin t1 >/tmp/t 2>&1; echo retag_rc=$?; echo retag_err=$(tr '\n' ' ' < /tmp/t)
git checkout -q $first 2>/dev/null && echo two >> README && git commit -qam two
git push origin HEAD:refs/heads/agent/y >/tmp/ok 2>&1; echo onward_rc=$?; echo onward_err=$(tr '\n' ' ' < /tmp/ok)
"#,
    );
    assert_eq!(probe.get("push_rc"), "0", "{}", stdout(&probe.output));
    assert_eq!(probe.get("tag_rc"), "0");
    assert_eq!(probe.get("delete_rc"), "0");
    assert_eq!(probe.get("tag_delete_rc"), "0");
    assert_ne!(probe.get("recreate_rc"), "0");
    assert!(
        probe.get("recreate_err").contains("rule push.force"),
        "{}",
        probe.get("recreate_err")
    );
    assert_ne!(probe.get("retag_rc"), "0");
    assert!(
        probe.get("retag_err").contains("rule push.tags"),
        "{}",
        probe.get("retag_err")
    );
    assert_eq!(probe.get("onward_rc"), "0", "{}", probe.get("onward_err"));
    let refs = upstream.refs();
    assert!(!refs.contains_key("refs/tags/t1"), "{refs:?}");
}

/// Objects are checked as they arrive: a tree with a `.git` entry (the
/// shape of several git CVEs) is refused before any hook or ref sees it.
#[test]
fn malformed_objects_are_refused_on_receive() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let before = upstream.refs();
    let probe = in_bottle(
        &world,
        &upstream,
        r#"
git fetch -q origin
blob=$(echo evil | git hash-object -w --stdin)
tree=$(python3 -c '
import binascii, sys
blob = binascii.unhexlify(sys.argv[1])
sys.stdout.buffer.write(b"100644 .git\0" + blob)' "$blob" | git hash-object -w -t tree --literally --stdin)
commit=$(git commit-tree -m evil $tree)
git push origin $commit:refs/heads/agent/evil >/tmp/p 2>&1; echo push_rc=$?; echo push_err=$(tr '\n' ' ' < /tmp/p)
"#,
    );
    assert_ne!(probe.get("push_rc"), "0", "{}", probe.get("push_err"));
    assert!(
        probe.get("push_err").to_lowercase().contains("dotgit")
            || probe.get("push_err").contains("fsck"),
        "{}",
        probe.get("push_err")
    );
    assert_eq!(upstream.refs(), before);
}

/// A repository whose configuration carries credentials (an extra header,
/// a token in a remote URL, a credential helper and store, a rewrite to a
/// token URL, an included file with another header) and whose directory
/// holds secrets git does not track arrives in the bottle without any of
/// them, and the preflight says what was left out.
#[test]
fn a_copied_repository_carries_no_credentials() {
    let Some((world, upstream)) = setup() else {
        return;
    };
    let repo = &upstream.checkout;
    let token = "bbtestTOKEN0123456789abcdef";
    let extra = world.dir.path().join("extra.gitconfig");
    std::fs::write(
        &extra,
        format!("[http]\n\textraHeader = X-Included: {token}\n"),
    )
    .unwrap();
    for (key, value) in [
        (
            "http.https://github.com/.extraheader",
            format!("AUTHORIZATION: basic {token}"),
        ),
        (
            "remote.mirror.url",
            format!("https://x-access-token:{token}@github.com/me/repo.git"),
        ),
        ("credential.helper", format!("store --file=/tmp/{token}")),
        (
            &format!("url.https://{token}@github.com/.insteadOf"),
            "https://github.com/".to_owned(),
        ),
        ("include.path", extra.display().to_string()),
        ("github.token", token.to_owned()),
    ] {
        git(repo, &["config", "--add", key, &value]);
    }
    std::fs::write(
        repo.join(".git/credentials"),
        format!("https://me:{token}@github.com\n"),
    )
    .unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(repo.join(".git/logs/HEAD"))
        .unwrap();
    writeln!(log, "0000000000000000000000000000000000000000 0000000000000000000000000000000000000000 t <t@t> 0 +0000\tclone: from https://me:{token}@github.com/me/repo.git").unwrap();
    std::fs::write(
        repo.join(".git/FETCH_HEAD"),
        format!("abc\t\tbranch 'main' of https://{token}@github.com/me/repo\n"),
    )
    .unwrap();
    std::fs::write(repo.join(".env"), format!("API_KEY={token}\n")).unwrap();
    std::fs::write(repo.join(".env.test"), "FIXTURE=1\n").unwrap();
    std::fs::write(
        repo.join("deploy.pem"),
        format!("-----BEGIN RSA PRIVATE KEY-----\n{token}\n-----END RSA PRIVATE KEY-----\n"),
    )
    .unwrap();

    let dry = world
        .command()
        .current_dir(repo)
        .args([
            "start",
            "probe",
            "--cwd",
            "--include",
            ".env.test",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let plan = stdout(&dry);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(plan.contains(".env: an environment file"), "{plan}");
    assert!(
        plan.contains("deploy.pem: it holds a private key"),
        "{plan}"
    );
    assert!(
        plan.contains(".git/credentials: git's credential store"),
        "{plan}"
    );
    assert!(
        plan.contains("removed http.https://github.com/.extraheader"),
        "{plan}"
    );
    assert!(!plan.contains(".env.test:"), "named with --include: {plan}");
    assert!(
        !plan.contains(token),
        "the preflight shows no credential: {plan}"
    );

    let out = world
        .command()
        .current_dir(repo)
        .args(["start", "probe", "-y", "--rm", "--cwd", "--include", ".env.test", "--", "bash", "-c"])
        .arg(format!(
            "cd /workspace; echo found=$(grep -rlF {token} . | tr '\\n' ' '); \
             echo files=$(ls -A | tr '\\n' ' '); \
             echo mirror=$(git config remote.mirror.url); echo helper=$(git config credential.helper); \
             echo status=$(git status --porcelain | wc -l); git log -1 --format=%s >/dev/null; echo log_rc=$?"
        ))
        .output()
        .unwrap();
    let probe = Probe::new(out);
    assert_eq!(probe.get("found"), "", "a credential rode in");
    let files = probe.get("files");
    assert!(files.contains(".env.test"), "{files}");
    assert!(
        !files.contains(".env ") && !files.contains("deploy.pem"),
        "{files}"
    );
    assert_eq!(probe.get("mirror"), "https://github.com/me/repo.git");
    assert_eq!(probe.get("helper"), "");
    assert_eq!(probe.get("log_rc"), "0", "the repository still works");
    assert!(
        stderr(&probe.output).contains("left out 3 that look like secrets")
            || stderr(&probe.output).contains("left out"),
        "{}",
        stderr(&probe.output)
    );
}
