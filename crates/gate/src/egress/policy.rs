//! The egress decision: may the agent reach this host and port, and may the
//! gate connect to the addresses the name resolves to.
//!
//! Two checks, both default deny. [`Policy::check_target`] compares the
//! normalised host with the allowlist. [`Policy::check_address`] runs on
//! every address the gate is about to connect to, so a name that resolves
//! to loopback, a private range or a metadata service (DNS rebinding) is
//! refused even though its name is allowed.

use std::net::IpAddr;

use bottle_manifest::host::{
    Host, HostError, HostPattern, HostRule, embedded_ipv4, normalize_host,
};
use ipnet::IpNet;

use super::ranges::{self, Kind};
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
    /// An address no range opens: loopback, the host itself, metadata
    /// services (those only for a rule naming the exact address).
    #[error("{host} resolves to {address} ({kind}), which the gate never connects to")]
    Closed {
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
    ///
    /// The host's own addresses never pass. Public addresses pass.
    /// Loopback, unspecified, multicast and broadcast never do. Metadata services pass only for a rule naming
    /// that exact address: no `allow_private` range or trusted subnet
    /// covers them. The host's side of the gate's network never passes.
    /// Every other special range passes for an exact rule, an
    /// `allow_private` range or a subnet of the gate's network.
    pub fn check_address(&self, allowed: &Allowed, address: IpAddr) -> Result<(), Denial> {
        let deny = |kind| {
            Err(Denial::Address {
                host: allowed.host.to_string(),
                address,
                kind,
            })
        };
        let closed = |kind| {
            Err(Denial::Closed {
                host: allowed.host.to_string(),
                address,
                kind,
            })
        };
        let canonical = canonical_ip(address);
        let kind = ranges::classify(canonical);
        if let Some(kind) = kind.filter(|k| k.never()) {
            return closed(kind.as_str());
        }
        // The host's own addresses, public ones too, before any rule.
        if self
            .refused_addresses
            .iter()
            .any(|a| canonical_ip(*a) == canonical)
        {
            return closed("the host itself");
        }
        let Some(kind) = kind else {
            return Ok(());
        };
        if allowed.explicit_ip {
            return Ok(());
        }
        if kind == Kind::Metadata {
            return closed(kind.as_str());
        }
        let listed = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&canonical));
        if listed(&self.allow_private) || listed(&self.trusted_subnets) {
            return Ok(());
        }
        deny(kind.as_str())
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
    ranges::classify(canonical_ip(address)).map(Kind::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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

    /// Found by review: the host's addresses were refused only inside
    /// special ranges, so a public address of the host passed.
    #[test]
    fn the_hosts_own_addresses_never_pass() {
        let config = EgressConfig {
            refused_addresses: vec![ip("203.0.113.9"), ip("93.184.216.34")],
            allow_private: vec!["10.0.0.0/8".parse().unwrap_or_else(|_| IpNet::default())],
            ..EgressConfig::default()
        };
        let p = policy(&["allowed.test", "93.184.216.34"], config);
        let allowed = p
            .check_target("allowed.test", 443, 443)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.check_address(&allowed, ip("93.184.216.34")).is_err());
        let exact = p
            .check_target("93.184.216.34", 443, 443)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            p.check_address(&exact, ip("93.184.216.34")).is_err(),
            "not even by an exact rule"
        );
        assert!(p.check_address(&allowed, ip("93.184.216.35")).is_ok());
    }

    #[test]
    fn metadata_needs_a_rule_naming_the_address() {
        let config = EgressConfig {
            allow_private: vec![
                "169.254.0.0/16"
                    .parse()
                    .unwrap_or_else(|_| IpNet::default()),
                "fd00::/8".parse().unwrap_or_else(|_| IpNet::default()),
                "100.64.0.0/10".parse().unwrap_or_else(|_| IpNet::default()),
            ],
            trusted_subnets: vec![
                "169.254.169.0/24"
                    .parse()
                    .unwrap_or_else(|_| IpNet::default()),
            ],
            ..EgressConfig::default()
        };
        let p = policy(&["meta.test", "169.254.169.254"], config);
        let by_name = p
            .check_target("meta.test", 443, 443)
            .unwrap_or_else(|e| panic!("{e}"));
        for metadata in [
            "169.254.169.254",
            "169.254.170.2",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            let err = p.check_address(&by_name, ip(metadata));
            assert!(
                matches!(
                    &err,
                    Err(Denial::Closed {
                        kind: "metadata service",
                        ..
                    })
                ),
                "{metadata}: {err:?}"
            );
        }
        // Other link-local and shared addresses follow allow_private.
        assert!(p.check_address(&by_name, ip("169.254.1.1")).is_ok());
        assert!(p.check_address(&by_name, ip("100.64.0.9")).is_ok());
        let exact = p
            .check_target("169.254.169.254", 80, 80)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.check_address(&exact, ip("169.254.169.254")).is_ok());
    }
}
