//! Claude Code, the default agent, in every bottle: the pinned binary,
//! fetched once into the host's cache, runs inside the bottle on every
//! backend (and under gVisor), without a network of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

#[test]
fn the_pinned_claude_code_runs_in_the_bottle() {
    let Some(world) = world() else {
        return;
    };
    // The test bottle's 512 MiB is too little for Claude Code on native,
    // where the limit is RLIMIT_DATA: its engine maps about 600 MiB of
    // writable memory as it starts (docs/backends.md).
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["resources"]["memory"] = "2g".into();
    world.write_manifest(&manifest);
    let out = world.bottle(
        "probe",
        &[
            "sh",
            "-c",
            "echo at=$(command -v claude); claude --version 2>&1; echo rc=$?; echo quiet=$DISABLE_AUTOUPDATER$CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC$DISABLE_TELEMETRY; test -w \"$(command -v claude)\" && echo writable || echo read-only",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(&format!("{} (Claude Code)", pinned_claude())),
        "{text}"
    );
    // Its updater and other traffic the person did not ask for are off.
    assert!(text.contains("quiet=111"), "{text}");
    // The agent cannot replace the binary it is given.
    assert!(text.contains("read-only"), "{text}");
}

#[test]
fn an_unknown_way_to_install_claude_code_is_refused_naming_the_ways() {
    let Some(world) = world() else {
        return;
    };
    let out = world
        .command()
        .env("BOTTLE_INSTALL_CLAUDE", "auto")
        .args(["start", "probe", "-y", "--rm", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("BOTTLE_INSTALL_CLAUDE=\"auto\": say pypi"),
        "{}",
        stderr(&out)
    );
}

/// The real token of the model API route, held by the launcher only.
const MODEL_TOKEN: &str = "sk-ant-oat01-bbtest-the-real-token-only-the-gate-sends-it-000000000000000000000000000000000000AA";

/// The requests the model API's stand-in received, in order.
fn model_requests(world: &World) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("docker")
        .args(["exec", &world.origin, "cat", "/tmp/model-api.jsonl"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn claude_code_asks_the_model_through_the_gate_which_alone_holds_the_token() {
    let Some(world) = model_world(&["-p", "say hello"]) else {
        return;
    };
    let started = std::time::Instant::now();
    let out = world
        .command()
        .env("BBTEST_MODEL_TOKEN", MODEL_TOKEN)
        .args(["start", "claude", "-y"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("bbtest-answer"), "{text}");
    let identity = stderr(&out)
        .split_whitespace()
        .find(|w| w.starts_with("claude-"))
        .unwrap()
        .to_owned();

    // The model got the real token, in the header the role names; every
    // request of the run went there.
    let requests = model_requests(&world);
    let turns: Vec<&serde_json::Value> = requests
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"].as_str().unwrap().starts_with("/v1/messages")
        })
        .collect();
    assert!(!turns.is_empty(), "{requests:?}");
    for turn in &turns {
        assert_eq!(
            turn["headers"]["authorization"],
            format!("Bearer {MODEL_TOKEN}"),
            "{}",
            turn["headers"]
        );
    }
    let first = &turns[0]["body"];
    // The bottle's prompt and the agent's, after Claude Code's own.
    let system: String = first["system"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect();
    assert!(system.contains("You are in a bot-bottle"), "{system}");
    assert!(
        system.contains("bbtest-agent-prompt: be brief."),
        "{system}"
    );
    // The provisioned skill is offered to the model.
    assert!(
        first.to_string().contains("bbtest-skill-description"),
        "the skill is not listed"
    );
    // The supervise tools are offered from the first turn, not deferred.
    let tools: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for tool in [
        "mcp__bottle__request_egress",
        "mcp__bottle__request_route",
        "mcp__bottle__show_policy",
    ] {
        assert!(tools.contains(&tool), "{tool} not offered: {tools:?}");
    }

    // What Claude Code tried besides the model was refused at once: no
    // stall on a host no one allowed.
    let audit =
        std::fs::read_to_string(world.state_root().join(&identity).join("audit.jsonl")).unwrap();
    let refused: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["decision"] == "deny")
        .map(|r| r["host"].as_str().unwrap_or("?").to_owned())
        .collect();
    eprintln!("took {took:?}; refused: {refused:?}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "took {took:?}; refused {refused:?}"
    );

    // Resumed, Claude Code continues that conversation: the model is
    // sent the earlier turn. A command given after `--` continues too;
    // `--new-session` starts afresh.
    let said = |requests: &[serde_json::Value]| -> String {
        let last = requests
            .iter()
            .rev()
            .find(|r| {
                r["method"] == "POST" && r["path"].as_str().unwrap().starts_with("/v1/messages")
            })
            .unwrap();
        last["body"]["messages"].to_string()
    };
    for (args, continued) in [
        (vec!["resume", identity.as_str(), "-y"], true),
        (
            vec![
                "resume",
                identity.as_str(),
                "-y",
                "--",
                "claude",
                "-p",
                "again",
            ],
            true,
        ),
        (
            vec![
                "resume",
                identity.as_str(),
                "-y",
                "--new-session",
                "--",
                "claude",
                "-p",
                "afresh",
            ],
            false,
        ),
    ] {
        let before = model_requests(&world).len();
        let out = world
            .command()
            .env("BBTEST_MODEL_TOKEN", MODEL_TOKEN)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("bbtest-answer"),
            "{args:?}: {}",
            stdout(&out)
        );
        let messages = said(&model_requests(&world)[before..]);
        assert_eq!(
            messages.contains("bbtest-answer") && messages.contains("say hello"),
            continued,
            "{args:?}: {messages}"
        );
    }

    // The agent holds the placeholder only: not in its environment, its
    // files or any process of the bottle is the real token.
    let probe = world
        .command()
        .env("BBTEST_MODEL_TOKEN", MODEL_TOKEN)
        .args(["start", "claude", "-y", "--rm", "--", "sh", "-c"])
        .arg("echo token=$CLAUDE_CODE_OAUTH_TOKEN; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c bbtest-the-real; grep -rsl bbtest-the-real- $HOME /workspace /tmp /etc/bot-bottle; echo scanned")
        .output()
        .unwrap();
    let seen = stdout(&probe);
    assert!(probe.status.success(), "{seen}\n{}", stderr(&probe));
    let token = seen.lines().find_map(|l| l.strip_prefix("token=")).unwrap();
    assert!(
        token.starts_with("sk-ant-oat01-") && token.len() == 108 && token != MODEL_TOKEN,
        "{token}"
    );
    assert!(
        seen.contains("\n0\nscanned"),
        "the real token is in the bottle: {seen}"
    );
}

/// A world whose bottle routes `model.test` as the model API (with the
/// real token in the launcher's `BBTEST_MODEL_TOKEN`), is supervised and
/// has room for Claude Code; its agent `claude` runs `claude ARGS`.
fn model_world(args: &[&str]) -> Option<World> {
    model_world_with("claude_code_oauth", args)
}

/// [`model_world`] with the model route's `role`.
fn model_world_with(role: &str, args: &[&str]) -> Option<World> {
    let world = world()?;
    let mut manifest = world.manifest(&["model.test"]);
    let bottle = &mut manifest["bottles"]["test"];
    bottle["resources"]["memory"] = "2g".into();
    bottle["supervise"] = true.into();
    bottle["egress_proxy"]["routes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "host": "model.test", "token_ref": "BBTEST_MODEL_TOKEN", "Role": role
        }));
    let mut command = vec!["claude"];
    command.extend_from_slice(args);
    let skill = world.home().join(".claude/skills/bbtest-skill");
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: bbtest-skill\ndescription: bbtest-skill-description, for the tests\n---\nUse it well.\n",
    )
    .unwrap();
    manifest["agents"]["claude"] = serde_json::json!({
        "bottle": "test",
        "command": command,
        "prompt": "bbtest-agent-prompt: be brief.",
        "skills": ["bbtest-skill"],
    });
    world.write_manifest(&manifest);
    Some(world)
}

#[test]
fn the_model_asks_for_a_host_a_person_approves_and_its_next_tool_call_gets_there() {
    // --max-turns: a model that went round in circles ends the run.
    let Some(world) = model_world(&["-p", "bbtest-ask-egress forbidden.test", "--max-turns", "4"])
    else {
        return;
    };
    let run = |args: &[&str]| {
        world
            .command()
            .env("BBTEST_MODEL_TOKEN", MODEL_TOKEN)
            .args(args)
            .output()
            .unwrap()
    };
    // The model calls request_egress; Claude Code calls the bottle's tool
    // without asking (it only asks), and the model reads "pending".
    let out = run(&["start", "claude", "-y"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("bbtest-answer after tool:") && text.contains("pending"),
        "{text}"
    );
    let at = text.find("r-").expect("a request id");
    let id = &text[at..at + 8];
    let identity = stderr(&out)
        .split_whitespace()
        .find(|w| w.starts_with("claude-"))
        .unwrap()
        .to_owned();
    let listed = run(&["requests", &identity]);
    assert!(stdout(&listed).contains(id), "{}", stdout(&listed));

    // The origin's status, and the gate's answer to CONNECT.
    let curl = "bbtest-run: curl -s -o /dev/null -w code=%{http_code}/%{http_connect} https://forbidden.test/";
    let resume = [
        "resume",
        &identity,
        "-y",
        "--",
        "claude",
        "-p",
        curl,
        "--allowedTools",
        "Bash",
        "--max-turns",
        "4",
    ];
    // Asked is not allowed.
    let out = run(&resume);
    assert!(
        stdout(&out).contains("code=000/403"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let approved = run(&["approve", id]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let out = run(&resume);
    let seen: Vec<String> = model_requests(&world)
        .iter()
        .rev()
        .take(4)
        .map(|r| {
            let last = r["body"]["messages"]
                .as_array()
                .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                .cloned()
                .unwrap_or_default();
            format!(
                "{} <- {}",
                r["answer"],
                last["content"]
                    .to_string()
                    .chars()
                    .take(600)
                    .collect::<String>()
            )
        })
        .collect();
    assert!(
        stdout(&out).contains("code=200/200"),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        seen.join("\n")
    );
}

#[test]
fn an_api_key_reaches_the_model_in_x_api_key_and_the_bottle_holds_a_placeholder() {
    const KEY: &str = "sk-ant-api03-bbtest-the-real-key-only-the-gate-sends-it-0000000000000000000000000000000000000000AA";
    let Some(world) = model_world_with("anthropic_api_key", &["-p", "say hello"]) else {
        return;
    };
    let out = world
        .command()
        .env("BBTEST_MODEL_TOKEN", KEY)
        .args(["start", "claude", "-y", "--rm"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("bbtest-answer"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let requests = model_requests(&world);
    let turn = requests
        .iter()
        .find(|r| r["path"].as_str().unwrap().starts_with("/v1/messages"))
        .expect("a request of the model");
    assert_eq!(turn["headers"]["x-api-key"], KEY, "{}", turn["headers"]);
    assert!(
        !turn["headers"].to_string().contains("Bearer"),
        "{}",
        turn["headers"]
    );
    let probe = world
        .command()
        .env("BBTEST_MODEL_TOKEN", KEY)
        .args([
            "start",
            "claude",
            "-y",
            "--rm",
            "--",
            "sh",
            "-c",
            "echo key=$ANTHROPIC_API_KEY",
        ])
        .output()
        .unwrap();
    let key = stdout(&probe);
    let key = key.trim().strip_prefix("key=").unwrap();
    assert!(
        key.starts_with("sk-ant-api03-") && key.len() == 108 && key != KEY,
        "{key}"
    );
}

/// A claude.ai sign-in in the launcher's home, as `claude auth login`
/// leaves it: bot-bottle reads the account's ids and the plan from it,
/// never the tokens.
fn sign_in_on_the_host(world: &World) {
    let home = world.home();
    std::fs::write(
        home.join(".claude.json"),
        serde_json::json!({ "oauthAccount": {
            "accountUuid": "bbtest-account", "organizationUuid": "bbtest-org" } })
        .to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(
        home.join(".claude/.credentials.json"),
        serde_json::json!({ "claudeAiOauth": {
            "accessToken": "bbtest-host-access-token-never-read",
            "refreshToken": "bbtest-host-refresh-token-never-read",
            "subscriptionType": "max" } })
        .to_string(),
    )
    .unwrap();
}

/// A world whose bottle signs Claude Code in to `api.anthropic.com` (the
/// test's origin, on the test's network) with the real token in the
/// launcher's `BBTEST_MODEL_TOKEN`; agent `rc` runs `script` in `sh`.
fn anthropic_world(script: &str) -> Option<World> {
    let world = world()?;
    let mut manifest = world.manifest(&["api.anthropic.com"]);
    let bottle = &mut manifest["bottles"]["test"];
    bottle["resources"]["memory"] = "2g".into();
    bottle["egress_proxy"]["routes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "host": "api.anthropic.com", "token_ref": "BBTEST_MODEL_TOKEN", "Role": "claude_code_oauth"
        }));
    manifest["agents"]["rc"] = serde_json::json!({
        "bottle": "test",
        "command": ["sh", "-c", script],
    });
    world.write_manifest(&manifest);
    sign_in_on_the_host(&world);
    Some(world)
}

#[test]
fn remote_control_registers_with_the_gates_sign_in_and_polls_with_the_servers_secret() {
    // Remote Control as a server: it registers the bottle's environment
    // and polls for work until the timeout ends it.
    let script = "cat \"$HOME/.claude/.credentials.json\"; echo; timeout 15 claude remote-control --name bbtest-rc </dev/null; echo rc=$?";
    let Some(world) = anthropic_world(script) else {
        return;
    };
    let out = world
        .command()
        .env("BBTEST_MODEL_TOKEN", MODEL_TOKEN)
        .args(["start", "rc", "-y", "--rm", "--remote-control"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    // The sign-in in the bottle is a placeholder; the real token is not
    // in it, nor the host's own tokens.
    assert!(
        text.contains("sk-ant-oat01-bot-bottle-placeholder"),
        "{text}"
    );
    for secret in [
        MODEL_TOKEN,
        "bbtest-host-access-token-never-read",
        "bbtest-host-refresh-token-never-read",
    ] {
        assert!(!text.contains(secret), "{secret} in the bottle: {text}");
    }
    let requests = model_requests(&world);
    let auth = |r: &serde_json::Value| {
        r["headers"]["authorization"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let register = requests
        .iter()
        .find(|r| {
            r["method"] == "POST"
                && r["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/v1/environments/bridge")
        })
        .unwrap_or_else(|| panic!("no registration: {requests:?}\n{text}\n{}", stderr(&out)));
    // The gate sent the real token in place of the placeholder ...
    assert_eq!(auth(register), format!("Bearer {MODEL_TOKEN}"));
    // ... and let the secret the server issued pass as the agent sent it.
    let polls: Vec<_> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().contains("/work/poll"))
        .collect();
    assert!(!polls.is_empty(), "no poll: {requests:?}");
    for poll in polls {
        assert_eq!(
            auth(poll),
            "Bearer bbtest-environment-secret-the-server-issued"
        );
    }
    // No placeholder ever reached the API.
    assert!(
        !requests.iter().any(|r| auth(r).contains("placeholder")),
        "{requests:?}"
    );
}

#[test]
fn without_remote_control_the_sign_in_serves_the_model_api_alone() {
    // What an agent could do with the person's sign-in on the same host:
    // register a Remote Control environment, mint an API key, start a
    // scheduled agent in the cloud. Only the model's own paths pass.
    let script = r#"for p in /v1/environments/bridge /api/oauth/claude_cli/create_api_key /v1/code/triggers /v1/messages/../code/triggers /v1/messages; do
  printf '%s=%s\n' "$p" "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" -H 'content-type: application/json' -d '{"messages":[]}' --path-as-is "https://api.anthropic.com$p")"
done"#;
    let Some(world) = anthropic_world(script) else {
        return;
    };
    let out = world
        .command()
        .env("BBTEST_MODEL_TOKEN", MODEL_TOKEN)
        .args(["start", "rc", "-y", "--rm"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for refused in [
        "/v1/environments/bridge=403",
        "/api/oauth/claude_cli/create_api_key=403",
        "/v1/code/triggers=403",
        "/v1/messages/../code/triggers=403",
    ] {
        assert!(text.contains(refused), "{refused}: {text}");
    }
    assert!(text.contains("/v1/messages=200"), "{text}");
    // The origin saw the model's request only.
    let paths: Vec<String> = model_requests(&world)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/v1/messages"], "{paths:?}");
}
