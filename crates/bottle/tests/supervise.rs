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
    let out = exec_in(container, "agent", &["bash", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
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
    let mut in_flight = exec_in(
        &agent,
        "agent",
        &[
            "bash",
            "-c",
            "curl -s -m 20 -o /tmp/slow.body -w '%{http_code}' https://allowed.test/slow > /tmp/slow.code",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
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
    let _ = in_flight.wait();
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
    if native() {
        // No image to change: the gate refuses at once, naming why, and
        // files nothing for a person to approve.
        let (text, error) = call(
            &agent,
            "request_image_change",
            serde_json::json!({"dockerfile_fragment": "RUN true", "reason": "try"}),
        );
        assert!(error, "accepted on native: {text}");
        assert!(text.contains("native backend"), "{text}");
        let listed = bottle(&world, &["requests", &running.identity, "--format", "json"]);
        assert_eq!(stdout(&listed).trim(), "[]", "{}", stdout(&listed));
        assert!(
            audit(&world, &running.identity)
                .iter()
                .any(|l| l["event"] == "refused" && l["ask"] == "image"),
            "the refusal is audited"
        );
        return;
    }
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
    assert!(
        stderr(&out).contains("bbtest-broken-step"),
        "the person sees what the build printed: {}",
        stderr(&out)
    );
    let (text, _) = call(&agent, "request_status", serde_json::json!({"id": broken}));
    assert!(
        text.contains("failed") && text.contains("exited with status 3"),
        "{text}"
    );
    assert!(
        !text.contains("bbtest-broken-step"),
        "the agent is told a status, never what the build printed: {text}"
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
        stderr(&out).contains("step 1/1: RUN (lines 1-3)"),
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
    // The build left nothing of its own behind (its staging image).
    let staging = format!("bot-bottle/bottle-{}:staging", running.identity);
    assert!(
        !Command::new("docker")
            .args(["image", "inspect", &staging])
            .output()
            .unwrap()
            .status
            .success(),
        "{staging} was left behind"
    );
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

/// The gate's network here has a cloud metadata server on it, and the
/// bottle lists the whole link-local range in `allow_private`. An approved
/// image change's build reaches the outside only through a gate of its own
/// with the bottle's policy: the allowed host answers, the metadata
/// address, a host not listed, a private address and loopback are refused
/// there, each refusal is in the audit log as the build's, and nothing
/// reaches the metadata server. The build runs without a network of its
/// own, under the bottle's limits, and is stopped at its time limit.
#[test]
fn a_build_reaches_out_only_through_its_gate_and_within_its_limits() {
    let Some(world) = supervised_world() else {
        return;
    };
    if docker_only("builds of a bottle's own image") {
        return;
    }
    let meta_net = format!("{}-meta", world.network);
    docker(&[
        "network",
        "create",
        "--label",
        "bbtest=1",
        "--subnet",
        "169.254.168.0/22",
        &meta_net,
    ]);
    let meta = format!("{}-metadata", world.origin);
    docker(&[
        "network",
        "connect",
        "--alias",
        "allowed.test",
        "--alias",
        "forbidden.test",
        &meta_net,
        &world.origin,
    ]);
    docker(&[
        "run",
        "-d",
        "--name",
        &meta,
        "--label",
        "bbtest=1",
        "-u",
        "0",
        "--network",
        &meta_net,
        "--ip",
        "169.254.169.254",
        "--network-alias",
        "metadata.test",
        "--entrypoint",
        "python3",
        "bot-bottle/agent:latest",
        "-m",
        "http.server",
        "80",
    ]);
    struct Cleanup(String, String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            docker_quiet(&["rm", "-f", &self.1]);
            docker_quiet(&["network", "disconnect", "-f", &self.0, &self.2]);
            docker_quiet(&["network", "rm", &self.0]);
        }
    }
    let _cleanup = Cleanup(meta_net.clone(), meta.clone(), world.origin.clone());
    assert!(wait_for_port(&meta, 80));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(world.manifest_path()).unwrap()).unwrap();
    let bottle_cfg = &mut manifest["bottles"]["test"];
    for rule in ["metadata.test:80", "localhost:80"] {
        bottle_cfg["allow"]
            .as_array_mut()
            .unwrap()
            .push(rule.into());
    }
    bottle_cfg["gate_network"] = meta_net.clone().into();
    bottle_cfg["allow_private"] = serde_json::json!(["169.254.0.0/16"]);
    bottle_cfg["resources"] = serde_json::json!({
        "memory": "384m", "pids": 128, "cpus": 0.5, "build": { "timeout": "20s" }
    });
    world.write_manifest(&manifest);
    let dry = bottle(&world, &["start", "sup", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let running = start(&world, &[]);
    let agent = running.agent();
    assert!(wait_for_port(&agent, 7777));

    let fragment = "RUN curl -fsS -o /dev/null http://allowed.test/apt/Packages && echo allowed-ok \\\n \
        ; curl -sS http://metadata.test/ ; curl -sS http://forbidden.test/ \\\n \
        ; curl -sS http://10.11.12.13/ ; curl -sS --noproxy '' http://localhost/ ; exit 7";
    let (text, _) = call(
        &agent,
        "request_image_change",
        serde_json::json!({"dockerfile_fragment": fragment, "reason": "probe"}),
    );
    let id = request_id(&text);
    // The person sees the steps before they run, joined as they will run.
    let listed = bottle(&world, &["requests"]);
    assert!(
        stdout(&listed).contains("step 1 (lines 1-3 joined): RUN with the shell:"),
        "{}",
        stdout(&listed)
    );
    let out = bottle(&world, &["approve", &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exited with status 7"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("blocked by bottle policy"),
        "the person sees the refusals: {}",
        stderr(&out)
    );

    let build: Vec<serde_json::Value> = audit(&world, &running.identity)
        .into_iter()
        .filter(|r| r["phase"] == "build" && r["role"] == "egress")
        .collect();
    let decision = |host: &str| -> Vec<String> {
        build
            .iter()
            .filter(|r| r["host"] == host)
            .map(|r| {
                format!(
                    "{} {}",
                    r["decision"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert!(
        decision("allowed.test")
            .iter()
            .any(|d| d.starts_with("allow")),
        "{build:?}"
    );
    assert!(
        decision("metadata.test")
            .iter()
            .any(|d| d.contains("metadata service")),
        "{build:?}"
    );
    assert!(
        decision("forbidden.test")
            .iter()
            .any(|d| d.contains("not in the allowlist")),
        "{build:?}"
    );
    assert!(
        decision("10.11.12.13")
            .iter()
            .any(|d| d.starts_with("deny")),
        "{build:?}"
    );
    assert!(
        decision("localhost")
            .iter()
            .any(|d| d.contains("(loopback), which the gate never connects to")),
        "{build:?}"
    );
    let meta_log = Command::new("docker")
        .args(["logs", &meta])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&meta_log.stderr).contains("GET"),
        "the metadata server was reached: {}",
        String::from_utf8_lossy(&meta_log.stderr)
    );

    // Past the time limit: stopped; its container ran with the limits.
    let (text, _) = call(
        &agent,
        "request_image_change",
        serde_json::json!({"dockerfile_fragment": "RUN sleep 600", "reason": "slow"}),
    );
    let slow = request_id(&text);
    let approving = world
        .command()
        .args(["approve", &slow])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let build_container = format!("{}-build", running.identity);
    assert!(wait_until(Duration::from_secs(30), || Command::new(
        "docker"
    )
    .args(["inspect", &build_container])
    .output()
    .is_ok_and(|o| o.status.success())));
    let limits = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NetworkMode}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}} {{.HostConfig.SecurityOpt}}",
        &build_container,
    ]);
    assert_eq!(
        limits,
        format!("none {} 128 500000000 [no-new-privileges]", 384u64 << 20)
    );
    let out = approving.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("took longer than 20s"),
        "{}",
        stderr(&out)
    );
    assert!(
        wait_until(Duration::from_secs(10), || docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=bot-bottle.identity={}", running.identity),
            "--filter",
            "label=bot-bottle.role=build",
        ])
        .is_empty()),
        "the build's container was left behind"
    );
    let (text, _) = call(&agent, "request_status", serde_json::json!({"id": slow}));
    assert!(text.contains("took longer than"), "{text}");
    drop(running);
}
