//! What bot-bottle puts into the agent's side besides the command
//! (DESIGN.md §7, issue "provisioning"): in order, the CA (installed by the
//! shim), the system prompt file, the skills, the git rewrites (in the
//! environment), and the supervise server's configuration. Also the
//! approvals a bottle has collected ([`Grants`]), which every later start
//! of the same bottle carries.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::plan::{
    MCP_CONFIG_PATH, PROMPT_PATH, PROXY_PORT, SUPERVISE_PATH, SUPERVISE_PORT, SUPERVISE_SERVER,
    SUPERVISE_TOOLS,
};

/// One step of provisioning a bottle.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The bottle's CA, into the agent's trust stores.
    Ca,
    /// The system prompt.
    Prompt,
    /// The skills, into the agent's home.
    Skills,
    /// The git gate's keys and the agent's remotes.
    Git,
    /// The supervise server's MCP configuration.
    Supervise,
}

/// The order provisioning follows, as the plan states it and every
/// backend carries it out.
pub const STEPS: &[Step] = &[
    Step::Ca,
    Step::Prompt,
    Step::Skills,
    Step::Git,
    Step::Supervise,
];

/// What is provisioned into the bottle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvisionPlan {
    /// [`STEPS`].
    pub steps: Vec<Step>,
    /// Where the system prompt is written (read-only for the agent).
    pub prompt_file: String,
    /// The whole prompt: bot-bottle's section, then the agent's `prompt`.
    pub prompt: String,
    /// Skills copied into the agent's `~/.claude/skills/`.
    pub skills: Vec<SkillPlan>,
    /// The MCP configuration file naming the supervise server, when the
    /// bottle has `supervise: true`.
    pub mcp_config: Option<String>,
    /// The supervise server's URL inside the bottle.
    pub supervise_url: Option<String>,
    /// JSON merged into files of the agent's home before it starts (by
    /// the shim, as the agent's user): placeholders and identifiers only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub home_files: Vec<HomeFile>,
    /// `--remote-control`: the name of the session Claude Code offers at
    /// claude.ai/code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_control: Option<String>,
}

/// Keys merged into one file of the agent's home.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HomeFile {
    /// The file, relative to the agent's home (`.claude.json`).
    pub path: String,
    /// The JSON object merged in.
    pub json: String,
}

/// One skill directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkillPlan {
    pub name: String,
    /// The host directory copied.
    pub source: PathBuf,
}

/// Where the bottle's keys for a file of the agent's home are mounted
/// (read-only) for the shim to merge: `HOME_MERGE_DIR/N.json`.
pub const HOME_MERGE_DIR: &str = "/etc/bot-bottle/home";

/// One [`HomeFile`] as the sandbox sees it.
pub struct HomeMerge<'a> {
    /// Its mount point in the bottle.
    pub source: String,
    /// The file of the agent's home it is merged into.
    pub dest: String,
    pub json: &'a str,
}

impl ProvisionPlan {
    /// The home files, each with its mount point and destination.
    pub fn home_merges(&self) -> Vec<HomeMerge<'_>> {
        self.home_files
            .iter()
            .enumerate()
            .map(|(i, file)| HomeMerge {
                source: format!("{HOME_MERGE_DIR}/{i}.json"),
                dest: format!("{}/{}", crate::plan::AGENT_HOME, file.path),
                json: &file.json,
            })
            .collect()
    }

    /// The MCP configuration's contents.
    pub fn mcp_config_json(&self) -> Option<String> {
        let url = self.supervise_url.as_ref()?;
        // `alwaysLoad`: Claude Code lists the tools from the first turn,
        // never behind its tool search, and waits for the server (at
        // most its connect timeout) before that turn is built.
        let config = serde_json::json!({
            "mcpServers": { SUPERVISE_SERVER: { "type": "http", "url": url, "alwaysLoad": true } }
        });
        serde_json::to_string_pretty(&config).ok()
    }
}

/// The supervise server's URL inside the bottle.
pub fn supervise_url() -> String {
    format!("http://127.0.0.1:{SUPERVISE_PORT}{SUPERVISE_PATH}")
}

/// What the prompt's built-in section needs to know.
pub struct PromptFacts<'a> {
    pub allow: Vec<String>,
    pub routes: Vec<String>,
    pub git_remotes: Vec<(String, Vec<String>)>,
    pub supervise: bool,
    pub agent_prompt: Option<&'a str>,
}

/// The system prompt: a short section on how the bottle works, so the
/// agent works with the sandbox rather than against it, then the agent's
/// own prompt.
pub fn prompt(facts: &PromptFacts<'_>) -> String {
    let mut text = String::from(
        "# You are in a bot-bottle\n\n\
         You run in a sandbox. Its only way out is a gate that a person controls.\n\n",
    );
    text.push_str(&format!(
        "- Network: everything goes through the proxy at http://127.0.0.1:{PROXY_PORT} \
         (HTTP_PROXY and HTTPS_PROXY are set; TLS is inspected and the bottle's CA is trusted). \
         There is no other route and no DNS: do not try to get around it.\n"
    ));
    if facts.allow.is_empty() {
        text.push_str("- Allowed hosts: none.\n");
    } else {
        text.push_str(&format!("- Allowed hosts: {}.\n", facts.allow.join(", ")));
    }
    if !facts.routes.is_empty() {
        text.push_str(&format!(
            "- Credentials for {} are added by the gate; the values you see are placeholders.\n",
            facts.routes.join(", ")
        ));
    }
    text.push_str(
        "- A refused request answers HTTP 403 with a body starting \"blocked by bottle policy:\" \
         and the reason. It is a decision, not an outage: do not retry it.\n",
    );
    for (remote, branches) in &facts.git_remotes {
        text.push_str(&format!(
            "- git remote {remote}: fetch and push through the gate; pushes may go to {}.\n",
            if branches.is_empty() {
                "no branch".to_owned()
            } else {
                branches.join(", ")
            }
        ));
    }
    if facts.supervise {
        text.push_str(&format!(
            "- To ask for more, use the MCP server \"{SUPERVISE_SERVER}\": show_policy, \
             request_egress(host, port?, reason), request_route(host, header?, reason), \
             request_image_change(dockerfile_fragment, reason), request_status(id). \
             A person decides; keep working on what you can meanwhile. An approved image \
             change restarts the bottle with /workspace and your home kept.\n"
        ));
    } else {
        text.push_str(
            "- This bottle cannot ask for more: if the work needs a host that is refused, say so.\n",
        );
    }
    if let Some(own) = facts.agent_prompt {
        text.push('\n');
        text.push_str(own.trim_end());
        text.push('\n');
    }
    text
}

/// Whether `command` runs Claude Code.
pub fn is_claude(command: &[String]) -> bool {
    command
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .is_some_and(|name| name == "claude")
}

/// `command` with Claude Code's flags for the prompt file and (with
/// supervise) the MCP configuration; other commands unchanged.
pub fn agent_argv(command: &[String], provision: &ProvisionPlan) -> Vec<String> {
    if !is_claude(command) {
        return command.to_vec();
    }
    let mut argv = command.to_vec();
    if let Some(name) = &provision.remote_control
        && !argv
            .iter()
            .any(|a| a == "remote-control" || a.starts_with("--remote-control"))
    {
        argv.extend(["--remote-control".to_owned(), name.clone()]);
    }
    if !argv.iter().any(|a| a == "--append-system-prompt-file") {
        argv.extend([
            "--append-system-prompt-file".to_owned(),
            provision.prompt_file.clone(),
        ]);
    }
    if let Some(config) = &provision.mcp_config {
        // The bottle's tools only ask (a person decides, outside): Claude
        // Code may call them, by name, without asking in the agent's
        // terminal first (another server named alike gets no such leave).
        argv.extend([
            "--mcp-config".to_owned(),
            config.clone(),
            "--allowedTools".to_owned(),
        ]);
        argv.extend(
            SUPERVISE_TOOLS
                .iter()
                .map(|tool| format!("mcp__{SUPERVISE_SERVER}__{tool}")),
        );
    }
    argv
}

/// The command that brings a bottle back: `claude …` continues its
/// conversation (`--continue`) when the agent's home holds one and starts
/// afresh when it does not; other commands run as they are.
pub fn continue_conversation(command: &[String]) -> Vec<String> {
    if !is_claude(command) {
        return command.to_vec();
    }
    let mut wrapped = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        "if ls \"$HOME\"/.claude/projects/*/*.jsonl >/dev/null 2>&1; then exec \"$0\" --continue \"$@\"; else exec \"$0\" \"$@\"; fi"
            .to_owned(),
    ];
    wrapped.extend(command.iter().cloned());
    wrapped
}

/// The default provisioning paths, for the plan.
pub fn paths(supervise: bool) -> (String, Option<String>, Option<String>) {
    (
        PROMPT_PATH.to_owned(),
        supervise.then(|| MCP_CONFIG_PATH.to_owned()),
        supervise.then(supervise_url),
    )
}

/// What a person approved for a bottle, kept in its state directory
/// (`grants.json`) so that `resume` — and the restart after an image
/// change — keeps it. Never holds a secret: routes name the host variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub allow: Vec<GrantedRule>,
    #[serde(default)]
    pub routes: Vec<GrantedRoute>,
    #[serde(default)]
    pub image: Option<GrantedImage>,
}

/// An approved allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantedRule {
    pub rule: String,
    pub request: String,
}

/// An approved credential route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantedRoute {
    pub host: String,
    pub header: String,
    pub scheme: String,
    /// The host variable holding the secret (read at every start).
    pub token_ref: String,
    pub request: String,
}

/// The bottle's own image: its agent image plus every approved fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantedImage {
    /// The per-bottle tag.
    pub tag: String,
    /// Every approved fragment, oldest first.
    pub fragments: Vec<String>,
    pub requests: Vec<String>,
}

impl GrantedImage {
    /// The fragments as one Dockerfile section.
    pub fn fragment(&self) -> String {
        self.fragments.join("\n")
    }
}

impl Grants {
    /// Reads `path`; a missing file is no grants.
    pub fn load(path: &std::path::Path) -> Result<Grants, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Grants::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    fn provision(supervise: bool) -> ProvisionPlan {
        let (prompt_file, mcp_config, supervise_url) = paths(supervise);
        ProvisionPlan {
            steps: STEPS.to_vec(),
            prompt_file,
            prompt: String::new(),
            skills: Vec::new(),
            mcp_config,
            supervise_url,
            home_files: Vec::new(),
            remote_control: None,
        }
    }

    #[test]
    fn remote_control_is_asked_of_claude_once() {
        let mut p = provision(false);
        p.remote_control = Some("claude-abc123".into());
        let argv = agent_argv(&["claude".to_owned()], &p);
        assert_eq!(argv[1..3], ["--remote-control", "claude-abc123"]);
        let own = ["claude".to_owned(), "remote-control".to_owned()];
        assert!(!agent_argv(&own, &p).contains(&"--remote-control".to_owned()));
        let sh = ["sh".to_owned(), "-c".to_owned(), "claude".to_owned()];
        assert_eq!(agent_argv(&sh, &p), sh);
    }

    #[test]
    fn claude_gets_the_prompt_and_the_supervise_server() {
        let argv = agent_argv(&["claude".to_owned()], &provision(true));
        assert_eq!(
            argv,
            [
                "claude",
                "--append-system-prompt-file",
                PROMPT_PATH,
                "--mcp-config",
                MCP_CONFIG_PATH,
                "--allowedTools",
                "mcp__bottle__show_policy",
                "mcp__bottle__request_egress",
                "mcp__bottle__request_route",
                "mcp__bottle__request_image_change",
                "mcp__bottle__request_status"
            ]
        );
        let bash = vec!["bash".to_owned()];
        assert_eq!(agent_argv(&bash, &provision(true)), bash);
        let config = provision(true).mcp_config_json().unwrap();
        assert!(config.contains("\"bottle\"") && config.contains("http://127.0.0.1:7777/mcp"));
    }

    #[test]
    fn only_claude_is_continued() {
        let bash = vec!["bash".to_owned()];
        assert_eq!(continue_conversation(&bash), bash);
        let claude = vec!["claude".to_owned(), "--verbose".to_owned()];
        let wrapped = continue_conversation(&claude);
        assert_eq!(wrapped[0], "sh");
        assert_eq!(&wrapped[3..], &claude[..]);
        assert!(wrapped[2].contains("--continue"));
    }

    #[test]
    fn the_prompt_says_how_to_ask() {
        let facts = PromptFacts {
            allow: vec!["a.test".into()],
            routes: vec![],
            git_remotes: vec![("origin".into(), vec!["agent/*".into()])],
            supervise: true,
            agent_prompt: Some("Work on /workspace."),
        };
        let text = prompt(&facts);
        assert!(text.contains("a.test") && text.contains("request_egress"));
        assert!(text.contains("agent/*") && text.ends_with("Work on /workspace.\n"));
    }
}
