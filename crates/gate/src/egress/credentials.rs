//! Credential routes: the real secrets, which only the gate holds.
//!
//! On a request to a route's host the gate drops whatever the agent sent
//! in the route's header and injects the real credential. Everywhere else
//! a real secret — verbatim, base64 (either alphabet, any alignment),
//! hex or URL-encoded, in the URL, a header or the body — is a leak and the
//! request is refused. Responses from a route's host are scrubbed of the
//! secret, so an upstream that echoes the credential back cannot hand it
//! to the agent.

use std::fmt;

use aho_corasick::AhoCorasick;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bottle_manifest::host::Host;
use http::HeaderName;

/// Shortest encoded form worth searching for: shorter ones match by chance.
const MIN_PATTERN_LEN: usize = 8;

/// A secret value. `Debug` and `Display` print `***`, so it cannot reach a
/// log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
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

/// One credential route, secret included.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: Host,
    pub header: HeaderName,
    /// `Bearer`, or empty for the bare value.
    pub scheme: String,
    pub secret: Secret,
}

impl Route {
    /// The header value to inject.
    pub fn header_value(&self) -> String {
        if self.scheme.is_empty() {
            self.secret.expose().to_owned()
        } else {
            format!("{} {}", self.scheme, self.secret.expose())
        }
    }
}

/// A secret found where it must not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The host of the route the secret belongs to.
    pub route_host: String,
    /// How it was written: `verbatim`, `base64`, `hex`, `url-encoded`.
    pub encoding: &'static str,
    /// Where: `url`, `header NAME`, `body`.
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

/// Every route, and one automaton finding every encoding of every secret.
pub struct Credentials {
    routes: Vec<Route>,
    finder: Option<AhoCorasick>,
    /// For each pattern: (route index, encoding).
    patterns: Vec<(usize, &'static str)>,
    longest: usize,
}

impl Credentials {
    pub fn new(routes: Vec<Route>) -> Credentials {
        let mut texts: Vec<Vec<u8>> = Vec::new();
        let mut patterns = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            for (encoding, text) in encodings(route.secret.expose().as_bytes()) {
                if text.len() >= MIN_PATTERN_LEN.min(route.secret.expose().len())
                    && !texts.contains(&text)
                {
                    texts.push(text);
                    patterns.push((index, encoding));
                }
            }
        }
        let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
        let finder = if texts.is_empty() {
            None
        } else {
            AhoCorasick::new(&texts).ok()
        };
        Credentials {
            routes,
            finder,
            patterns,
            longest,
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

    /// The route for requests to `host`, if any.
    pub fn route_for(&self, host: &Host) -> Option<&Route> {
        self.routes.iter().find(|r| &r.host == host)
    }

    /// Length of the longest encoded secret: how much of a stream must be
    /// held back to see a secret split across two chunks.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// A secret that must not go to `host`, found in `bytes` (searched as
    /// they are and percent-decoded).
    pub fn find_leak(&self, bytes: &[u8], host: &Host, place: &str) -> Option<Leak> {
        let finder = self.finder.as_ref()?;
        let decoded = percent_decode(bytes);
        let haystacks: [&[u8]; 2] = [bytes, &decoded];
        for haystack in haystacks {
            for found in finder.find_overlapping_iter(haystack) {
                let (index, encoding) = self.patterns[found.pattern().as_usize()];
                let route = &self.routes[index];
                if &route.host != host {
                    return Some(Leak {
                        route_host: route.host.to_string(),
                        encoding,
                        place: place.to_owned(),
                    });
                }
            }
        }
        None
    }

    /// Overwrites every secret in `bytes` with `x`, keeping the length.
    /// Returns whether anything was replaced.
    pub fn scrub(&self, bytes: &mut [u8]) -> bool {
        let Some(finder) = self.finder.as_ref() else {
            return false;
        };
        let spans: Vec<(usize, usize)> = finder
            .find_overlapping_iter(&*bytes)
            .map(|m| (m.start(), m.end()))
            .collect();
        for (start, end) in &spans {
            bytes[*start..*end].fill(b'x');
        }
        !spans.is_empty()
    }
}

/// Every common way of writing `secret` as it may appear in a request.
fn encodings(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("verbatim", secret.to_vec())];
    out.push(("hex", hex(secret, b"0123456789abcdef")));
    out.push(("hex", hex(secret, b"0123456789ABCDEF")));
    let mut common = Vec::new();
    let mut upper = Vec::new();
    let mut lower = Vec::new();
    for &b in secret {
        let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let up = format!("%{b:02X}");
        if unreserved {
            common.push(b);
        } else {
            common.extend_from_slice(up.as_bytes());
        }
        upper.extend_from_slice(up.as_bytes());
        lower.extend_from_slice(format!("%{b:02x}").as_bytes());
    }
    out.push(("url-encoded", common));
    out.push(("url-encoded", upper));
    out.push(("url-encoded", lower));
    // Base64 of text containing the secret depends on where the secret
    // starts modulo 3: search the characters it alone determines, for each
    // alignment, in both alphabets.
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut data = vec![0u8; offset];
            data.extend_from_slice(secret);
            let encoded = engine.encode(&data);
            let skip = [0, 2, 3][offset];
            let end = (data.len() / 3) * 4;
            if end > skip {
                out.push(("base64", encoded.as_bytes()[skip..end].to_vec()));
            }
        }
    }
    out
}

fn hex(bytes: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| [digits[(b >> 4) as usize], digits[(b & 15) as usize]])
        .collect()
}

/// `%XX` sequences decoded (and `+` as space, as in forms); anything
/// malformed is kept as it is.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let pair = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match pair.and_then(|p| u8::from_str_radix(p, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-T0ken/with+chars=";

    fn creds() -> Credentials {
        Credentials::new(vec![Route {
            host: Host::Name("api.example.com".into()),
            header: HeaderName::from_static("authorization"),
            scheme: "Bearer".into(),
            secret: Secret::new(SECRET.into()),
        }])
    }

    fn other() -> Host {
        Host::Name("allowed.test".into())
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
    }

    #[test]
    fn every_encoding_is_found() {
        let c = creds();
        let s = SECRET.as_bytes();
        let mut cases: Vec<Vec<u8>> = vec![
            format!("token={SECRET}").into_bytes(),
            hex(s, b"0123456789abcdef"),
            hex(s, b"0123456789ABCDEF"),
            url_encode(SECRET).into_bytes(),
        ];
        for prefix in ["", "a", "ab", "user:"] {
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                cases.push(
                    engine
                        .encode(format!("{prefix}{SECRET}trailer"))
                        .into_bytes(),
                );
                cases.push(
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{prefix}{SECRET}"))
                        .into_bytes(),
                );
            }
        }
        for case in cases {
            let text = String::from_utf8_lossy(&case).into_owned();
            assert!(
                c.find_leak(&case, &other(), "body").is_some(),
                "missed {text}"
            );
        }
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
    }

    #[test]
    fn placeholders_and_look_alikes_pass() {
        let c = creds();
        for text in [
            "placeholder",
            "s3cr3t-T0ken/with",
            "Bearer sk-ant-oat01-placeholder",
        ] {
            assert_eq!(
                c.find_leak(text.as_bytes(), &other(), "body"),
                None,
                "{text}"
            );
        }
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

    fn url_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
}
