//! The agent asks, a person decides (DESIGN.md §1 invariant 5, §7): a
//! scripted MCP client inside a real bottle drives the supervise tools;
//! `bottle approve` / `deny` on the host decide; the running gate widens
//! live, `resume` keeps what was approved, and an approved image change
//! rebuilds the bottle and brings it back under the same identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// The scripted MCP client, piped into the bottle's Python.
const CLIENT: &str = include_str!("fixtures/mcp_client.py");

/// A world whose test bottle has `supervise: true`, a skill, a prompt and
/// an agent `sup` that stays up (printing its identity first).
fn supervised_world() -> Option<World> {
    let world = world()?;
    let skill = world.home().join(".claude/skills/bbtest-skill");
    std::fs::create_dir_all(skill.join("refs")).unwrap();
    std::fs::write(skill.join("SKILL.md"), "# bbtest skill\nuse it well\n").unwrap();
    std::fs::write(skill.join("refs/notes.txt"), "notes\n").unwrap();
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["supervise"] = true.into();
    manifest["agents"]["sup"] = serde_json::json!({
        "bottle": "test",
        "command": ["sh", "-c", "echo ID=$BOTTLE_IDENTITY; exec sleep 600"],
        "prompt": "bbtest: work on /workspace.",
        "skills": ["bbtest-skill"],
    });
    world.write_manifest(&manifest);
    Some(world)
}

/// `bottle start sup -y [ARGS]`, left running.
fn start(world: &World, args: &[&str]) -> Running {
    Running::spawn(world.command().args(["start", "sup", "-y"]).args(args))
}

/// Runs `script` in the agent's container as the agent.
fn in_bottle(container: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", "-u", "10001:10001", container, "bash", "-c", script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs the MCP client in the bottle with `args`.
fn mcp(container: &str, args: &[&str]) -> String {
    let mut child = Command::new("docker")
        .args(["exec", "-i", "-u", "10001:10001", container, "python3", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), CLIENT.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mcp client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Calls `tool`; returns its text and whether it was an error.
fn call(container: &str, tool: &str, args: serde_json::Value) -> (String, bool) {
    let out = mcp(container, &["call", tool, &args.to_string()]);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        answer["text"].as_str().unwrap().to_owned(),
        answer["error"].as_bool().unwrap(),
    )
}

/// The request id (`r-xxxxxx`) in a tool's answer.
fn request_id(text: &str) -> String {
    let at = text.find("r-").expect("an id in the answer");
    text[at..at + 8].to_owned()
}

/// The HTTP status of `curl URL` from inside the bottle: the origin's,
/// or the proxy's answer to CONNECT when the tunnel was refused.
fn status(container: &str, url: &str) -> String {
    let out = in_bottle(
        container,
        &format!("curl -s -m 10 -o /dev/null -w '%{{http_code}} %{{http_connect}}' {url}"),
    );
    match out.split_once(' ') {
        Some(("000", connect)) => connect.to_owned(),
        Some((code, _)) => code.to_owned(),
        None => out,
    }
}

fn bottle(world: &World, args: &[&str]) -> std::process::Output {
    world.command().args(args).output().unwrap()
}

fn audit(world: &World, identity: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(world.state_root().join(identity).join("audit.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_person_widens_the_running_bottle_and_resume_keeps_it() {
    let Some(world) = supervised_world() else {
        return;
    };
    let running = start(&world, &[]);
    let agent = running.agent();
    assert!(
        wait_for_port(&agent, 7777),
        "the supervise port never opened"
    );

    let (text, error) = call(
        &agent,
        "request_egress",
        serde_json::json!({"host": "Forbidden.TEST", "reason": "read its docs"}),
    );
    assert!(!error && text.contains("pending"), "{text}");
    let id = request_id(&text);
    // Asked is not allowed.
    assert_eq!(status(&agent, "https://forbidden.test/"), "403");

    let listed = bottle(&world, &["requests", "--format", "json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("the request is listed");
    assert_eq!(mine["kind"], "egress");
    assert_eq!(mine["host"], "forbidden.test");
    assert_eq!(mine["state"], "pending");
    assert_eq!(mine["identity"], running.identity.as_str());

    // A request in flight while the policy changes finishes untouched.
    docker(&[
        "exec",
        "-d",
        "-u",
        "10001:10001",
        &agent,
        "bash",
        "-c",
        "curl -s -m 20 -o /tmp/slow.body -w '%{http_code}' https://allowed.test/slow > /tmp/slow.code",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let approved = bottle(&world, &["approve", &id]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(
        wait_until(Duration::from_secs(15), || in_bottle(
            &agent,
            "cat /tmp/slow.code"
        ) == "200"),
        "the request in flight did not finish"
    );
    assert_eq!(in_bottle(&agent, "wc -c < /tmp/slow.body"), "50");
    // The same running bottle reaches it now, with no restart.
    assert_eq!(status(&agent, "https://forbidden.test/"), "200");
    let (text, _) = call(&agent, "request_status", serde_json::json!({"id": id}));
    assert!(
        text.contains("applied") && text.contains("forbidden.test is allowed now"),
        "{text}"
    );
    let (text, _) = call(&agent, "show_policy", serde_json::json!({}));
    assert!(text.contains("forbidden.test"), "{text}");
    // Deciding twice is refused.
    let again = bottle(&world, &["approve", &id]);
    assert_eq!(again.status.code(), Some(65), "{}", stderr(&again));

    // A credential route, approved with the secret's host variable: the
    // gate injects it from now on; the agent never holds it.
    let (text, _) = call(
        &agent,
        "request_route",
        serde_json::json!({"host": "forbidden.test", "header": "X-Api-Key", "reason": "its API"}),
    );
    let route_id = request_id(&text);
    let missing = bottle(&world, &["approve", &route_id]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("--token-ref"),
        "{}",
        stderr(&missing)
    );
    let secret = format!("bbtest-approved-{}-Xk2", running.identity);
    let approved = world
        .command()
        .env("BBTEST_APPROVED_TOKEN", &secret)
        .args(["approve", &route_id, "--token-ref", "BBTEST_APPROVED_TOKEN"])
        .output()
        .unwrap();
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(!stderr(&approved).contains(&secret));
    assert_eq!(
        status(
            &agent,
            "-H 'x-api-key: placeholder' https://forbidden.test/routed"
        ),
        "200"
    );
    assert!(
        world
            .origin_requests()
            .iter()
            .any(|r| r["path"] == "/routed"
                && r["headers"]["x-api-key"] == format!("Bearer {secret}")),
        "the approved route was not injected"
    );
    let grants = std::fs::read_to_string(
        world
            .state_root()
            .join(&running.identity)
            .join("grants.json"),
    )
    .unwrap();
    assert!(grants.contains("BBTEST_APPROVED_TOKEN") && !grants.contains(&secret));
    assert_nowhere_in(&agent, &secret);

    // Denied: still refused, and the agent reads why.
    let (text, _) = call(
        &agent,
        "request_egress",
        serde_json::json!({"host": "forbidden.test", "port": 8443, "reason": "more"}),
    );
    let denied_id = request_id(&text);
    let denied = bottle(
        &world,
        &["deny", &denied_id, "--reason", "not for this task"],
    );
    assert!(denied.status.success(), "{}", stderr(&denied));
    let (text, _) = call(
        &agent,
        "request_status",
        serde_json::json!({"id": denied_id}),
    );
    assert!(
        text.contains("denied") && text.contains("not for this task"),
        "{text}"
    );
    assert_eq!(status(&agent, "https://forbidden.test:8443/"), "403");

    // Who decided what is in the audit log.
    let log = audit(&world, &running.identity);
    let event = |name: &str, request: &str| {
        log.iter()
            .any(|l| l["role"] == "supervise" && l["event"] == name && l["request"] == request)
    };
    assert!(event("requested", &id) && event("approved", &id) && event("applied", &id));
    assert!(event("denied", &denied_id));
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    assert!(
        log.iter()
            .any(|l| l["event"] == "approved" && l["decided_by"] == user.as_str())
    );

    // Resume keeps the approval (and not the denial).
    let identity = running.identity.clone();
    drop(running);
    let script = "echo ok=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' https://forbidden.test/resumed 2>&1); \
         echo denied=$(curl -s -m 10 -o /dev/null -w '%{http_connect}' https://forbidden.test:8443/)";
    let out = world
        .command()
        .env("BBTEST_APPROVED_TOKEN", &secret)
        .args(["resume", &identity, "-y", "--", "bash", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let probe = Probe::new(out);
    assert_eq!(
        probe.get("ok"),
        "200",
        "{err}\n{:#?}",
        &audit(&world, &identity)[audit(&world, &identity).len().saturating_sub(6)..]
    );
    assert_eq!(probe.get("denied"), "403");
    assert!(
        world
            .origin_requests()
            .iter()
            .any(|r| r["path"] == "/resumed"
                && r["headers"]["x-api-key"] == format!("Bearer {secret}")),
        "the approved route did not come back with the bottle"
    );
    // Without the route's variable, resume says which one to export.
    let out = bottle(&world, &["resume", &identity, "-y", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("BBTEST_APPROVED_TOKEN"),
        "{}",
        stderr(&out)
    );
    let rm = bottle(&world, &["rm", &identity, "-y"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
}

#[test]
fn the_agent_is_provisioned_and_cannot_reach_the_approval_path() {
    let Some(world) = supervised_world() else {
        return;
    };
    let running = start(&world, &["--rm"]);
    let agent = running.agent();
    assert!(
        wait_for_port(&agent, 7777),
        "the supervise port never opened"
    );

    // Provisioning: prompt, MCP configuration, skills, variables.
    let prompt = in_bottle(&agent, "cat \"$BOTTLE_PROMPT_FILE\"");
    assert!(prompt.contains("You are in a bot-bottle"), "{prompt}");
    assert!(prompt.contains("request_egress") && prompt.ends_with("bbtest: work on /workspace."));
    let config = in_bottle(&agent, "cat /etc/bot-bottle/mcp.json");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["mcpServers"]["bottle"]["url"],
        "http://127.0.0.1:7777/mcp"
    );
    assert_eq!(
        in_bottle(&agent, "echo $BOTTLE_SUPERVISE_URL"),
        "http://127.0.0.1:7777/mcp"
    );
    assert_eq!(
        in_bottle(
            &agent,
            "stat -c '%U' ~/.claude/skills/bbtest-skill/SKILL.md && cat ~/.claude/skills/bbtest-skill/refs/notes.txt"
        ),
        "agent\nnotes"
    );
    // The agent cannot rewrite its own prompt.
    assert_eq!(
        in_bottle(
            &agent,
            "echo x >> /etc/bot-bottle/prompt.md 2>/dev/null && echo wrote || echo refused"
        ),
        "refused"
    );

    let (text, _) = call(
        &agent,
        "request_egress",
        serde_json::json!({"host": "forbidden.test", "reason": "try"}),
    );
    let id = request_id(&text);

    // The tools only ask.
    assert_eq!(
        mcp(&agent, &["list"]),
        "request_egress request_image_change request_route request_status show_policy"
    );
    let (text, error) = call(&agent, "approve", serde_json::json!({"id": id}));
    assert!(error, "{text}");
    // Hostile input gets a refusal, not a request.
    for (tool, args) in [
        (
            "request_egress",
            serde_json::json!({"host": "*", "reason": "all"}),
        ),
        (
            "request_egress",
            serde_json::json!({"host": "*.com", "reason": "all"}),
        ),
        (
            "request_egress",
            serde_json::json!({"host": "x.test", "reason": ""}),
        ),
        (
            "request_route",
            serde_json::json!({"host": "x.test", "header": "host", "reason": "r"}),
        ),
        (
            "request_image_change",
            serde_json::json!({"dockerfile_fragment": "FROM evil", "reason": "r"}),
        ),
        ("request_status", serde_json::json!({"id": "../../grants"})),
    ] {
        let (text, error) = call(&agent, tool, args.clone());
        assert!(error, "{tool} {args} was accepted: {text}");
    }

    // No control socket, no request file, anywhere the agent can look.
    assert_eq!(
        in_bottle(
            &agent,
            "find / -xdev \\( -name 'control.sock' -o -name 'r-*.json' -o -name grants.json \\) 2>/dev/null; ls /run/bottle"
        ),
        "egress.sock\nsupervise.sock"
    );
    // Approval-shaped lines to every socket and loopback port it has.
    let change = serde_json::json!({
        "op": "allow", "rule": "forbidden.test", "request": id, "decided_by": "agent"
    })
    .to_string();
    let poke = format!(
        r#"python3 - <<'EOF'
import socket
line = {change:?}.encode() + b"\n"
for target in ["/run/bottle/egress.sock", "/run/bottle/supervise.sock", ("127.0.0.1", 3128), ("127.0.0.1", 7777)]:
    family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
    s = socket.socket(family)
    s.settimeout(3)
    try:
        s.connect(target)
        s.sendall(line)
        s.recv(4096)
    except OSError:
        pass
    s.close()
print("poked")
EOF"#
    );
    assert_eq!(in_bottle(&agent, &poke), "poked");
    // Not the supervise server's host or path: refused.
    assert_eq!(mcp(&agent, &["raw", "POST", "/mcp", "evil.test"]), "403");
    assert_eq!(
        mcp(&agent, &["raw", "POST", "/approve", "127.0.0.1:7777"]),
        "404"
    );

    // Still pending, still refused.
    let (text, _) = call(&agent, "request_status", serde_json::json!({"id": id}));
    assert!(text.contains("pending"), "{text}");
    assert_eq!(status(&agent, "https://forbidden.test/"), "403");
    let listed = bottle(&world, &["requests", &running.identity]);
    assert!(stdout(&listed).contains(&id), "{}", stdout(&listed));
}

#[test]
fn an_image_change_rebuilds_the_bottle_under_the_same_identity() {
    let Some(world) = supervised_world() else {
        return;
    };
    let work = world.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("marker.txt"), "kept\n").unwrap();
    let running = Running::spawn(
        world
            .command()
            .current_dir(&work)
            .args(["start", "sup", "-y", "--cwd"]),
    );
    let agent = running.agent();
    assert!(
        wait_for_port(&agent, 7777),
        "the supervise port never opened"
    );
    in_bottle(&agent, "echo 'made inside' > /workspace/inside.txt");
    let container_id = || docker(&["inspect", "-f", "{{.Id}}", &agent]);
    let before = container_id();

    // A fragment that does not build: the bottle keeps running as it was.
    let (text, _) = call(
        &agent,
        "request_image_change",
        serde_json::json!({"dockerfile_fragment": "RUN echo bbtest-broken-step && exit 3", "reason": "try"}),
    );
    let broken = request_id(&text);
    let out = bottle(&world, &["approve", &broken]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("did not build"), "{}", stderr(&out));
    let (text, _) = call(&agent, "request_status", serde_json::json!({"id": broken}));
    assert!(
        text.contains("failed") && text.contains("bbtest-broken-step"),
        "{text}"
    );
    assert_eq!(
        container_id(),
        before,
        "a failed build restarted the bottle"
    );

    // A package from the test's own apt repository.
    let fragment = "RUN echo 'deb [trusted=yes] http://allowed.test/apt ./' > /etc/apt/sources.list.d/bbtest.list \\\n \
        && apt-get update -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/bbtest.list -o Dir::Etc::sourceparts=- \\\n \
        && apt-get install -y --no-install-recommends bbtest-tool";
    let (text, _) = call(
        &agent,
        "request_image_change",
        serde_json::json!({"dockerfile_fragment": fragment, "reason": "needs bbtest-tool"}),
    );
    let id = request_id(&text);
    assert_eq!(
        in_bottle(&agent, "command -v bbtest-tool || echo none"),
        "none"
    );
    let out = bottle(&world, &["approve", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Step "),
        "no build progress: {}",
        stderr(&out)
    );

    // Back under the same identity, on its own image, volumes kept.
    let tag = format!("bot-bottle/bottle-{}:latest", running.identity);
    assert!(
        wait_until(Duration::from_secs(60), || {
            Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{.State.Running}} {{.Config.Image}}",
                    &agent,
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == format!("true {tag}"))
        }),
        "the bottle did not come back on {tag}"
    );
    assert_ne!(container_id(), before);
    assert!(wait_for_port(&agent, 7777));
    assert_eq!(in_bottle(&agent, "bbtest-tool"), "bbtest-tool works");
    assert_eq!(
        in_bottle(&agent, "cat /workspace/marker.txt /workspace/inside.txt"),
        "kept\nmade inside"
    );
    let (text, _) = call(&agent, "request_status", serde_json::json!({"id": id}));
    assert!(text.contains("applied") && text.contains(&tag), "{text}");
    let (text, _) = call(&agent, "show_policy", serde_json::json!({}));
    assert!(
        text.contains(&format!(
            "{tag} (bot-bottle/agent:latest plus 1 approved change)"
        )),
        "{text}"
    );
    let dockerfile = std::fs::read_to_string(
        world
            .state_root()
            .join(&running.identity)
            .join("image/Dockerfile"),
    )
    .unwrap();
    assert!(
        dockerfile.starts_with("FROM bot-bottle/agent:latest")
            && dockerfile.contains("bbtest-tool")
    );

    // Stopped and resumed: still its own image.
    let identity = running.identity.clone();
    drop(running);
    let out = bottle(&world, &["resume", &identity, "-y", "--", "bbtest-tool"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "bbtest-tool works");
    let rm = bottle(&world, &["rm", &identity, "-y"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    // Its own image goes with it.
    let gone = Command::new("docker")
        .args(["image", "inspect", &tag])
        .output()
        .unwrap();
    if gone.status.success() {
        let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
        panic!("bottle rm left {tag}");
    }
}
