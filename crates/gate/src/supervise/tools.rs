//! The supervise MCP server the agent talks to (DESIGN.md §7): it shows
//! the bottle's policy and files requests for more. It can only *ask*:
//! no tool decides, and the decision path (the control socket) is not
//! reachable from the bottle.

use std::sync::Arc;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

use super::requests::{Ask, MAX_REASON_CHARS, Store};
use crate::audit::Audit;
use crate::config::SuperviseConfig;
use crate::egress::Live;

/// What the tools need; shared by every MCP session.
pub struct Shared {
    pub identity: String,
    pub store: Store,
    pub live: Arc<Live>,
    pub audit: Arc<Audit>,
    pub config: SuperviseConfig,
}

/// One MCP session's handler.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EgressParams {
    /// The host to reach, e.g. `api.example.com` or `*.example.com`.
    pub host: String,
    /// The port; omitted means the usual ones (443 for HTTPS, 80 for HTTP).
    pub port: Option<u16>,
    /// Why the work needs it: the person reads this before deciding.
    pub reason: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RouteParams {
    /// The host whose requests should carry a credential.
    pub host: String,
    /// The header the credential goes in (default `authorization`).
    pub header: Option<String>,
    /// Why the work needs it.
    pub reason: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ImageParams {
    /// Dockerfile instructions (RUN, ENV, ARG, WORKDIR, LABEL, USER, SHELL)
    /// applied on top of the bottle's current image, e.g.
    /// `RUN apt-get update && apt-get install -y jq`.
    pub dockerfile_fragment: String,
    /// Why the work needs it.
    pub reason: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct StatusParams {
    /// The request's id, as the request tool returned it (`r-…`).
    pub id: String,
}

fn text(message: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(message.into())])
}

fn refused(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

#[tool_router]
impl Supervisor {
    pub fn new(shared: Arc<Shared>) -> Supervisor {
        Supervisor { shared }
    }

    #[tool(
        description = "Show the bottle's policy now: the hosts it may reach, its credential routes (hosts and header names; never secrets), its git remotes and push rules, and its image."
    )]
    fn show_policy(&self) -> CallToolResult {
        let policy = self.shared.live.policy();
        let credentials = self.shared.live.credentials();
        let view = serde_json::json!({
            "allow": policy.rules().collect::<Vec<_>>(),
            "routes": credentials.routes().iter().map(|r| serde_json::json!({
                "host": r.host.to_string(),
                "header": r.header.as_str(),
            })).collect::<Vec<_>>(),
            "git": self.shared.config.remotes.iter().map(|g| serde_json::json!({
                "remote": g.name,
                "upstream": g.upstream,
                "push": {
                    "branches": g.push.branches,
                    "force": g.push.force,
                    "delete": g.push.delete,
                    "tags": g.push.tags,
                },
            })).collect::<Vec<_>>(),
            "image": self
                .shared
                .live
                .image()
                .map_or_else(|| self.shared.config.image.clone(), |i| i.to_string()),
            "proxy": "http://127.0.0.1:3128 (HTTP_PROXY / HTTPS_PROXY are set)",
            "denials": "a refused request gets HTTP 403 with a body starting 'blocked by bottle policy:' and the reason",
        });
        text(serde_json::to_string_pretty(&view).unwrap_or_default())
    }

    #[tool(
        description = "Ask the person to allow a host. Answers at once with a request id and 'pending'; nothing changes until a person approves. Poll request_status with the id."
    )]
    fn request_egress(&self, Parameters(p): Parameters<EgressParams>) -> CallToolResult {
        self.file(
            Ask::Egress {
                host: p.host,
                port: p.port,
            },
            &p.reason,
        )
    }

    #[tool(
        description = "Ask the person for a credential route: the gate adds the real credential to requests to this host (the bottle never sees it). Answers with a request id and 'pending'."
    )]
    fn request_route(&self, Parameters(p): Parameters<RouteParams>) -> CallToolResult {
        let header = p.header.unwrap_or_else(|| "authorization".to_owned());
        self.file(
            Ask::Route {
                host: p.host,
                header,
            },
            &p.reason,
        )
    }

    #[tool(
        description = "Ask the person to change the bottle's image (e.g. install a package). If approved, the bottle restarts on the new image with /workspace and home kept. Answers with a request id and 'pending'."
    )]
    fn request_image_change(&self, Parameters(p): Parameters<ImageParams>) -> CallToolResult {
        if let Some(why) = &self.shared.config.image_changes {
            let mut fields = serde_json::Map::new();
            fields.insert("ask".into(), "image".into());
            fields.insert("reason".into(), why.clone().into());
            self.shared.audit.record("supervise", "refused", fields);
            return refused(format!("an image change is not possible here: {why}"));
        }
        self.file(
            Ask::Image {
                fragment: p.dockerfile_fragment,
            },
            &p.reason,
        )
    }

    #[tool(
        description = "The state of a request (pending, approved, applied, denied, failed) and what the person or the build said."
    )]
    fn request_status(&self, Parameters(p): Parameters<StatusParams>) -> CallToolResult {
        match self.shared.store.get(&p.id) {
            Ok(Some(request)) => text(request.status_text()),
            Ok(None) => refused(format!("no request {:?} in this bottle", p.id)),
            Err(err) => {
                tracing::warn!(%err, "reading a request");
                refused("the request could not be read; ask again")
            }
        }
    }
}

impl Supervisor {
    /// Validates and records a request, audits it, answers with its id.
    fn file(&self, ask: Ask, reason: &str) -> CallToolResult {
        let reason = reason.trim();
        if reason.is_empty() {
            return refused("give a reason: the person decides on it");
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return refused(format!(
                "the reason is longer than {MAX_REASON_CHARS} characters"
            ));
        }
        let ask = match ask.checked() {
            Ok(ask) => ask,
            Err(message) => return refused(message),
        };
        let request = match self.shared.store.create(&self.shared.identity, ask, reason) {
            Ok(request) => request,
            Err(err) => return refused(err.to_string()),
        };
        let mut fields = serde_json::Map::new();
        fields.insert("request".into(), request.id.clone().into());
        fields.insert("kind".into(), request.ask.kind().into());
        fields.insert("ask".into(), request.ask.summary().into());
        if let Some(rule) = request.ask.rule() {
            fields.insert("rule".into(), rule.into());
        }
        self.shared.audit.record("supervise", "requested", fields);
        text(format!(
            "request {} is pending: a person must approve it (they run `bottle approve {}`). \
             Nothing changes until then. Check with request_status(id: \"{}\").",
            request.id, request.id, request.id
        ))
    }
}

#[tool_handler(
    name = "bot-bottle-supervise",
    instructions = "The bottle's supervisor. Ask here for what the bottle does not allow yet (a host, a credential route, an image change); a person decides. show_policy says what is allowed now."
)]
impl rmcp::ServerHandler for Supervisor {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tools_served_are_the_ones_claude_code_may_call_unasked() {
        let mut served: Vec<String> = super::Supervisor::tool_router()
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        served.sort();
        let mut allowed: Vec<&str> = bottle_manifest::plan::SUPERVISE_TOOLS.to_vec();
        allowed.sort_unstable();
        assert_eq!(served, allowed);
    }
}
