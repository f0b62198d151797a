//! What the plan knows of Claude Code's API: the requests its credential
//! serves, and what Remote Control needs in the bottle.

use serde::{Deserialize, Serialize};

use super::{ANTHROPIC_API_HOST, WORKDIR};

/// Requests a route's credential may serve: the path, or any path below
/// it (by whole segments, the query aside), with one of `methods` (any
/// method when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    pub prefix: String,
}

impl PathRule {
    /// Any method on `prefix` and below.
    pub fn any(prefix: &str) -> PathRule {
        PathRule {
            methods: Vec::new(),
            prefix: prefix.to_owned(),
        }
    }

    /// `GET` (and `HEAD`) of `prefix` and below.
    pub fn read(prefix: &str) -> PathRule {
        PathRule {
            methods: vec!["GET".to_owned(), "HEAD".to_owned()],
            prefix: prefix.to_owned(),
        }
    }

    /// Whether `method` on `path` (a normalised path, no query) is one of
    /// these requests.
    pub fn permits(&self, method: &str, path: &str) -> bool {
        let below = path == self.prefix
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        below && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }

    /// `GET /v1/models`, `any /v1/messages`.
    pub fn describe(&self) -> String {
        if self.methods.is_empty() {
            format!("any {}", self.prefix)
        } else {
            format!("{} {}", self.methods[0], self.prefix)
        }
    }
}

/// What the credential of a route to Anthropic's own API serves: the
/// model, and what Claude Code reads of the account as it starts. The
/// same token on the same host could do much more — mint an API key,
/// start cloud sessions and scheduled agents outside the bottle, connect
/// repositories — so the gate refuses every other request to that host.
pub fn model_api_paths() -> Vec<PathRule> {
    vec![
        PathRule::any("/v1/messages"),
        PathRule::read("/v1/models"),
        PathRule::read("/api/oauth/profile"),
        PathRule::read("/api/oauth/claude_cli/roles"),
        PathRule::read("/api/claude_cli/bootstrap"),
        PathRule::read("/api/claude_code/policy_limits"),
        PathRule::read("/api/claude_code/settings"),
    ]
}

/// What Remote Control adds, with `--remote-control` only: the bridge
/// environment the session registers and polls for work, the session
/// itself and its events, and the feature flags it checks.
pub fn remote_control_paths() -> Vec<PathRule> {
    vec![
        PathRule::any("/v1/environments"),
        PathRule::any("/v1/code/sessions"),
        PathRule::any("/v1/code/environments"),
        PathRule::any("/v1/sessions"),
        PathRule::any("/api/eval"),
    ]
}

/// The person's claude.ai sign-in on the host, as much of it as Remote
/// Control must find in the bottle: which account and organization, and
/// the kind of plan. Never a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaudeAccount {
    pub account_uuid: String,
    pub organization_uuid: String,
    /// `pro`, `max`, `team` or `enterprise`.
    pub subscription_type: String,
}

/// Plans Remote Control's sign-in accepts.
pub const REMOTE_CONTROL_PLANS: &[&str] = &["pro", "max", "team", "enterprise"];

/// Remote Control in the bottle: the session's name, and what is merged
/// into the agent's home before it starts (placeholders and identifiers
/// only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteControlPlan {
    /// The name the session has at claude.ai/code (the bottle's identity).
    pub name: String,
    pub account: ClaudeAccount,
}

/// `expiresAt` of the placeholder sign-in: 2100-01-01, so the client never
/// tries to refresh a token it does not hold (the host keeps the real one
/// fresh; the gate sends it).
const NEVER_EXPIRES_MS: u64 = 4_102_444_800_000;

impl RemoteControlPlan {
    /// `~/.claude/.credentials.json`'s sign-in, with placeholders for both
    /// tokens: Remote Control asks for a sign-in of the full scope, which
    /// a long-lived token in the environment does not claim.
    pub fn credentials_json(&self, access: &str, refresh: &str) -> serde_json::Value {
        serde_json::json!({
            "claudeAiOauth": {
                "accessToken": access,
                "refreshToken": refresh,
                "expiresAt": NEVER_EXPIRES_MS,
                "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
                "subscriptionType": self.account.subscription_type,
            }
        })
    }

    /// `~/.claude.json`'s keys: the account, Remote Control's own consent
    /// (the person gave it with `--remote-control`) and trust in the
    /// workspace (the bottle is the boundary).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "oauthAccount": {
                "accountUuid": self.account.account_uuid,
                "organizationUuid": self.account.organization_uuid,
            },
            "remoteDialogSeen": true,
            "projects": { WORKDIR: { "hasTrustDialogAccepted": true } },
        })
    }
}

/// Whether `host` is Anthropic's own API (Remote Control talks to no
/// other).
pub fn is_anthropic_api(host: &str) -> bool {
    host.trim_end_matches('.')
        .eq_ignore_ascii_case(ANTHROPIC_API_HOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules_match_whole_segments_and_their_methods() {
        let rule = PathRule::read("/v1/models");
        assert!(rule.permits("GET", "/v1/models"));
        assert!(rule.permits("GET", "/v1/models/x"));
        assert!(!rule.permits("GET", "/v1/modelsx"));
        assert!(!rule.permits("POST", "/v1/models"));
        assert!(PathRule::any("/v1/messages").permits("DELETE", "/v1/messages/batches"));
    }

    #[test]
    fn the_model_api_leaves_out_what_escapes_the_bottle() {
        let model = model_api_paths();
        for (method, path) in [
            ("POST", "/api/oauth/claude_cli/create_api_key"),
            ("POST", "/v1/code/triggers"),
            ("POST", "/v1/code/sessions"),
            ("POST", "/v1/environments/bridge"),
            ("POST", "/v1/code/github/import-token"),
        ] {
            assert!(!model.iter().any(|r| r.permits(method, path)), "{path}");
        }
        let rc = remote_control_paths();
        assert!(
            rc.iter()
                .any(|r| r.permits("POST", "/v1/environments/bridge"))
        );
        assert!(
            !rc.iter()
                .any(|r| r.permits("POST", "/api/oauth/claude_cli/create_api_key"))
        );
        assert!(!rc.iter().any(|r| r.permits("POST", "/v1/code/triggers")));
    }
}
