//! Host names, IP spellings and allowlist rules.
//!
//! Everything that compares a host the agent asked for with a host the
//! person allowed goes through [`normalize_host`] first, so that case,
//! trailing dots, Unicode (IDNA) and odd IP spellings cannot make one host
//! look like another. The manifest uses the same functions to parse rules,
//! so a rule and a request are always normalised the same way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Longest host name DNS can carry (RFC 1035 §2.3.4).
const MAX_HOST_LEN: usize = 253;

/// A host as the agent named it, after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lowercase ASCII (IDNA), no trailing dot.
    Name(String),
    /// An address written in its one canonical form (dotted quad, or an
    /// IPv6 literal that is not an IPv4 address in disguise).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Why a host string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the host is empty")]
    Empty,
    #[error("the host is longer than {MAX_HOST_LEN} characters")]
    TooLong,
    #[error("{0:?} is not a valid host name")]
    Invalid(String),
    /// An address written in a form other than its canonical one: decimal
    /// (`2130706433`), octal (`0177.0.0.1`), hex (`0x7f.1`), shortened
    /// (`127.1`), or an IPv4 address wrapped in IPv6 (`::ffff:127.0.0.1`).
    /// Such spellings exist to slip past string comparisons, so they are
    /// refused outright rather than translated.
    #[error("{spelled:?} is a non-canonical spelling of the address {address}")]
    NonCanonicalIp { spelled: String, address: IpAddr },
}

/// Normalises a host as it appears in a URL authority or CONNECT target
/// (without the port): IPv6 literals in brackets, names in any case, with or
/// without a trailing dot, in Unicode or punycode.
pub fn normalize_host(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| HostError::Invalid(raw.to_owned()))?;
        // Zone ids (`fe80::1%eth0`) name an interface of the gate: never.
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| HostError::Invalid(raw.to_owned()))?;
        return match embedded_ipv4(&ip) {
            Some(v4) => Err(HostError::NonCanonicalIp {
                spelled: raw.to_owned(),
                address: IpAddr::V4(v4),
            }),
            None => Ok(Host::Ip(IpAddr::V6(ip))),
        };
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() || trimmed.ends_with('.') {
        return Err(HostError::Invalid(raw.to_owned()));
    }
    // IDNA maps case, full-width dots and Unicode to one ASCII spelling.
    let ascii = idna::domain_to_ascii_strict(trimmed)
        .or_else(|_| idna::domain_to_ascii(trimmed))
        .map_err(|_| HostError::Invalid(raw.to_owned()))?;
    if ascii.is_empty() {
        return Err(HostError::Empty);
    }
    if ascii.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if let Some(address) = loose_ipv4(&ascii) {
        return if address.to_string() == raw {
            Ok(Host::Ip(IpAddr::V4(address)))
        } else {
            Err(HostError::NonCanonicalIp {
                spelled: raw.to_owned(),
                address: IpAddr::V4(address),
            })
        };
    }
    // A name whose last label is numeric is an address to some parsers
    // (WHATWG URL "ends in a number") and a name to others: refuse both.
    let last = ascii.rsplit('.').next().unwrap_or_default();
    if ends_in_number(last) {
        return Err(HostError::Invalid(raw.to_owned()));
    }
    for label in ascii.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(HostError::Invalid(raw.to_owned()));
        }
    }
    Ok(Host::Name(ascii))
}

/// The IPv4 address hidden in an IPv6 one: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::/96`) and
/// 6to4 (`2002:AABB:CCDD::/48`).
pub fn embedded_ipv4(ip: &Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let tail = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    match seg {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

fn ends_in_number(label: &str) -> bool {
    !label.is_empty()
        && (label.bytes().all(|b| b.is_ascii_digit()) || parse_ipv4_part(label).is_some())
}

/// Parses an IPv4 address the way `inet_aton` and the WHATWG URL parser
/// do: one to four parts, each decimal, octal (leading `0`) or hex (`0x`).
fn loose_ipv4(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let parts: Vec<u64> = s
        .split('.')
        .map(parse_ipv4_part)
        .collect::<Option<Vec<_>>>()?;
    let (last, init) = parts.split_last()?;
    if init.len() > 3 || init.iter().any(|p| *p > 255) {
        return None;
    }
    let width = 8 * (4 - init.len() as u32);
    if *last >= 1u64 << width {
        return None;
    }
    let value = init
        .iter()
        .enumerate()
        .fold(*last, |acc, (i, p)| acc | (p << (24 - 8 * i as u32)));
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_part(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // "0x" alone is zero to inet_aton.
        return (radix == 16).then_some(0);
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|v| *v <= u32::MAX as u64)
}

/// The host part of an allowlist rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// Any name strictly below this suffix (`*.crates.io` matches
    /// `static.crates.io`, not `crates.io`).
    Suffix(String),
    /// Exactly this address.
    Ip(IpAddr),
}

/// One entry of a bottle's `allow` list, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostRule {
    /// The rule as the person wrote it, for audit lines and messages.
    pub text: String,
    pub host: HostPattern,
    /// `None`: the scheme's default (443 for CONNECT, 80 for plain HTTP).
    pub port: Option<u16>,
}

/// Why an `allow` entry was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    Host(#[from] HostError),
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    #[error("{0:?} would allow every host: name the hosts instead")]
    Everything(String),
    #[error(
        "{rule:?} would allow every name under the public suffix {suffix:?}: allow the registrable domain (e.g. *.example.{suffix}) instead"
    )]
    PublicSuffix { rule: String, suffix: String },
    #[error("{0:?}: a wildcard may only stand first, as in *.example.com")]
    Wildcard(String),
}

impl HostRule {
    /// Parses `host`, `*.suffix`, `host:port`, `1.2.3.4:port` or `[::1]:port`.
    pub fn parse(text: &str) -> Result<HostRule, RuleError> {
        let trimmed = text.trim();
        let (host_part, port) = split_host_port(trimmed)?;
        if host_part == "*" || host_part == "*." {
            return Err(RuleError::Everything(text.to_owned()));
        }
        let pattern = if let Some(suffix) = host_part.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(RuleError::Wildcard(text.to_owned()));
            }
            match normalize_host(suffix)? {
                Host::Name(name) => {
                    if is_public_suffix(&name) {
                        return Err(RuleError::PublicSuffix {
                            rule: text.to_owned(),
                            suffix: name,
                        });
                    }
                    HostPattern::Suffix(name)
                }
                Host::Ip(_) => return Err(RuleError::Wildcard(text.to_owned())),
            }
        } else if host_part.contains('*') {
            return Err(RuleError::Wildcard(text.to_owned()));
        } else {
            match normalize_host(host_part)? {
                Host::Name(name) => HostPattern::Exact(name),
                Host::Ip(ip) => HostPattern::Ip(ip),
            }
        };
        Ok(HostRule {
            text: trimmed.to_owned(),
            host: pattern,
            port,
        })
    }

    /// Whether `other` allows exactly what this rule allows (however each
    /// was spelled).
    pub fn same_as(&self, other: &HostRule) -> bool {
        self.host == other.host && self.port == other.port
    }

    /// Whether this rule allows `host` on `port`, where `default_port` is
    /// the port a rule without one stands for (443 for CONNECT, 80 for HTTP).
    pub fn allows(&self, host: &Host, port: u16, default_port: u16) -> bool {
        if self.port.unwrap_or(default_port) != port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Exact(rule), Host::Name(name)) => rule == name,
            (HostPattern::Suffix(suffix), Host::Name(name)) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Ip(rule), Host::Ip(ip)) => rule == ip,
            _ => false,
        }
    }
}

/// Splits an authority (`host`, `host:port`, `[v6]:port`) into host and port.
pub fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), RuleError> {
    let parse_port = |p: &str| {
        Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| RuleError::Port(p.to_owned()))
    };
    if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| HostError::Invalid(authority.to_owned()))?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(p) => Ok((host, Some(parse_port(p)?))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(HostError::Invalid(authority.to_owned()).into()),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Ok((host, Some(parse_port(p)?))),
        // Bare IPv6 without brackets: the whole string is the host.
        Some(_) => Ok((authority, None)),
        None => Ok((authority, None)),
    }
}

/// Whether `name` is itself a public suffix (`com`, `co.uk`, `github.io`).
fn is_public_suffix(name: &str) -> bool {
    if !name.contains('.') {
        // Every single label is a TLD or could become one.
        return true;
    }
    psl::suffix(name.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize_host("Example.COM."), Ok(name("example.com")));
        assert_eq!(normalize_host("bücher.de"), Ok(name("xn--bcher-kva.de")));
        assert_eq!(normalize_host("ALLOWED.test"), Ok(name("allowed.test")));
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host("exa mple.com").is_err());
        assert!(normalize_host("example.com..").is_err());
        assert!(normalize_host("-bad.com").is_err());
        assert!(normalize_host("").is_err());
    }

    #[test]
    fn canonical_ips_are_ips() {
        assert_eq!(
            normalize_host("172.18.0.2"),
            Ok(Host::Ip(
                "172.18.0.2"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            ))
        );
        assert!(matches!(
            normalize_host("[2001:db8::1]"),
            Ok(Host::Ip(IpAddr::V6(_)))
        ));
    }

    #[test]
    fn non_canonical_ips_are_refused() {
        for spelled in [
            "2886860802",
            "0xac120002",
            "0254.0022.0.02",
            "0xac.0x12.0.2",
            "172.18.2",
            "172.1179650",
            "[::ffff:172.18.0.2]",
            "[::ffff:ac12:2]",
            "[::172.18.0.2]",
            "[64:ff9b::ac12:2]",
            "0",
            "127.1",
            "172.18.0.2.",
            "017.0.0.1",
        ] {
            match normalize_host(spelled) {
                Err(HostError::NonCanonicalIp { .. }) => {}
                other => panic!("{spelled}: {other:?}"),
            }
        }
    }

    #[test]
    fn numeric_tlds_are_refused() {
        assert!(normalize_host("1.2.3.4.5").is_err());
        assert!(normalize_host("foo.0x10").is_err());
        assert!(normalize_host("foo.123").is_err());
    }

    #[test]
    fn rules_parse_and_match() {
        let rule = HostRule::parse("*.crates.io").unwrap_or_else(|e| panic!("{e}"));
        assert!(rule.allows(&name("static.crates.io"), 443, 443));
        assert!(rule.allows(&name("a.b.crates.io"), 443, 443));
        assert!(!rule.allows(&name("crates.io"), 443, 443));
        assert!(!rule.allows(&name("evilcrates.io"), 443, 443));
        assert!(!rule.allows(&name("static.crates.io"), 8443, 443));

        let rule = HostRule::parse("static.rust-lang.org:443").unwrap_or_else(|e| panic!("{e}"));
        assert!(rule.allows(&name("static.rust-lang.org"), 443, 80));
        assert!(!rule.allows(&name("static.rust-lang.org"), 80, 80));

        let rule = HostRule::parse("Allowed.Test").unwrap_or_else(|e| panic!("{e}"));
        assert!(rule.allows(&name("allowed.test"), 80, 80));
        assert!(!rule.allows(&name("allowed.test"), 8443, 443));

        let rule = HostRule::parse("[::1]:8080").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rule.port, Some(8080));
    }

    #[test]
    fn over_broad_rules_are_refused() {
        assert!(matches!(
            HostRule::parse("*"),
            Err(RuleError::Everything(_))
        ));
        assert!(matches!(
            HostRule::parse("*.com"),
            Err(RuleError::PublicSuffix { .. })
        ));
        assert!(matches!(
            HostRule::parse("*.co.uk"),
            Err(RuleError::PublicSuffix { .. })
        ));
        assert!(matches!(
            HostRule::parse("*.github.io"),
            Err(RuleError::PublicSuffix { .. })
        ));
        assert!(matches!(
            HostRule::parse("*.test"),
            Err(RuleError::PublicSuffix { .. })
        ));
        assert!(matches!(
            HostRule::parse("a.*.com"),
            Err(RuleError::Wildcard(_))
        ));
        assert!(matches!(HostRule::parse("host:0"), Err(RuleError::Port(_))));
        assert!(matches!(
            HostRule::parse("host:99999"),
            Err(RuleError::Port(_))
        ));
        assert!(HostRule::parse("*.example.co.uk").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn normalisation_is_idempotent(s in "[a-zA-Z0-9.\\-\\[\\]:]{0,40}") {
            if let Ok(host) = normalize_host(&s) {
                let again = normalize_host(&host.to_string());
                proptest::prop_assert_eq!(again, Ok(host));
            }
        }

        #[test]
        fn no_spelling_of_an_address_is_a_name(n in proptest::num::u32::ANY) {
            for spelled in [n.to_string(), format!("{n:#x}"), format!("0{n:o}")] {
                proptest::prop_assert!(!matches!(normalize_host(&spelled), Ok(Host::Name(_))));
            }
        }
    }
}
