//! Every special-purpose address range, classified once.
//!
//! The tables follow IANA's IPv4 and IPv6 Special-Purpose Address
//! Registries (plus multicast, which has a registry of its own), and add
//! the addresses cloud providers serve instance metadata and host services
//! on. An address inside a range that IANA marks *globally reachable*
//! (TURN and PCP anycast, AS112, AMT, ...) is an ordinary public address;
//! every other range has a kind, and [`super::policy::Policy`] decides
//! from the kind.
//!
//! References: <https://www.iana.org/assignments/iana-ipv4-special-registry>,
//! <https://www.iana.org/assignments/iana-ipv6-special-registry>.

use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::IpNet;

/// What a non-public range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Instance metadata and host services of cloud providers: never a
    /// destination unless a rule names the exact address.
    Metadata,
    Loopback,
    Unspecified,
    Private,
    LinkLocal,
    Multicast,
    Broadcast,
    /// Carrier-grade NAT (shared address space).
    SharedNat,
    Documentation,
    Benchmarking,
    /// Reserved for future use, deprecated, or assigned to a protocol that
    /// is not a destination (ORCHID, Teredo, segment routing, ...).
    Reserved,
    /// IETF protocol assignments that are not globally reachable.
    Protocol,
    /// Address translation prefixes for local use.
    Translation,
    DiscardOnly,
}

impl Kind {
    /// How a refusal names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Metadata => "metadata service",
            Kind::Loopback => "loopback",
            Kind::Unspecified => "unspecified",
            Kind::Private => "private",
            Kind::LinkLocal => "link-local",
            Kind::Multicast => "multicast",
            Kind::Broadcast => "broadcast",
            Kind::SharedNat => "carrier-grade NAT",
            Kind::Documentation => "documentation",
            Kind::Benchmarking => "benchmarking",
            Kind::Reserved => "reserved",
            Kind::Protocol => "IETF protocol assignments",
            Kind::Translation => "local-use translation",
            Kind::DiscardOnly => "discard-only",
        }
    }

    /// Kinds no rule can make a destination: the gate's own namespace and
    /// addresses that reach many hosts at once.
    pub fn never(self) -> bool {
        matches!(
            self,
            Kind::Loopback | Kind::Unspecified | Kind::Multicast | Kind::Broadcast
        )
    }
}

/// `None` in a table row: IANA marks the range globally reachable, so an
/// address in it is public (a more specific row wins over a wider one).
type Row = (&'static str, Option<Kind>);

const V4: &[Row] = &[
    ("0.0.0.0/8", Some(Kind::Unspecified)),
    ("10.0.0.0/8", Some(Kind::Private)),
    ("100.64.0.0/10", Some(Kind::SharedNat)),
    ("127.0.0.0/8", Some(Kind::Loopback)),
    ("169.254.0.0/16", Some(Kind::LinkLocal)),
    ("172.16.0.0/12", Some(Kind::Private)),
    ("192.0.0.0/24", Some(Kind::Protocol)),
    ("192.0.0.9/32", None),
    ("192.0.0.10/32", None),
    ("192.0.2.0/24", Some(Kind::Documentation)),
    ("192.31.196.0/24", None),
    ("192.52.193.0/24", None),
    ("192.88.99.0/24", Some(Kind::Reserved)),
    ("192.168.0.0/16", Some(Kind::Private)),
    ("192.175.48.0/24", None),
    ("198.18.0.0/15", Some(Kind::Benchmarking)),
    ("198.51.100.0/24", Some(Kind::Documentation)),
    ("203.0.113.0/24", Some(Kind::Documentation)),
    ("224.0.0.0/4", Some(Kind::Multicast)),
    ("240.0.0.0/4", Some(Kind::Reserved)),
    ("255.255.255.255/32", Some(Kind::Broadcast)),
    // Cloud metadata and host services.
    // AWS: IMDS, DNS, NTP (169.254.169.0/24); ECS task metadata and EKS
    // pod identity (169.254.170.0/24). Most providers use 169.254.169.254.
    ("169.254.169.0/24", Some(Kind::Metadata)),
    ("169.254.170.0/24", Some(Kind::Metadata)),
    // Tencent Cloud.
    ("169.254.0.23/32", Some(Kind::Metadata)),
    // Scaleway.
    ("169.254.42.42/32", Some(Kind::Metadata)),
    // Alibaba Cloud.
    ("100.100.100.200/32", Some(Kind::Metadata)),
    // Oracle Cloud (legacy).
    ("192.0.0.192/32", Some(Kind::Metadata)),
    // Azure's WireServer: a public-looking address that is the host.
    ("168.63.129.16/32", Some(Kind::Metadata)),
];

const V6: &[Row] = &[
    ("::/128", Some(Kind::Unspecified)),
    ("::1/128", Some(Kind::Loopback)),
    // IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses are unwrapped
    // to their IPv4 address before this table is asked; these rows catch
    // what is left of the prefixes.
    ("::ffff:0:0/96", Some(Kind::Reserved)),
    ("::/96", Some(Kind::Reserved)),
    ("64:ff9b::/96", None),
    ("64:ff9b:1::/48", Some(Kind::Translation)),
    ("100::/64", Some(Kind::DiscardOnly)),
    ("100:0:0:1::/64", Some(Kind::Reserved)),
    ("2001::/23", Some(Kind::Protocol)),
    ("2001::/32", Some(Kind::Reserved)),
    ("2001:1::1/128", None),
    ("2001:1::2/128", None),
    ("2001:1::3/128", None),
    ("2001:2::/48", Some(Kind::Benchmarking)),
    ("2001:3::/32", None),
    ("2001:4:112::/48", None),
    ("2001:10::/28", Some(Kind::Reserved)),
    ("2001:20::/28", None),
    ("2001:30::/28", None),
    ("2001:db8::/32", Some(Kind::Documentation)),
    ("2002::/16", Some(Kind::Reserved)),
    ("2620:4f:8000::/48", None),
    ("3fff::/20", Some(Kind::Documentation)),
    ("5f00::/16", Some(Kind::Reserved)),
    ("fc00::/7", Some(Kind::Private)),
    ("fe80::/10", Some(Kind::LinkLocal)),
    // Deprecated site-local.
    ("fec0::/10", Some(Kind::Private)),
    ("ff00::/8", Some(Kind::Multicast)),
    // Cloud metadata: AWS (IMDS, DNS, NTP, pod identity), GCP, Scaleway.
    ("fd00:ec2::/32", Some(Kind::Metadata)),
    ("fd20:ce::254/128", Some(Kind::Metadata)),
    ("fd00:42::42/128", Some(Kind::Metadata)),
];

fn table() -> &'static [(IpNet, Option<Kind>)] {
    static TABLE: OnceLock<Vec<(IpNet, Option<Kind>)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        V4.iter()
            .chain(V6)
            .filter_map(|(net, kind)| Some((net.parse().ok()?, *kind)))
            .collect()
    })
}

/// The kind of non-public range `address` is in, if any: the most
/// specific row that contains it decides. `address` must already be
/// unwrapped from IPv6 clothing when it carries an IPv4 address.
pub fn classify(address: IpAddr) -> Option<Kind> {
    table()
        .iter()
        .filter(|(net, _)| net.contains(&address))
        .max_by_key(|(net, _)| net.prefix_len())
        .and_then(|(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<Kind> {
        classify(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])))
    }

    #[test]
    fn every_row_parses() {
        assert_eq!(table().len(), V4.len() + V6.len());
    }

    #[test]
    fn the_most_specific_row_decides() {
        assert_eq!(kind("169.254.1.1"), Some(Kind::LinkLocal));
        assert_eq!(kind("169.254.169.254"), Some(Kind::Metadata));
        assert_eq!(kind("169.254.170.2"), Some(Kind::Metadata));
        assert_eq!(kind("192.0.0.8"), Some(Kind::Protocol));
        assert_eq!(kind("192.0.0.9"), None, "PCP anycast is global");
        assert_eq!(kind("192.0.0.192"), Some(Kind::Metadata));
        assert_eq!(kind("2001:1::1"), None);
        assert_eq!(kind("2001:1::4"), Some(Kind::Protocol));
        assert_eq!(kind("2001:0:1::1"), Some(Kind::Reserved), "Teredo");
        assert_eq!(kind("fd00:ec2::254"), Some(Kind::Metadata));
        assert_eq!(kind("fd12::1"), Some(Kind::Private));
    }

    #[test]
    fn public_addresses_are_not_classified() {
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "8.8.8.8"] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[test]
    fn ranges_that_reach_everyone_are_never_destinations() {
        for never in [
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "ff02::1",
        ] {
            assert!(kind(never).is_some_and(Kind::never), "{never}");
        }
    }
}
