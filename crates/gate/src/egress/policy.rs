//! The egress decision: may the agent reach this host and port, and may the
//! gate connect to the addresses the name resolves to.
//!
//! Two checks, both default deny. [`Policy::check_target`] compares the
//! normalised host with the allowlist. [`Policy::check_address`] runs on
//! every address the gate is about to connect to, so a name that resolves
//! to loopback, a private range or a metadata service (DNS rebinding) is
//! refused even though its name is allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bottle_manifest::host::{
    Host, HostError, HostPattern, HostRule, embedded_ipv4, normalize_host,
};
use ipnet::IpNet;

use crate::config::EgressConfig;

/// Why a request was refused; `Display` is the line the agent reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("host {host} is not in the allowlist")]
    NotAllowed { host: String },
    #[error("port {port} of {host} is not allowed (allowed: {allowed})")]
    Port {
        host: String,
        port: u16,
        allowed: String,
    },
    #[error("{host} is an IP address; only addresses named exactly in the allowlist are reachable")]
    IpLiteral { host: String },
    #[error("{0}")]
    BadHost(HostError),
    #[error(
        "{host} resolves to {address} ({kind}), which the gate does not connect to; if it is your server, list its range in the bottle's allow_private"
    )]
    Address {
        host: String,
        address: IpAddr,
        kind: &'static str,
    },
}

/// What an allowed target was allowed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub host: Host,
    /// The rule's text, for the audit log.
    pub rule: String,
    /// Whether the rule names the address itself.
    pub explicit_ip: bool,
}

/// The compiled egress policy of one bottle.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<HostRule>,
    allow_private: Vec<IpNet>,
    trusted_subnets: Vec<IpNet>,
    refused_addresses: Vec<IpAddr>,
}

impl Policy {
    pub fn new(rules: Vec<HostRule>, config: &EgressConfig) -> Policy {
        Policy {
            rules,
            allow_private: config.allow_private.clone(),
            trusted_subnets: config.trusted_subnets.clone(),
            refused_addresses: config.refused_addresses.clone(),
        }
    }

    /// This policy with one more rule, or `None` when it has that rule
    /// already (however it was spelled).
    pub fn with_rule(&self, rule: HostRule) -> Option<Policy> {
        if self.rules.iter().any(|r| r.same_as(&rule)) {
            return None;
        }
        let mut next = self.clone();
        next.rules.push(rule);
        Some(next)
    }

    /// The rules' text, in order.
    pub fn rules(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.text.as_str())
    }

    /// Checks a host (as the agent spelled it, without port) and port.
    /// `default_port` is the port a rule without one stands for: 443 for
    /// CONNECT, 80 for plain HTTP.
    pub fn check_target(
        &self,
        raw_host: &str,
        port: u16,
        default_port: u16,
    ) -> Result<Allowed, Denial> {
        let host = normalize_host(raw_host).map_err(Denial::BadHost)?;
        self.check_host(host, port, default_port)
    }

    /// [`Policy::check_target`] for a host already normalised.
    pub fn check_host(&self, host: Host, port: u16, default_port: u16) -> Result<Allowed, Denial> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.allows(&host, port, default_port))
        {
            return Ok(Allowed {
                explicit_ip: matches!(rule.host, HostPattern::Ip(_)),
                host,
                rule: rule.text.clone(),
            });
        }
        let same_host: Vec<&str> = self
            .rules
            .iter()
            .filter(|r| r.allows(&host, r.port.unwrap_or(default_port), default_port))
            .map(|r| r.text.as_str())
            .collect();
        Err(match host {
            Host::Ip(_) if same_host.is_empty() => Denial::IpLiteral {
                host: host.to_string(),
            },
            _ if !same_host.is_empty() => Denial::Port {
                host: host.to_string(),
                port,
                allowed: same_host.join(", "),
            },
            _ => Denial::NotAllowed {
                host: host.to_string(),
            },
        })
    }

    /// Checks an address the gate is about to connect to for `allowed`.
    pub fn check_address(&self, allowed: &Allowed, address: IpAddr) -> Result<(), Denial> {
        let deny = |kind| {
            Err(Denial::Address {
                host: allowed.host.to_string(),
                address,
                kind,
            })
        };
        let Some(kind) = special_range(address) else {
            return Ok(());
        };
        // The gate's own namespace is never a destination, whatever the rules.
        if matches!(kind, "loopback" | "unspecified" | "multicast" | "broadcast") {
            return deny(kind);
        }
        let canonical = canonical_ip(address);
        if self
            .refused_addresses
            .iter()
            .any(|a| canonical_ip(*a) == canonical)
        {
            return deny("the host's side of the gate's network");
        }
        if allowed.explicit_ip {
            return Ok(());
        }
        let listed = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&canonical));
        if listed(&self.allow_private) || listed(&self.trusted_subnets) {
            return Ok(());
        }
        deny(kind)
    }
}

/// An IPv4 address in IPv6 clothing, unwrapped; anything else unchanged.
fn canonical_ip(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => embedded_ipv4(&v6).map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The kind of non-public range `address` is in, if any.
pub fn special_range(address: IpAddr) -> Option<&'static str> {
    match canonical_ip(address) {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [169, 254, 169, 254] | [100, 100, 100, 200] => "metadata service",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() || o[0] == 0 => "unspecified",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() => "multicast",
        [100, b, ..] if (64..128).contains(&b) => "carrier-grade NAT",
        [192, 0, 0, _] => "IETF protocol assignments",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, 18 | 19, ..] => "benchmarking",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s {
        [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] => "metadata service",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        [a, ..] if a & 0xfe00 == 0xfc00 => "private",
        [a, ..] if a & 0xffc0 == 0xfe80 => "link-local",
        [a, ..] if a & 0xffc0 == 0xfec0 => "site-local",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x0100, 0, 0, 0, ..] => "discard-only",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], config: EgressConfig) -> Policy {
        let rules = allow
            .iter()
            .map(|r| HostRule::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_default();
        Policy::new(rules, &config)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn default_deny() {
        let p = policy(&[], EgressConfig::default());
        assert!(matches!(
            p.check_target("example.com", 443, 443),
            Err(Denial::NotAllowed { .. })
        ));
    }

    #[test]
    fn ports_follow_the_scheme_default() {
        let p = policy(&["allowed.test"], EgressConfig::default());
        assert!(p.check_target("allowed.test", 443, 443).is_ok());
        assert!(p.check_target("allowed.test", 80, 80).is_ok());
        let err = p.check_target("allowed.test", 8443, 443);
        assert!(
            matches!(err, Err(Denial::Port { port: 8443, .. })),
            "{err:?}"
        );
        assert!(p.check_target("ALLOWED.TEST.", 443, 443).is_ok());
    }

    #[test]
    fn ip_literals_need_an_exact_rule() {
        let p = policy(&["allowed.test"], EgressConfig::default());
        assert!(matches!(
            p.check_target("172.18.0.2", 80, 80),
            Err(Denial::IpLiteral { .. })
        ));
        assert!(matches!(
            p.check_target("2886860802", 80, 80),
            Err(Denial::BadHost(HostError::NonCanonicalIp { .. }))
        ));
        let p = policy(&["172.18.0.2"], EgressConfig::default());
        assert!(p.check_target("172.18.0.2", 80, 80).is_ok());
        assert!(p.check_target("0xac120002", 80, 80).is_err());
    }

    #[test]
    fn rebinding_to_private_ranges_is_refused() {
        let p = policy(&["allowed.test"], EgressConfig::default());
        let allowed = p
            .check_target("allowed.test", 443, 443)
            .unwrap_or_else(|e| panic!("{e}"));
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.18.0.2",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(p.check_address(&allowed, ip(bad)).is_err(), "{bad}");
        }
        assert!(p.check_address(&allowed, ip("93.184.216.34")).is_ok());
    }

    #[test]
    fn trusted_subnets_except_their_gateway() {
        let config = EgressConfig {
            trusted_subnets: vec!["172.30.0.0/16".parse().unwrap_or_else(|_| IpNet::default())],
            refused_addresses: vec![ip("172.30.0.1")],
            allow_private: vec!["10.20.0.0/16".parse().unwrap_or_else(|_| IpNet::default())],
            ..EgressConfig::default()
        };
        let p = policy(&["allowed.test"], config);
        let allowed = p
            .check_target("allowed.test", 443, 443)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.check_address(&allowed, ip("172.30.0.5")).is_ok());
        assert!(p.check_address(&allowed, ip("::ffff:172.30.0.5")).is_ok());
        assert!(p.check_address(&allowed, ip("172.30.0.1")).is_err());
        assert!(p.check_address(&allowed, ip("10.20.3.4")).is_ok());
        assert!(p.check_address(&allowed, ip("10.21.3.4")).is_err());
        assert!(p.check_address(&allowed, ip("127.0.0.1")).is_err());
    }
}
