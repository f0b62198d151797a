//! Credential routes: the real secrets, which only the gate holds.
//!
//! On a request to a route's host the gate drops whatever the agent sent
//! in the route's header and injects the real credential. Everywhere else
//! a real secret, in any encoding [`super::leak`] knows, in the method,
//! URL, host, a header's name or value, or the body, is a leak and the
//! request is refused. Every response is scrubbed of the secrets, so an
//! upstream that echoes a credential cannot hand it to the agent.

use std::fmt;

use bottle_manifest::host::Host;
use http::HeaderName;
use zeroize::Zeroizing;

use super::leak::Detector;

/// A secret value. `Debug` and `Display` print `***`, so it cannot reach a
/// log line or an error message by accident; its memory is overwritten
/// when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The value, for the one place that needs it: the injected header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

pub use bottle_contract::config::PathRule;

/// The one port a credential route's secret is sent to.
pub const ROUTE_PORT: u16 = 443;

/// One credential route, secret included.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: Host,
    pub header: HeaderName,
    /// `Bearer`, or empty for the bare value.
    pub scheme: String,
    pub secret: Secret,
    /// The agent's placeholder for the secret, for a role's route: see
    /// [`Route::replaces`].
    pub placeholder: Option<String>,
    /// Where on the host the credential may be used; empty: everywhere.
    pub paths: Vec<PathRule>,
}

impl Route {
    /// A route for the whole host that replaces its header whatever the
    /// agent put there.
    pub fn whole_host(host: Host, header: HeaderName, scheme: String, secret: Secret) -> Route {
        Route {
            host,
            header,
            scheme,
            secret,
            placeholder: None,
            paths: Vec::new(),
        }
    }

    /// Whether `method` on `path` (its query included) may be sent to the
    /// route's host, or why not. A scoped route admits only its paths,
    /// and only in a plain spelling: an encoded dot, slash or backslash,
    /// a dot segment or an empty one could name another path to the
    /// server than the one matched here, so it is refused outright.
    pub fn admits(&self, method: &str, path: &str) -> Result<(), String> {
        if self.paths.is_empty() {
            return Ok(());
        }
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let lower = path.to_ascii_lowercase();
        let odd = !path.starts_with('/')
            || path.contains('\\')
            || ["%2e", "%2f", "%5c", "%00"]
                .iter()
                .any(|e| lower.contains(e))
            || path[1..]
                .split('/')
                .enumerate()
                .any(|(i, seg)| seg == "." || seg == ".." || (seg.is_empty() && i > 0));
        if odd {
            return Err(format!(
                "{method} {path}: a path spelled with encoded or dot segments is not sent to {} (the bottle's credential there is scoped by path)",
                self.host
            ));
        }
        if self.paths.iter().any(|rule| rule.permits(method, path)) {
            Ok(())
        } else {
            Err(format!(
                "{method} {path}: the bottle's credential for {} serves the model API only, and this request is not one of its paths (Remote Control's need `bottle start --remote-control`)",
                self.host
            ))
        }
    }

    /// Whether the gate puts the secret into a request with `headers`. A
    /// route without a placeholder always does. A role's route does when
    /// the header is missing or carries the placeholder; a value of the
    /// agent's own — a token the server issued to it, such as Remote
    /// Control's session secrets — passes as written.
    pub fn replaces(&self, headers: &http::HeaderMap) -> bool {
        let Some(placeholder) = &self.placeholder else {
            return true;
        };
        let mut values = headers.get_all(&self.header).iter().peekable();
        if values.peek().is_none() {
            return true;
        }
        values.all(|value| {
            let value = value.to_str().unwrap_or_default().trim();
            let token = match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case(&self.scheme) => token.trim(),
                _ => value,
            };
            token == placeholder
        })
    }

    /// The header value to inject.
    pub fn header_value(&self) -> Zeroizing<String> {
        if self.scheme.is_empty() {
            Zeroizing::new(self.secret.expose().to_owned())
        } else {
            Zeroizing::new(format!("{} {}", self.scheme, self.secret.expose()))
        }
    }
}

/// A secret found where it must not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The host of the route the secret belongs to.
    pub route_host: String,
    /// How it was written: `verbatim`, `base64`, `url-encoded hex`, …
    pub encoding: String,
    /// Where: `url`, `header NAME`, `body`, …
    pub place: String,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request carries the credential of the route to {} ({}, in the {}); it is only ever sent to {}",
            self.route_host, self.encoding, self.place, self.route_host
        )
    }
}

/// A route's earlier secret, replaced by a refreshed one: never sent, but
/// still watched for (it may be valid until it expires).
#[derive(Debug, Clone)]
pub struct Retired {
    pub host: Host,
    pub secret: Secret,
}

/// How many replaced secrets a gate keeps watching for per route, newest
/// first.
pub const RETIRED_KEPT: usize = 8;

/// Every route, and one detector for every encoding of every secret,
/// retired ones included.
pub struct Credentials {
    routes: Vec<Route>,
    retired: Vec<Retired>,
    detector: Detector,
}

impl Credentials {
    /// The routes and their leak check, or why the check could not be
    /// compiled (then no route is held at all: fail closed).
    pub fn new(routes: Vec<Route>) -> Result<Credentials, String> {
        Credentials::with_retired(routes, Vec::new())
    }

    /// [`Credentials::new`], also watching for `retired` secrets (newest
    /// first: the newest [`RETIRED_KEPT`] of each host's).
    pub fn with_retired(routes: Vec<Route>, retired: Vec<Retired>) -> Result<Credentials, String> {
        let mut per_host: std::collections::HashMap<String, usize> = Default::default();
        let retired: Vec<Retired> = retired
            .into_iter()
            .filter(|r| {
                let seen = per_host.entry(r.host.to_string()).or_default();
                *seen += 1;
                *seen <= RETIRED_KEPT
            })
            .collect();
        let secrets: Vec<&[u8]> = routes
            .iter()
            .map(|r| &r.secret)
            .chain(retired.iter().map(|r| &r.secret))
            .map(|s| s.expose().as_bytes())
            .collect();
        let detector = Detector::new(&secrets)?;
        Ok(Credentials {
            routes,
            retired,
            detector,
        })
    }

    /// No routes, nothing to watch for.
    pub fn none() -> Credentials {
        Credentials {
            routes: Vec::new(),
            retired: Vec::new(),
            detector: Detector::empty(),
        }
    }

    /// The secrets refreshes replaced, newest first.
    pub fn retired(&self) -> &[Retired] {
        &self.retired
    }

    /// The host the `index`th secret the detector watches belongs to.
    fn host_of(&self, index: usize) -> &Host {
        match self.routes.get(index) {
            Some(route) => &route.host,
            None => &self.retired[index - self.routes.len()].host,
        }
    }

    /// Every route.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// No routes at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for HTTPS requests to `host` on `port`, if any. A route
    /// is bound to its host's port 443 (the port validation allows it
    /// on): another port of the same host may be another service, and
    /// gets no credential.
    pub fn route_for(&self, host: &Host, port: u16) -> Option<&Route> {
        if port != ROUTE_PORT {
            return None;
        }
        self.routes.iter().find(|r| &r.host == host)
    }

    /// A secret that must not go to `host`, found in `bytes`.
    pub fn find_leak(&self, bytes: &[u8], host: &Host, place: &str) -> Option<Leak> {
        if self.is_empty() {
            return None;
        }
        self.leak_among(self.detector.hits(bytes), host, place)
    }

    /// [`Credentials::find_leak`] and [`Credentials::hold_back`] of a
    /// streamed body's bytes, read once for both.
    pub fn find_leak_and_hold(
        &self,
        bytes: &[u8],
        host: &Host,
        place: &str,
    ) -> (Option<Leak>, usize) {
        if self.is_empty() {
            return (None, 0);
        }
        let (hits, hold) = self.detector.hits_and_hold(bytes);
        debug_assert!(self.detector.pending(bytes) <= hold);
        (self.leak_among(hits, host, place), hold)
    }

    /// [`Credentials::scrub`] and then [`Credentials::hold_back`] of a
    /// streamed body's bytes. The bytes are read once unless something
    /// was overwritten (rare: then what is held is judged again, on the
    /// bytes as they now are).
    pub fn scrub_and_hold(&self, bytes: &mut [u8]) -> usize {
        if self.is_empty() {
            return 0;
        }
        let (hits, hold) = self.detector.hits_and_hold(bytes);
        if !super::leak::overwrite(bytes, &hits) {
            debug_assert!(self.detector.pending(bytes) <= hold);
            return hold;
        }
        self.hold_back(bytes)
    }

    /// [`Credentials::find_leak`] in text that is case-insensitive itself
    /// and arrives folded (a header name, a host name): a secret matches
    /// in any case.
    pub fn find_leak_any_case(&self, bytes: &[u8], host: &Host, place: &str) -> Option<Leak> {
        if self.is_empty() {
            return None;
        }
        self.leak_among(self.detector.hits_any_case(bytes), host, place)
    }

    fn leak_among(&self, hits: Vec<super::leak::Hit>, host: &Host, place: &str) -> Option<Leak> {
        hits.into_iter()
            .find(|hit| self.host_of(hit.secret) != host)
            .map(|hit| Leak {
                route_host: self.host_of(hit.secret).to_string(),
                encoding: hit.encoding,
                place: place.to_owned(),
            })
    }

    /// A secret in a host name (a DNS label is a channel too): searched in
    /// any case, as written and with its dots removed, since a long
    /// encoding must be split into labels.
    pub fn find_leak_in_host(&self, name: &str, host: &Host) -> Option<Leak> {
        self.find_leak_any_case(name.as_bytes(), host, "host name")
            .or_else(|| {
                let joined: Vec<u8> = name.bytes().filter(|&b| b != b'.').collect();
                self.find_leak_any_case(&joined, host, "host name")
            })
    }

    /// Overwrites every secret in `bytes` with `x`, keeping the length.
    /// Returns whether anything was replaced.
    pub fn scrub(&self, bytes: &mut [u8]) -> bool {
        !self.is_empty() && self.detector.scrub(bytes)
    }

    /// How many bytes at the end of `bytes` a stream holds back until more
    /// arrive (see [`super::leak::Detector::hold_back`]: enough for any
    /// encoded secret in any view, never telling whether the bytes begin
    /// one).
    pub fn hold_back(&self, bytes: &[u8]) -> usize {
        if self.is_empty() {
            return 0;
        }
        let hold = self.detector.hold_back(bytes);
        debug_assert!(self.detector.pending(bytes) <= hold);
        hold
    }

    /// Whether `bytes` hold a secret in any case (for names that arrive
    /// folded: header names).
    pub fn holds_any_case(&self, bytes: &[u8]) -> bool {
        !self.is_empty() && !self.detector.hits_any_case(bytes).is_empty()
    }

    /// Length of the longest encoded secret searched for.
    pub fn longest(&self) -> usize {
        self.detector.longest()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-T0ken/with+chars=";

    fn creds() -> Credentials {
        Credentials::new(vec![Route::whole_host(
            Host::Name("api.example.com".into()),
            HeaderName::from_static("authorization"),
            "Bearer".into(),
            Secret::new(SECRET.into()),
        )])
        .unwrap()
    }

    fn other() -> Host {
        Host::Name("allowed.test".into())
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
    }

    fn model_route() -> Route {
        Route {
            placeholder: Some("sk-ant-oat01-placeholder".into()),
            paths: vec![PathRule::any("/v1/messages"), PathRule::read("/v1/models")],
            ..Route::whole_host(
                Host::Name("api.example.com".into()),
                HeaderName::from_static("authorization"),
                "Bearer".into(),
                Secret::new(SECRET.into()),
            )
        }
    }

    #[test]
    fn a_scoped_route_admits_its_paths_only() {
        let r = model_route();
        for (method, path) in [
            ("POST", "/v1/messages"),
            ("POST", "/v1/messages?beta=true"),
            ("POST", "/v1/messages/count_tokens"),
            ("GET", "/v1/models"),
            ("GET", "/v1/models/claude-x"),
        ] {
            assert!(r.admits(method, path).is_ok(), "{method} {path}");
        }
        for (method, path) in [
            ("POST", "/v1/models"),
            ("POST", "/v1/messagesX"),
            ("POST", "/api/oauth/claude_cli/create_api_key"),
            ("POST", "/v1/code/triggers"),
            ("POST", "/v1/messages/../code/triggers"),
            ("POST", "/v1/messages/%2e%2e/code/triggers"),
            ("POST", "/v1/messages%2F..%2Fcode"),
            ("POST", "/v1/messages/.//x"),
            ("POST", "/v1//messages"),
            ("POST", "/v1/messages\\..\\code"),
            ("POST", "*"),
        ] {
            assert!(r.admits(method, path).is_err(), "{method} {path}");
        }
        // A route with no paths is the whole host.
        assert!(creds().routes()[0].admits("DELETE", "/anything").is_ok());
    }

    #[test]
    fn a_role_route_replaces_its_placeholder_and_passes_a_token_of_the_agents() {
        let r = model_route();
        let headers = |value: Option<&str>| {
            let mut h = http::HeaderMap::new();
            if let Some(v) = value {
                h.insert("authorization", v.parse().unwrap());
            }
            h
        };
        assert!(r.replaces(&headers(None)));
        assert!(r.replaces(&headers(Some("Bearer sk-ant-oat01-placeholder"))));
        assert!(r.replaces(&headers(Some("bearer  sk-ant-oat01-placeholder"))));
        assert!(!r.replaces(&headers(Some("Bearer env-secret-from-the-server"))));
        // Without a placeholder, the header is always the route's.
        assert!(creds().routes()[0].replaces(&headers(Some("Bearer anything"))));
    }

    #[test]
    fn a_route_holds_for_port_443_only() {
        let c = creds();
        let host = Host::Name("api.example.com".into());
        assert!(c.route_for(&host, 443).is_some());
        assert!(c.route_for(&host, 8443).is_none());
        assert!(c.route_for(&other(), 443).is_none());
    }

    #[test]
    fn the_route_host_may_receive_its_own_secret() {
        let c = creds();
        assert_eq!(
            c.find_leak(
                SECRET.as_bytes(),
                &Host::Name("api.example.com".into()),
                "body"
            ),
            None
        );
        assert!(c.find_leak(SECRET.as_bytes(), &other(), "body").is_some());
    }

    #[test]
    fn a_secret_in_a_host_name_is_found_across_labels() {
        let c = creds();
        let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        let (a, b) = hex.split_at(30);
        let name = format!("{a}.{b}.allowed.test");
        let leak = c.find_leak_in_host(&name, &other());
        assert_eq!(leak.map(|l| l.encoding), Some("hex".to_owned()));
        // Names arrive lowercased: the secret matches in any case there.
        let c = Credentials::new(vec![Route::whole_host(
            Host::Name("api.example.com".into()),
            HeaderName::from_static("authorization"),
            "Bearer".into(),
            Secret::new("Tok3nWithCaps-AbcXyz".into()),
        )])
        .unwrap();
        let leak = c.find_leak_in_host("tok3nwithcaps-abcxyz.allowed.test", &other());
        assert_eq!(leak.map(|l| l.encoding), Some("verbatim".to_owned()));
        assert!(
            c.find_leak("tok3nwithcaps-abcxyz".as_bytes(), &other(), "body")
                .is_none()
        );
    }

    #[test]
    fn scrubbing_keeps_the_length() {
        let c = creds();
        let mut body = format!("{{\"authorization\": \"Bearer {SECRET}\"}}").into_bytes();
        let len = body.len();
        assert!(c.scrub(&mut body));
        assert_eq!(body.len(), len);
        assert!(!String::from_utf8_lossy(&body).contains(SECRET));
    }
}
