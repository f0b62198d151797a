//! The requests an agent makes through the supervise tools, as files: one
//! JSON document per request in the bottle's `supervise/requests/`, a
//! directory the gate and the person's `bottle` commands share and the
//! agent never sees. The gate creates a request (pending); `bottle approve`
//! or `bottle deny` decides it. The file is the truth both sides read, so a
//! decision taken while the gate is down is still the answer the agent
//! gets when it asks again.
//!
//! Everything in a request came from the agent and is hostile until shown
//! otherwise: [`Ask::checked`] validates and normalises it, limits bound
//! every field, and [`printable`] makes it safe to print on a terminal.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bottle_manifest::host::{Host, HostPattern, HostRule, normalize_host};
use serde::{Deserialize, Serialize};

/// Longest `reason` an agent may give.
pub const MAX_REASON_CHARS: usize = 2000;
/// Largest Dockerfile fragment.
pub const MAX_FRAGMENT_BYTES: usize = bottle_manifest::fragment::MAX_FRAGMENT_BYTES;
/// Most requests one bottle may have waiting: the person's queue is not
/// the agent's to flood.
pub const MAX_PENDING: usize = 16;
/// Instructions a fragment may use. `FROM` (a new stage), `COPY`/`ADD`
/// (files from outside the image), `ONBUILD`, `ENTRYPOINT`, `CMD`,
/// `VOLUME` and the like would change what the bottle *is* rather than
/// what it has installed.
pub const FRAGMENT_INSTRUCTIONS: &[&str] = bottle_manifest::fragment::INSTRUCTIONS;

/// What the agent asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    /// Reach a host (on `port`, or the default ports).
    Egress { host: String, port: Option<u16> },
    /// A credential route to `host`, injected as `header`. The person
    /// names the secret (`--token-ref`) when approving.
    Route { host: String, header: String },
    /// A change of the bottle's image: Dockerfile instructions run on top
    /// of the image it has now.
    Image { fragment: String },
}

impl Ask {
    /// The ask validated and normalised (hosts lowercased and
    /// IDNA-encoded), or a message for the agent saying what is wrong.
    pub fn checked(self) -> Result<Ask, String> {
        match self {
            Ask::Egress { host, port } => {
                if port == Some(0) {
                    return Err("port 0 is not a port".to_owned());
                }
                let rule = HostRule::parse(&rule_text(&host, port)).map_err(|e| e.to_string())?;
                let host = match rule.host {
                    HostPattern::Exact(name) => name,
                    HostPattern::Suffix(suffix) => format!("*.{suffix}"),
                    HostPattern::Ip(ip) => ip.to_string(),
                };
                Ok(Ask::Egress {
                    host,
                    port: rule.port,
                })
            }
            Ask::Route { host, header } => {
                let host = match normalize_host(&host).map_err(|e| e.to_string())? {
                    Host::Name(name) => name,
                    Host::Ip(_) => {
                        return Err(format!(
                            "{host} is an IP address: a credential route names a host"
                        ));
                    }
                };
                let header = header.to_ascii_lowercase();
                if !bottle_manifest::validate::is_header_name(&header) {
                    return Err(format!(
                        "{header:?} is not a header name that may carry a credential"
                    ));
                }
                Ok(Ask::Route { host, header })
            }
            Ask::Image { fragment } => {
                check_fragment(&fragment)?;
                Ok(Ask::Image { fragment })
            }
        }
    }

    /// The allow rule an approved egress or route ask adds.
    pub fn rule(&self) -> Option<String> {
        match self {
            Ask::Egress { host, port } => Some(rule_text(host, *port)),
            Ask::Route { host, .. } => Some(host.clone()),
            Ask::Image { .. } => None,
        }
    }

    /// One line saying what is asked (the fragment only by its size).
    pub fn summary(&self) -> String {
        match self {
            Ask::Egress { host, port } => format!("egress {}", rule_text(host, *port)),
            Ask::Route { host, header } => format!("route {host} (header {header})"),
            Ask::Image { fragment } => format!(
                "image change ({} line{})",
                fragment.lines().count(),
                if fragment.lines().count() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Ask::Egress { .. } => "egress",
            Ask::Route { .. } => "route",
            Ask::Image { .. } => "image",
        }
    }
}

/// `host` or `host:port` (IPv6 addresses in brackets).
fn rule_text(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) if host.contains(':') && !host.starts_with('[') => format!("[{host}]:{port}"),
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Checks a Dockerfile fragment: it must parse completely
/// ([`bottle_manifest::fragment::parse`]); the message says what does not.
pub fn check_fragment(fragment: &str) -> Result<(), String> {
    bottle_manifest::fragment::parse(fragment)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a person.
    Pending,
    /// Approved; being applied (an image build) or applied when the bottle
    /// next runs.
    Approved,
    /// Approved and in force.
    Applied,
    Denied,
    /// Approved, but applying it failed (an image that did not build).
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Applied => "applied",
            State::Denied => "denied",
            State::Failed => "failed",
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    /// The bottle that asked.
    pub identity: String,
    #[serde(flatten)]
    pub ask: Ask,
    pub reason: String,
    pub state: State,
    /// Seconds since the epoch.
    pub created: u64,
    /// The host user who decided.
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decided: Option<u64>,
    /// What the agent is told: why it was denied, what was applied, the
    /// build log of an image that failed.
    #[serde(default)]
    pub outcome: Option<String>,
}

impl Request {
    /// What `request_status` answers: the state, then the outcome.
    pub fn status_text(&self) -> String {
        let mut text = format!(
            "request {} ({}): {}",
            self.id,
            self.ask.summary(),
            self.state.as_str()
        );
        if let Some(by) = &self.decided_by {
            text.push_str(&format!(" by {by}"));
        }
        if let Some(outcome) = &self.outcome {
            text.push_str(&format!("\n{outcome}"));
        }
        if self.state == State::Pending {
            text.push_str("\nA person has not decided yet; ask again later.");
        }
        text
    }
}

/// Errors of the request store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a request: {message}", .path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Refused(String),
}

/// The requests of one bottle.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Whether `id` has the shape of a request id (`r-` and six hex digits):
/// anything else never reaches a path.
pub fn is_request_id(id: &str) -> bool {
    id.strip_prefix("r-").is_some_and(|hex| {
        hex.len() == 6
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

impl Store {
    /// The store in `dir` (the bottle's `supervise/requests`).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Records a new pending request.
    pub fn create(&self, identity: &str, ask: Ask, reason: &str) -> Result<Request, StoreError> {
        let pending = self
            .list()?
            .iter()
            .filter(|r| r.state == State::Pending)
            .count();
        if pending >= MAX_PENDING {
            return Err(StoreError::Refused(format!(
                "{pending} requests are already waiting for a person; wait for them to be decided"
            )));
        }
        let id = loop {
            let id = format!("r-{:06x}", rand_u24());
            if !self.path(&id).exists() {
                break id;
            }
        };
        let request = Request {
            id,
            identity: identity.to_owned(),
            ask,
            reason: reason.to_owned(),
            state: State::Pending,
            created: now(),
            decided_by: None,
            decided: None,
            outcome: None,
        };
        self.save(&request)?;
        Ok(request)
    }

    /// The request `id`, if this bottle has it.
    pub fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        if !is_request_id(id) {
            return Ok(None);
        }
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Every request, oldest first.
    pub fn list(&self) -> Result<Vec<Request>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut requests = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(request) = self.get(id)? {
                requests.push(request);
            }
        }
        requests.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(requests)
    }

    /// Writes `request` atomically.
    pub fn save(&self, request: &Request) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.path(&request.id);
        crate::files::write_json_atomic(&path, request)
            .map_err(|source| StoreError::Io { path, source })
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rand_u24() -> u32 {
    // The id only has to be unique in the bottle (checked above) and not
    // guessable across bottles; the standard library's random hasher keys
    // are enough for that.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() & 0xff_ffff) as u32
}

pub use bottle_manifest::text::printable;

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn egress_asks_are_normalised() {
        let ask = Ask::Egress {
            host: "Forbidden.TEST.".into(),
            port: None,
        }
        .checked()
        .unwrap();
        assert_eq!(
            ask,
            Ask::Egress {
                host: "forbidden.test".into(),
                port: None
            }
        );
        assert_eq!(ask.rule().unwrap(), "forbidden.test");
        let ask = Ask::Egress {
            host: "api.example.com".into(),
            port: Some(8443),
        }
        .checked()
        .unwrap();
        assert_eq!(ask.rule().unwrap(), "api.example.com:8443");
        assert!(
            Ask::Egress {
                host: "*.com".into(),
                port: None
            }
            .checked()
            .is_err()
        );
        assert!(
            Ask::Egress {
                host: "*".into(),
                port: None
            }
            .checked()
            .is_err()
        );
        assert!(
            Ask::Egress {
                host: "a b".into(),
                port: None
            }
            .checked()
            .is_err()
        );
        assert!(
            Ask::Egress {
                host: "evil.test:80".into(),
                port: Some(443)
            }
            .checked()
            .is_err()
        );
    }

    #[test]
    fn route_asks_need_a_credential_header() {
        assert!(
            Ask::Route {
                host: "x.test".into(),
                header: "Host".into()
            }
            .checked()
            .is_err()
        );
        assert!(
            Ask::Route {
                host: "1.2.3.4".into(),
                header: "authorization".into()
            }
            .checked()
            .is_err()
        );
        let ask = Ask::Route {
            host: "X.test".into(),
            header: "X-Api-Key".into(),
        }
        .checked()
        .unwrap();
        assert_eq!(
            ask,
            Ask::Route {
                host: "x.test".into(),
                header: "x-api-key".into()
            }
        );
    }

    #[test]
    fn fragments_are_limited_to_plain_instructions() {
        assert!(check_fragment("RUN apt-get install -y jq").is_ok());
        assert!(
            check_fragment("# tools\nRUN apt-get update \\\n  && apt-get install -y jq\nENV A=1\n")
                .is_ok()
        );
        for bad in [
            "FROM debian",
            "RUN true\nFROM scratch",
            "COPY --from=evil / /",
            "ADD http://x/y /y",
            "ONBUILD RUN true",
            "ENTRYPOINT [\"sh\"]",
            "RUN echo \\",
            "",
            "# nothing",
            "RUN <<EOF\nx",
            "RUN true\r\nFROM x",
        ] {
            assert!(check_fragment(bad).is_err(), "{bad:?} passed");
        }
        assert!(check_fragment(&format!("RUN {}", "x".repeat(MAX_FRAGMENT_BYTES))).is_err());
    }

    #[test]
    fn terminal_escapes_are_shown_not_run() {
        assert_eq!(printable("ok\x1b[2Jgone", false), "ok\\u{1b}[2Jgone");
        assert_eq!(printable("a\nb", false), "a\\u{a}b");
        assert_eq!(printable("a\nb", true), "a\nb");
        assert_eq!(printable("x\u{202e}y", true), "x\\u{202e}y");
    }

    #[test]
    fn ids_are_checked_before_they_name_a_file() {
        assert!(is_request_id("r-0a1b2c"));
        for bad in ["r-../../x", "r-0A1B2C", "r-0a1b2", "x-0a1b2c", "r-0a1b2c/"] {
            assert!(!is_request_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_store_keeps_requests_and_caps_pending_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("requests"));
        let ask = Ask::Egress {
            host: "a.test".into(),
            port: None,
        };
        let first = store.create("AGENT-x", ask.clone(), "why").unwrap();
        assert_eq!(store.get(&first.id).unwrap().unwrap(), first);
        for _ in 1..MAX_PENDING {
            store.create("AGENT-x", ask.clone(), "why").unwrap();
        }
        assert!(matches!(
            store.create("AGENT-x", ask, "why"),
            Err(StoreError::Refused(_))
        ));
        assert_eq!(store.list().unwrap().len(), MAX_PENDING);
    }
}
