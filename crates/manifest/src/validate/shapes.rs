//! The shapes of names, sizes and URLs a manifest may hold.

use ipnet::IpNet;

use crate::manifest::MemorySize;

/// Parses `512m`, `4g`, `1.5G`, `1048576`.
pub fn parse_memory(size: &MemorySize) -> Option<u64> {
    let text = match size {
        MemorySize::Bytes(bytes) => return Some(*bytes),
        MemorySize::Text(text) => text.trim().to_ascii_lowercase(),
    };
    let text = text.strip_suffix('b').unwrap_or(&text);
    let (number, shift) = match text.char_indices().last()? {
        (i, 'k') => (&text[..i], 10),
        (i, 'm') => (&text[..i], 20),
        (i, 'g') => (&text[..i], 30),
        (i, 't') => (&text[..i], 40),
        _ => (text, 0),
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value > 0.0).then(|| (value * (1u64 << shift) as f64) as u64)
}

pub(super) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The widest `allow_private` range accepted: a /8 of IPv4, a /32 of
/// IPv6. Anything wider is not "my servers" but a large part of the
/// address space.
pub(super) fn min_private_prefix(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => MIN_PRIVATE_PREFIX_V4,
        IpNet::V6(_) => MIN_PRIVATE_PREFIX_V6,
    }
}

/// Shortest prefix of an IPv4 `allow_private` range.
pub const MIN_PRIVATE_PREFIX_V4: u8 = 8;
/// Shortest prefix of an IPv6 `allow_private` range.
pub const MIN_PRIVATE_PREFIX_V6: u8 = 32;

/// Why a Docker network name cannot be the gate's network: `host` would
/// put the gate in the host's own network namespace, where the host's
/// services and every interface's addresses are local (the address checks
/// assume the gate's network is a bridge whose only host address is its
/// gateway); `none` would leave the gate no way out at all.
pub(super) fn refused_network(name: &str) -> Option<String> {
    match name {
        "host" => Some(
            "the host's network is not a gate network: the gate would share the host's namespace and reach every service on it; create a bridge network (docker network create NAME) and name it".to_owned(),
        ),
        "none" => Some(
            "\"none\" would leave the gate no way out: remove gate_network, or name a bridge network".to_owned(),
        ),
        _ => None,
    }
}

pub(super) fn is_docker_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` is a header that may carry a credential: a valid token,
/// and not one that frames or routes the request.
pub fn is_header_name(name: &str) -> bool {
    const FORBIDDEN: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "keep-alive",
    ];
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !FORBIDDEN.contains(&name.to_ascii_lowercase().as_str())
}

pub(super) fn is_ssh_url(url: &str) -> bool {
    if url.contains(char::is_whitespace) || url.starts_with('-') {
        return false;
    }
    if let Some(rest) = url.strip_prefix("ssh://") {
        let rest = rest.trim_start_matches('/');
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        return !authority.is_empty() && !path.is_empty();
    }
    if url.contains("://") {
        return false;
    }
    // scp-like: [user@]host:path, where host has no '/'.
    match url.split_once(':') {
        Some((host, path)) => !host.is_empty() && !host.contains('/') && !path.is_empty(),
        None => false,
    }
}
