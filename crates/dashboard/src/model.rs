//! What the dashboard shows: plain values the binary gathers (from the
//! state root, every backend and the audit logs) and the tests build by
//! hand. Everything an agent wrote arrives here already escaped.

use std::time::SystemTime;

/// Everything on screen at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub bottles: Vec<BottleView>,
    /// Pending requests across bottles, oldest first.
    pub requests: Vec<RequestView>,
    /// The selected bottle's latest gate decisions, oldest first.
    pub tail: Vec<TailLine>,
    /// The manifest's agents (for a new bottle), and why there are none.
    pub agents: Result<Vec<String>, String>,
    /// The backends a new bottle may run on, usable ones first.
    pub backends: Vec<String>,
    /// What could not be read (a backend that did not answer).
    pub problems: Vec<String>,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            bottles: Vec::new(),
            requests: Vec::new(),
            tail: Vec::new(),
            agents: Ok(Vec::new()),
            backends: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// One bottle's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BottleView {
    pub identity: String,
    pub agent: String,
    pub backend: String,
    /// How the agent is held (`runc`, `runsc`, `bubblewrap`).
    pub runtime: String,
    pub started: Option<SystemTime>,
    pub state: State,
    /// The gates' health (`healthy`, `starting`, `-`).
    pub health: String,
    /// Its pending requests.
    pub pending: usize,
    /// Its gate's latest refusal: `host: reason`.
    pub last_refusal: Option<String>,
}

/// A bottle's lifecycle state, as `bottle list` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Stopped,
    Preserved,
    Orphaned,
    Other,
}

impl State {
    pub fn parse(text: &str) -> State {
        match text {
            "running" => State::Running,
            "stopped" => State::Stopped,
            "preserved" => State::Preserved,
            "orphaned" => State::Orphaned,
            _ => State::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Preserved => "preserved",
            State::Orphaned => "orphaned",
            State::Other => "other",
        }
    }
}

/// A request waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    pub id: String,
    pub identity: String,
    /// `egress`, `route`, `image`.
    pub kind: String,
    /// What is asked, escaped.
    pub summary: String,
    /// The agent's reason, escaped.
    pub reason: String,
    /// When it was filed (seconds since the epoch): the inbox's order.
    pub created: u64,
    /// Everything an approval grants, escaped: shown before it is given
    /// (an image change's steps exactly as they will be built).
    pub detail: Vec<String>,
}

impl RequestView {
    /// `IDENTITY/r-…`: the id that names the bottle too.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.identity, self.id)
    }

    /// A route's approval names the secret's host variable.
    pub fn needs_token(&self) -> bool {
        self.kind == "route"
    }
}

/// One decision of a gate, for the tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLine {
    /// `HH:MM:SS` (UTC).
    pub time: String,
    pub kind: Kind,
    pub text: String,
}

/// What a gate decided, for the tail's filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Allowed,
    Refused,
    /// A credential was injected.
    Credential,
    /// A fetch or push through the git gate.
    Git,
    /// A request filed or decided.
    Request,
    /// The gate started or stopped.
    Gate,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Allowed => "allowed",
            Kind::Refused => "refused",
            Kind::Credential => "credential",
            Kind::Git => "git",
            Kind::Request => "request",
            Kind::Gate => "gate",
        }
    }
}

/// Which decisions the tail shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    #[default]
    All,
    Only(Kind),
}

impl Filter {
    /// The next filter: all, then each kind in turn.
    pub fn next(self) -> Filter {
        const ORDER: [Kind; 6] = [
            Kind::Refused,
            Kind::Allowed,
            Kind::Credential,
            Kind::Git,
            Kind::Request,
            Kind::Gate,
        ];
        match self {
            Filter::All => Filter::Only(ORDER[0]),
            Filter::Only(kind) => match ORDER.iter().position(|k| *k == kind) {
                Some(i) if i + 1 < ORDER.len() => Filter::Only(ORDER[i + 1]),
                _ => Filter::All,
            },
        }
    }

    pub fn admits(self, kind: Kind) -> bool {
        self == Filter::All || self == Filter::Only(kind)
    }

    pub fn label(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Only(kind) => kind.label(),
        }
    }
}

impl TailLine {
    /// One line of a bottle's `audit.jsonl`, or `None` for what the tail
    /// does not show. Values are shown escaped: they may come from the
    /// agent.
    pub fn parse(line: &str) -> Option<TailLine> {
        let record: serde_json::Value = serde_json::from_str(line).ok()?;
        let field = |name: &str| -> String {
            match record.get(name) {
                Some(serde_json::Value::String(s)) => escape(s),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => escape(&other.to_string()),
            }
        };
        let time = field("ts")
            .get(11..19)
            .map(str::to_owned)
            .unwrap_or_default();
        let role = field("role");
        let event = field("event");
        let target = {
            let host = field("host");
            let port = field("port");
            let path = field("path");
            let mut t = host;
            if !port.is_empty() && port != "443" && port != "80" {
                t.push(':');
                t.push_str(&port);
            }
            t.push_str(&path);
            t
        };
        let (kind, text) = match (role.as_str(), event.as_str()) {
            ("gate", e) => (Kind::Gate, format!("gate {e} ({})", field("serves"))),
            ("supervise", e) => (
                Kind::Request,
                match field("request") {
                    r if r.is_empty() => format!("{e} {}", field("ask")),
                    r => format!("{r} {e}: {}{}", field("ask"), field("rule")),
                },
            ),
            ("git" | "fetch", e) => {
                let refused = field("decision") == "deny" || !field("reason").is_empty();
                (
                    Kind::Git,
                    format!(
                        "{e} {} {}{}",
                        field("remote"),
                        if refused { "refused" } else { "accepted" },
                        match field("reason") {
                            r if r.is_empty() => String::new(),
                            r => format!(": {r}"),
                        }
                    )
                    .trim()
                    .to_owned(),
                )
            }
            ("egress", _) if field("decision") == "deny" => (
                Kind::Refused,
                format!("{} {target}: {}", field("method"), field("reason")),
            ),
            ("egress", _) if !field("injected").is_empty() => (
                Kind::Credential,
                format!(
                    "{} {target} {} (credential in {})",
                    field("method"),
                    field("status"),
                    field("injected")
                ),
            ),
            ("egress", _) => (
                Kind::Allowed,
                format!("{} {target} {}", field("method"), field("status"))
                    .trim()
                    .to_owned(),
            ),
            _ => return None,
        };
        Some(TailLine { time, kind, text })
    }
}

/// `text` with control characters escaped: a terminal draws it as it is.
pub fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `started` as an age: `45s`, `12m`, `3h`, `2d`.
pub fn age(started: Option<SystemTime>, now: SystemTime) -> String {
    let Some(secs) = started
        .and_then(|s| now.duration_since(s).ok())
        .map(|d| d.as_secs())
    else {
        return "-".to_owned();
    };
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_become_decisions_and_agent_text_is_escaped() {
        let refused = TailLine::parse(
            r#"{"decision":"deny","event":"connect","host":"example.com","method":"CONNECT","port":443,"reason":"host example.com is not in the allowlist\u001b[2J","role":"egress","status":403,"ts":"2026-12-06T21:38:57.723Z"}"#,
        )
        .unwrap_or_else(|| panic!("parsed"));
        assert_eq!(refused.kind, Kind::Refused);
        assert_eq!(refused.time, "21:38:57");
        assert!(
            refused
                .text
                .starts_with("CONNECT example.com: host example.com")
        );
        assert!(!refused.text.contains('\u{1b}'), "{}", refused.text);
        let injected = TailLine::parse(
            r#"{"decision":"allow","event":"request","host":"api.test","method":"POST","path":"/v1/messages","injected":"authorization","role":"egress","status":200,"ts":"2026-12-06T21:39:00.000Z"}"#,
        );
        assert_eq!(injected.map(|l| l.kind), Some(Kind::Credential));
        assert!(TailLine::parse("not json").is_none());
        assert!(TailLine::parse(r#"{"role":"other","event":"x"}"#).is_none());
    }

    #[test]
    fn the_filter_cycles_through_every_kind_and_back() {
        let mut f = Filter::All;
        let mut seen = Vec::new();
        for _ in 0..7 {
            f = f.next();
            seen.push(f.label());
        }
        assert_eq!(
            seen,
            [
                "refused",
                "allowed",
                "credential",
                "git",
                "request",
                "gate",
                "all"
            ]
        );
        assert!(Filter::Only(Kind::Git).admits(Kind::Git));
        assert!(!Filter::Only(Kind::Git).admits(Kind::Refused));
    }
}
