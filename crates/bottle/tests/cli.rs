//! The command line as a person meets it: manifest errors, the plan,
//! refusals. No Docker needed: everything here fails or stops before a
//! bottle is created.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use assert_cmd::Command;
use serde_json::{Value, json};

/// Exit code for manifest problems (docs/cli.md).
const EXIT_CONFIG: i32 = 78;
const EXIT_NOT_CONFIRMED: i32 = 77;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(env.home()).unwrap();
        env
    }

    fn home(&self) -> std::path::PathBuf {
        self.dir.path().join("home")
    }

    fn manifest(&self, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("bottle.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn bottle(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bottle"));
        cmd.current_dir(self.dir.path())
            .env("HOME", self.home())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("NO_COLOR", "1")
            .env_remove("BOTTLE_MANIFEST")
            .env_remove("CLAUDE_BOTTLE_MANIFEST")
            .env_remove("BOTTLE_BACKEND");
        cmd
    }

    /// `bottle start coder --dry-run --format json`, which must succeed:
    /// the plan.
    fn plan(&self) -> Value {
        serde_json::from_str(&self.plan_text(&[])).unwrap()
    }

    /// The plan's JSON as printed, with the launcher's `vars` set.
    fn plan_text(&self, vars: &[(&str, &str)]) -> String {
        let out = self
            .bottle()
            .envs(vars.iter().copied())
            .args(["start", "coder", "--dry-run", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `bottle ARGS`, asserts it exits with `code`, returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.bottle().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        stderr
    }

    /// `bottle manifest check` on `manifest`: (exit code, stderr).
    fn check(&self, manifest: &Value) -> (i32, String) {
        let path = self.manifest(&serde_json::to_string_pretty(manifest).unwrap());
        let out = self
            .bottle()
            .args(["manifest", "check"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr)
                .replace(&self.dir.path().display().to_string(), "$TMP"),
        )
    }
}

fn valid() -> Value {
    json!({
        "agents": { "coder": { "bottle": "dev", "command": ["bash"] } },
        "bottles": { "dev": { "allow": ["api.example.com", "*.crates.io"] } }
    })
}

fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = base.pointer_mut(parent).unwrap();
    target[key] = value;
    base
}

/// Asserts `manifest` is refused with exit 78 and a message naming the
/// file, the field and the problem.
fn refused(manifest: Value, field: &str, needle: &str) {
    let env = Env::new();
    let (code, stderr) = env.check(&manifest);
    assert_eq!(code, EXIT_CONFIG, "{stderr}");
    assert!(
        stderr.contains("$TMP/bottle.json"),
        "names the file: {stderr}"
    );
    assert!(stderr.contains(field), "names {field}: {stderr}");
    assert!(stderr.contains(needle), "says {needle:?}: {stderr}");
}

#[test]
fn a_valid_manifest_passes() {
    let env = Env::new();
    let path = env.manifest(&valid().to_string());
    let out = env
        .bottle()
        .args(["manifest", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 agent, 1 bottle)"));
}

#[test]
fn the_sample_manifest_is_valid() {
    let env = Env::new();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bottle.json");
    env.bottle()
        .args(["manifest", "check"])
        .arg(sample)
        .assert()
        .success();
}

#[test]
fn bad_json_names_line_and_column() {
    let env = Env::new();
    let path =
        env.manifest("{\n  \"agents\": {\n    \"coder\": { \"bottle\": \"dev\" },\n  }\n}\n");
    let stderr = env.fails(&["manifest", "check", path.to_str().unwrap()], EXIT_CONFIG);
    assert!(stderr.contains("bottle.json:4:3: "), "{stderr}");
    assert!(stderr.contains("trailing comma"), "{stderr}");
}

#[test]
fn unknown_fields_are_errors() {
    refused(
        with(valid(), "/bottles/dev/allow_list", json!([])),
        "bottles.dev.allow_list",
        "unknown field `allow_list`, expected one of",
    );
}

#[test]
fn unknown_roles_are_rejected() {
    let routes = json!([{ "host": "api.example.com", "token_ref": "T", "Role": ["claude_code_oauth", "root"] }]);
    refused(
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": routes }),
        ),
        "bottles.dev.egress_proxy.routes[0].Role",
        "unknown role \"root\": known roles are claude_code_oauth, anthropic_api_key",
    );
}

#[test]
fn a_token_refresh_needs_a_command_and_a_sane_period() {
    let route = |extra: Value| {
        let mut r = json!({ "host": "api.example.com", "token_command": "cat tok" });
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": [r] }),
        )
    };
    let field = "bottles.dev.egress_proxy.routes[0].token_refresh";
    refused(
        route(json!({ "token_refresh": "5s" })),
        field,
        "\"5s\" is not a duration from 10s to 24h",
    );
    refused(
        route(json!({ "token_refresh": "soon" })),
        field,
        "is not a duration from 10s to 24h",
    );
    let mut by_ref = route(json!({ "token_refresh": "30m" }));
    let r = &mut by_ref["bottles"]["dev"]["egress_proxy"]["routes"][0];
    r.as_object_mut().unwrap().remove("token_command");
    r["token_ref"] = json!("TOKEN");
    refused(by_ref, field, "only a token_command can be run again");

    // A valid one: the plan says how often, never the command.
    let env = Env::new();
    env.manifest(&route(json!({ "token_refresh": "30m" })).to_string());
    let plan: Value = serde_json::from_str(&env.plan_text(&[])).unwrap();
    assert_eq!(plan["egress"]["routes"][0]["token_refresh_secs"], 1800);
    assert!(!plan.to_string().contains("cat tok"));
}

#[test]
fn a_route_host_is_given_once() {
    let routes = json!([
        { "host": "api.example.com", "token_ref": "A" },
        { "host": "API.example.com.", "token_ref": "B" }
    ]);
    refused(
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": routes }),
        ),
        "bottles.dev.egress_proxy.routes[1].host",
        "a route to api.example.com is given twice",
    );
}

#[test]
fn the_oauth_role_keeps_its_header() {
    let routes = json!([
        { "host": "api.example.com", "token_ref": "A", "Role": "claude_code_oauth", "header": "x-api-key" }
    ]);
    refused(
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": routes }),
        ),
        "bottles.dev.egress_proxy.routes[0].Role",
        "claude_code_oauth sends the token as Authorization: Bearer: remove header and scheme",
    );
}

#[test]
fn one_claude_code_oauth_route_per_bottle() {
    let routes = json!([
        { "host": "api.example.com", "token_ref": "A", "Role": "claude_code_oauth" },
        { "host": "x.crates.io", "token_ref": "B", "Role": "claude_code_oauth" }
    ]);
    refused(
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": routes }),
        ),
        "bottles.dev.egress_proxy.routes[1].Role",
        "claude_code_oauth and anthropic_api_key may appear on one route per bottle, and only one of them",
    );
    let routes = json!([
        { "host": "api.anthropic.com", "token_ref": "A", "Role": "claude_code_oauth" },
        { "host": "gw.example.com", "token_ref": "B", "Role": "anthropic_api_key" }
    ]);
    refused(
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": routes }),
        ),
        "bottles.dev.egress_proxy.routes[1].Role",
        "only one of them",
    );
}

#[test]
fn an_api_key_goes_bare_in_x_api_key() {
    let routes = json!([
        { "host": "api.anthropic.com", "token_ref": "A", "Role": "anthropic_api_key", "header": "authorization" }
    ]);
    refused(
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": routes }),
        ),
        "bottles.dev.egress_proxy.routes[0].Role",
        "anthropic_api_key sends the key as x-api-key with no scheme",
    );
}

/// A manifest whose agent is Claude Code with `route` as its only route.
fn claude_with_route(env: &Env, host: &str, role: &str) {
    let manifest = json!({
        "agents": { "coder": { "bottle": "dev", "command": ["claude"] } },
        "bottles": { "dev": {
            "allow": [host],
            "egress_proxy": { "routes": [
                { "host": host, "token_ref": "TOKEN", "Role": role } ] }
        } }
    });
    env.manifest(&manifest.to_string());
}

/// A claude.ai sign-in on the host, as `claude auth login` leaves it.
fn signed_in(env: &Env, plan: &str) {
    std::fs::write(
        env.home().join(".claude.json"),
        json!({ "oauthAccount": { "accountUuid": "acc-1", "organizationUuid": "org-1", "emailAddress": "me@example.com" } }).to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(env.home().join(".claude")).unwrap();
    std::fs::write(
        env.home().join(".claude/.credentials.json"),
        json!({ "claudeAiOauth": { "accessToken": "sk-ant-oat01-host-real-access", "refreshToken": "sk-ant-ort01-host-real-refresh", "subscriptionType": plan } }).to_string(),
    )
    .unwrap();
}

#[test]
fn remote_control_needs_a_claude_ai_sign_in_on_the_host() {
    let env = Env::new();
    claude_with_route(&env, "api.anthropic.com", "claude_code_oauth");
    let args = ["start", "coder", "--remote-control", "--dry-run"];
    let err = env.fails(&args, EXIT_CONFIG);
    assert!(
        err.contains("--remote-control needs your claude.ai sign-in")
            && err.contains("claude auth login"),
        "{err}"
    );
    signed_in(&env, "free");
    let err = env.fails(&args, EXIT_CONFIG);
    assert!(
        err.contains("needs a claude.ai pro, max, team, enterprise plan"),
        "{err}"
    );
}

#[test]
fn remote_control_needs_anthropics_own_api_and_a_sign_in_route() {
    for (host, role) in [
        ("llm.example.com", "claude_code_oauth"),
        ("api.anthropic.com", "anthropic_api_key"),
    ] {
        let env = Env::new();
        signed_in(&env, "max");
        claude_with_route(&env, host, role);
        let out = env
            .bottle()
            .env("TOKEN", "t")
            .args(["start", "coder", "--remote-control", "--dry-run"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{err}");
        assert!(
            err.contains("--remote-control needs the bottle's model route to be a claude_code_oauth route to api.anthropic.com"),
            "{err}"
        );
    }
}

#[test]
fn remote_control_is_planned_with_placeholders_and_its_paths_for_this_run_only() {
    let env = Env::new();
    signed_in(&env, "max");
    claude_with_route(&env, "api.anthropic.com", "claude_code_oauth");
    let vars = [("TOKEN", "sk-ant-oat01-the-real-one")];
    let run = |extra: &[&str]| {
        let out = env
            .bottle()
            .envs(vars.iter().copied())
            .args(["start", "coder", "--dry-run", "--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&["--remote-control"]);
    for secret in [
        "the-real-one",
        "host-real-access",
        "host-real-refresh",
        "me@example.com",
    ] {
        assert!(!text.contains(secret), "{secret} in the plan");
    }
    let plan: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = plan["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // The sign-in is a file of the home, not a token in the environment;
    // the feature flags Remote Control checks are not switched off.
    assert!(!names.contains(&"CLAUDE_CODE_OAUTH_TOKEN"), "{names:?}");
    assert!(!names.contains(&"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"));
    assert!(names.contains(&"DISABLE_TELEMETRY"));
    let command: Vec<&str> = plan["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = command
        .iter()
        .position(|a| *a == "--remote-control")
        .expect("--remote-control");
    assert_eq!(command[at + 1], plan["identity"].as_str().unwrap());
    let files = plan["provision"]["home_files"].as_array().unwrap();
    let file = |path: &str| -> Value {
        let f = files.iter().find(|f| f["path"] == path).expect(path);
        serde_json::from_str(f["json"].as_str().unwrap()).unwrap()
    };
    let sign_in = file(".claude/.credentials.json");
    let token = sign_in["claudeAiOauth"]["accessToken"].as_str().unwrap();
    assert!(
        token.starts_with("sk-ant-oat01-bot-bottle-placeholder"),
        "{token}"
    );
    assert_eq!(sign_in["claudeAiOauth"]["subscriptionType"], "max");
    let config = file(".claude.json");
    assert_eq!(config["oauthAccount"]["organizationUuid"], "org-1");
    let route = &plan["egress"]["routes"][0];
    assert_eq!(route["placeholder"].as_str(), Some(token));
    let prefixes = |route: &Value| -> Vec<String> {
        route["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["prefix"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(prefixes(route).contains(&"/v1/environments".to_owned()));

    // Without the switch: the token in the environment, the model API's
    // paths alone, no home files.
    let plan: Value = serde_json::from_str(&run(&[])).unwrap();
    let route = &plan["egress"]["routes"][0];
    let paths = prefixes(route);
    assert!(paths.contains(&"/v1/messages".to_owned()));
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/v1/environments") || p.starts_with("/v1/code"))
    );
    assert!(plan["provision"]["home_files"].is_null());
    assert!(plan["remote_control"].is_null());
    let text = {
        let out = env
            .bottle()
            .envs(vars.iter().copied())
            .args(["start", "coder", "--dry-run", "--remote-control"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        text.contains("remote control") && text.contains("on: session coder-"),
        "{text}"
    );
}

#[test]
fn the_api_key_role_gives_a_placeholder_and_a_gateway_its_base_url() {
    let env = Env::new();
    let manifest = json!({
        "agents": { "coder": { "bottle": "dev", "command": ["claude"] } },
        "bottles": { "dev": {
            "allow": ["llm.example.com"],
            "egress_proxy": { "routes": [
                { "host": "llm.example.com", "token_ref": "KEY", "Role": "anthropic_api_key" } ] }
        } }
    });
    env.manifest(&manifest.to_string());
    let text = env.plan_text(&[("KEY", "sk-ant-api03-the-real-one")]);
    assert!(!text.contains("the-real-one"), "a secret in the plan");
    let plan: Value = serde_json::from_str(&text).unwrap();
    let route = &plan["egress"]["routes"][0];
    assert_eq!(
        (route["header"].as_str(), route["scheme"].as_str()),
        (Some("x-api-key"), Some(""))
    );
    let value = |name: &str| {
        plan["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned)
    };
    let key = value("ANTHROPIC_API_KEY").expect("a placeholder key");
    assert!(
        key.starts_with("sk-ant-api03-") && key.ends_with("AA") && key.len() == 108,
        "{key}"
    );
    assert_eq!(
        value("ANTHROPIC_BASE_URL").as_deref(),
        Some("https://llm.example.com")
    );
    assert_eq!(value("CLAUDE_CODE_OAUTH_TOKEN"), None);
}

#[test]
fn wildcards_over_public_suffixes_are_rejected() {
    refused(
        with(valid(), "/bottles/dev/allow", json!(["*"])),
        "bottles.dev.allow[0]",
        "would allow every host",
    );
    refused(
        with(
            valid(),
            "/bottles/dev/allow",
            json!(["ok.example.com", "*.com"]),
        ),
        "bottles.dev.allow[1]",
        "public suffix \"com\"",
    );
    refused(
        with(valid(), "/bottles/dev/allow", json!(["*.co.uk"])),
        "bottles.dev.allow[0]",
        "public suffix \"co.uk\"",
    );
}

#[test]
fn private_ranges_wider_than_a_slash_8_are_refused() {
    refused(
        with(
            valid(),
            "/bottles/dev/allow_private",
            json!(["10.0.0.0/8", "0.0.0.0/1"]),
        ),
        "bottles.dev.allow_private[1]",
        "wider than a /8",
    );
    refused(
        with(valid(), "/bottles/dev/allow_private", json!(["fd00::/7"])),
        "bottles.dev.allow_private[0]",
        "wider than a /32",
    );
    let env = Env::new();
    let (code, stderr) = env.check(&with(
        valid(),
        "/bottles/dev/allow_private",
        json!(["10.0.0.0/8", "fd12:3456::/32"]),
    ));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn the_hosts_network_is_not_a_gate_network() {
    refused(
        with(valid(), "/bottles/dev/gate_network", json!("host")),
        "bottles.dev.gate_network",
        "share the host's namespace",
    );
    refused(
        with(valid(), "/bottles/dev/gate_network", json!("none")),
        "bottles.dev.gate_network",
        "no way out",
    );
}

#[test]
fn a_route_secret_is_never_forwarded_into_the_bottle() {
    let manifest = with(
        with(
            valid(),
            "/bottles/dev/egress_proxy",
            json!({ "routes": [{ "host": "api.example.com", "token_ref": "API_TOKEN" }] }),
        ),
        "/agents/coder/env",
        json!({ "TOKEN": { "from_host": "API_TOKEN" } }),
    );
    refused(
        manifest,
        "agents.coder.env.TOKEN.from_host",
        "API_TOKEN holds the secret of the route to api.example.com",
    );
}

#[test]
fn newlines_in_env_literals_are_rejected() {
    refused(
        with(
            valid(),
            "/agents/coder/env",
            json!({ "GREETING": "hello\nworld" }),
        ),
        "agents.coder.env.GREETING",
        "contains a newline",
    );
}

#[test]
fn missing_skills_are_named_with_their_path() {
    refused(
        with(valid(), "/agents/coder/skills", json!(["rust-style"])),
        "agents.coder.skills[0]",
        "skill \"rust-style\" not found at $TMP/home/.claude/skills/rust-style: create it or remove it from agent \"coder\"",
    );
}

#[test]
fn present_skills_pass() {
    let env = Env::new();
    std::fs::create_dir_all(env.home().join(".claude/skills/rust-style")).unwrap();
    let (code, stderr) = env.check(&with(
        valid(),
        "/agents/coder/skills",
        json!(["rust-style"]),
    ));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn missing_identity_files_are_named() {
    let git = json!([{ "Name": "origin", "Upstream": "ssh://git@git.example.com/me/repo.git",
                       "IdentityFile": "~/.ssh/bottle_ed25519" }]);
    refused(
        with(valid(), "/bottles/dev/git", git),
        "bottles.dev.git[0].IdentityFile",
        "identity file $TMP/home/.ssh/bottle_ed25519 does not exist",
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let env = Env::new();
    let manifest = json!({
        "agents": { "coder": { "bottle": "nope", "command": [], "env": { "HTTP_PROXY": "x" } } },
        "bottles": { "dev": { "allow": ["*", "a.*.com", "host:0"], "resources": { "memory": "1k" },
                              "allow_private": ["0.0.0.0/0", "ten"] } }
    });
    let (code, stderr) = env.check(&manifest);
    assert_eq!(code, EXIT_CONFIG);
    insta::assert_snapshot!(stderr);
}

#[test]
fn unknown_agents_list_the_known_ones() {
    let env = Env::new();
    env.manifest(&valid().to_string());
    let stderr = env.fails(&["start", "reviewer", "--dry-run"], EXIT_CONFIG);
    assert!(stderr.contains("agent \"reviewer\" is not in"), "{stderr}");
    assert!(stderr.contains("known agents are coder"), "{stderr}");
}

#[test]
fn a_missing_manifest_says_where_it_looked() {
    let env = Env::new();
    let stderr = env.fails(&["start", "coder", "--dry-run"], EXIT_CONFIG);
    assert!(stderr.contains("no manifest found"), "{stderr}");
    assert!(stderr.contains("bottle.json"), "{stderr}");
    assert!(stderr.contains("pass --manifest PATH"), "{stderr}");

    let out = env
        .bottle()
        .args(["start", "coder", "--dry-run", "--manifest", "nowhere.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere.json does not exist"));
}

#[test]
fn manifest_lookup_order() {
    let env = Env::new();
    // $XDG_CONFIG_HOME/bot-bottle/manifest.json is the last resort.
    let config = env.dir.path().join("config/bot-bottle");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("manifest.json"), valid().to_string()).unwrap();
    let plan = |cmd: &mut Command| -> Value {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let p = plan(
        env.bottle()
            .args(["start", "coder", "--dry-run", "--format", "json"]),
    );
    assert!(
        p["manifest"]
            .as_str()
            .unwrap()
            .ends_with("config/bot-bottle/manifest.json")
    );
    // ./bottle.json beats it.
    env.manifest(&valid().to_string());
    let p = plan(
        env.bottle()
            .args(["start", "coder", "--dry-run", "--format", "json"]),
    );
    assert_eq!(
        p["manifest"],
        env.dir.path().join("bottle.json").display().to_string()
    );
    // $BOTTLE_MANIFEST beats that, and its alias works.
    let other = env.dir.path().join("other.json");
    std::fs::write(&other, valid().to_string()).unwrap();
    for var in ["BOTTLE_MANIFEST", "CLAUDE_BOTTLE_MANIFEST"] {
        let p = plan(env.bottle().env(var, &other).args([
            "start",
            "coder",
            "--dry-run",
            "--format",
            "json",
        ]));
        assert_eq!(p["manifest"], other.display().to_string());
    }
}

#[test]
fn dry_run_json_is_the_documented_contract() {
    let env = Env::new();
    let manifest = json!({
        "agents": { "coder": { "bottle": "dev", "command": ["claude"],
                               "env": { "A": "1", "B": { "from_host": "HOST_B" } } } },
        "bottles": { "dev": {
            "allow": ["api.anthropic.com", "*.crates.io", "static.rust-lang.org:443"],
            "allow_private": ["172.31.0.0/16"],
            "egress_proxy": { "routes": [
                { "host": "api.anthropic.com", "token_ref": "TOKEN", "Role": "claude_code_oauth" } ] }
        } }
    });
    env.manifest(&manifest.to_string());
    let text = env.plan_text(&[("TOKEN", "real-secret-value"), ("HOST_B", "host-b-value")]);
    assert!(!text.contains("real-secret-value"), "a secret in the plan");
    assert!(
        !text.contains("host-b-value"),
        "a forwarded value in the plan"
    );
    let plan: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = plan
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    insta::assert_snapshot!(keys.join("\n"));
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["egress"]["routes"][0]["token_ref"], "TOKEN");
    let env_names: Vec<&str> = plan["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "DISABLE_ERROR_REPORTING",
    ] {
        assert!(
            env_names.contains(&name),
            "{name} missing from {env_names:?}"
        );
    }
    let no_proxy = plan["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NO_PROXY")
        .unwrap();
    assert_eq!(no_proxy["value"], "localhost,127.0.0.1,::1");
    // Dry run creates nothing.
    assert!(!env.dir.path().join("state").exists());
}

#[test]
fn a_forwarded_variable_must_be_set() {
    let env = Env::new();
    env.manifest(
        &with(
            valid(),
            "/agents/coder/env",
            json!({ "GH": { "from_host": "UNSET_VAR_X" } }),
        )
        .to_string(),
    );
    let out = env
        .bottle()
        .env_remove("UNSET_VAR_X")
        .args(["start", "coder", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNSET_VAR_X which is not set"));
}

#[test]
fn without_a_terminal_start_needs_yes() {
    let env = Env::new();
    env.manifest(&valid().to_string());
    let out = env
        .bottle()
        .args(["start", "coder"])
        .write_stdin("y\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_NOT_CONFIRMED));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pass -y"), "{stderr}");
    assert!(
        !env.dir.path().join("state").exists(),
        "nothing was created"
    );
}

#[test]
fn the_schema_describes_the_manifest() {
    let out = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["manifest", "schema"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "Manifest");
    assert!(schema["properties"]["agents"].is_object());
    assert!(schema["properties"]["bottles"].is_object());
    let text = schema.to_string();
    for field in [
        "egress_proxy",
        "token_ref",
        "Role",
        "IdentityFile",
        "allow_private",
        "gate_network",
    ] {
        assert!(text.contains(field), "schema lacks {field}");
    }
}

#[test]
fn claude_is_given_the_prompt_file_and_the_supervise_server() {
    let env = Env::new();
    std::fs::create_dir_all(env.home().join(".claude/skills/rust-style")).unwrap();
    let manifest = with(
        with(
            with(
                valid(),
                "/agents/coder/command",
                json!(["claude", "--verbose"]),
            ),
            "/agents/coder/skills",
            json!(["rust-style"]),
        ),
        "/bottles/dev/supervise",
        json!(true),
    );
    env.manifest(&manifest.to_string());
    let plan = env.plan();
    assert_eq!(
        plan["command"],
        json!([
            "claude",
            "--verbose",
            "--append-system-prompt-file",
            "/etc/bot-bottle/prompt.md",
            "--mcp-config",
            "/etc/bot-bottle/mcp.json",
            "--allowedTools",
            "mcp__bottle__show_policy",
            "mcp__bottle__request_egress",
            "mcp__bottle__request_route",
            "mcp__bottle__request_image_change",
            "mcp__bottle__request_status"
        ])
    );
    assert_eq!(
        plan["provision"]["steps"],
        json!(["ca", "prompt", "skills", "git", "supervise"])
    );
    assert_eq!(
        plan["provision"]["supervise_url"],
        "http://127.0.0.1:7777/mcp"
    );
    assert_eq!(plan["provision"]["skills"][0]["name"], "rust-style");
    assert!(
        plan["provision"]["prompt"]
            .as_str()
            .unwrap()
            .contains("request_egress")
    );
    // Coming back after an image change continues the conversation.
    let resume = plan["resume_command"].as_array().unwrap();
    assert_eq!(resume[0], "sh");
    assert!(resume[2].as_str().unwrap().contains("--continue"));
    let env_of = |name: &str| {
        plan["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env_of("BOTTLE_SUPERVISE_URL"),
        Some(json!("http://127.0.0.1:7777/mcp"))
    );
    assert_eq!(
        env_of("BOTTLE_PROMPT_FILE"),
        Some(json!("/etc/bot-bottle/prompt.md"))
    );

    // Any other command runs as written, with the prompt file exported.
    env.manifest(&with(manifest, "/agents/coder/command", json!(["bash"])).to_string());
    assert_eq!(env.plan()["command"], json!(["bash"]));
    let text = env
        .bottle()
        .args(["start", "coder", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("supervise    MCP server at http://127.0.0.1:7777/mcp"),
        "{text}"
    );
}

#[test]
fn a_missing_skill_stops_start_before_anything_is_made() {
    let env = Env::new();
    env.manifest(&with(valid(), "/agents/coder/skills", json!(["gone"])).to_string());
    let stderr = env.fails(&["start", "coder", "-y"], EXIT_CONFIG);
    assert!(stderr.contains("skill \"gone\" not found at"), "{stderr}");
    assert!(!env.dir.path().join("state").exists());
}

#[test]
fn decisions_need_a_request_that_exists() {
    let env = Env::new();
    for args in [
        &["approve", "r-000000"][..],
        &["deny", "r-000000"],
        &["approve", "../../etc/passwd"],
    ] {
        let stderr = env.fails(args, 65);
        assert!(stderr.contains("no request"), "{stderr}");
    }
    let out = env.bottle().args(["requests"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pending requests"));
}

#[test]
fn what_an_agent_wrote_cannot_drive_the_terminal() {
    let env = Env::new();
    let requests = env
        .dir
        .path()
        .join("state/bot-bottle/coder-abc123/supervise/requests");
    std::fs::create_dir_all(&requests).unwrap();
    let request = json!({
        "id": "r-00abcd", "identity": "coder-abc123", "kind": "image",
        "fragment": "RUN true\n\u{1b}[2J\u{1b}[1;1Happroved by root",
        "reason": "please\u{1b}]0;pwned\u{7}\r\u{202e}evil", "state": "pending", "created": 1
    });
    std::fs::write(requests.join("r-00abcd.json"), request.to_string()).unwrap();
    let out = env.bottle().args(["requests"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    assert!(
        text.contains("\\u{1b}[2J") && text.contains("r-00abcd"),
        "{text}"
    );
}

#[test]
fn an_id_two_bottles_share_is_never_guessed() {
    let env = Env::new();
    for bottle in ["coder-aaaaaa", "coder-bbbbbb"] {
        let dir = env.dir.path().join("state/bot-bottle").join(bottle);
        std::fs::create_dir_all(dir.join("supervise/requests")).unwrap();
        std::fs::write(dir.join("audit.jsonl"), "").unwrap();
        let request = json!({
            "id": "r-0000aa", "identity": bottle, "kind": "egress", "host": "a.test",
            "port": null, "reason": "r", "state": "pending", "created": 1
        });
        std::fs::write(
            dir.join("supervise/requests/r-0000aa.json"),
            request.to_string(),
        )
        .unwrap();
    }
    let stderr = env.fails(&["approve", "r-0000aa"], 65);
    assert!(stderr.contains("exists in 2 bottles"), "{stderr}");
    // Named, it is decided in that bottle only (not running: kept for its
    // next start).
    let out = env
        .bottle()
        .args(["approve", "coder-bbbbbb/r-0000aa"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = env.dir.path().join("state/bot-bottle");
    let grants = std::fs::read_to_string(state.join("coder-bbbbbb/grants.json")).unwrap();
    assert!(grants.contains("a.test"));
    assert!(!state.join("coder-aaaaaa/grants.json").exists());
    let audit = std::fs::read_to_string(state.join("coder-bbbbbb/audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"approved\""), "{audit}");
    let again = env.fails(&["approve", "coder-bbbbbb/r-0000aa"], 65);
    assert!(again.contains("approved already"), "{again}");
}
