//! The bottle's certificate authority and the leaf certificates the gate
//! presents to the agent.
//!
//! Each bottle mints its own CA (never shared, never reused across
//! bottles). Its key lives in the bottle's state directory, readable by the
//! gate alone; the agent trusts the certificate. Leaves are minted on
//! demand for the host the agent asked for, each with its own key, valid
//! for hours, with an IP SAN when the host is an address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_manifest::host::Host;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ServerConfig;
use time::OffsetDateTime;

/// How long a leaf is valid: short, so a leaked leaf key is worth little.
const LEAF_VALIDITY: time::Duration = time::Duration::hours(12);
/// Leaves are re-minted well before they expire.
const LEAF_REUSE: Duration = Duration::from_secs(6 * 3600);
/// Most leaves kept at once; past it the cache starts over.
const LEAF_CACHE_MAX: usize = 1024;

/// ALPN protocols offered to the agent.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

pub use bottle_contract::ca::{CLOCK_SKEW, MintedCa};

/// Mints a CA for the bottle `identity` (see [`bottle_contract::ca`]).
pub fn mint_ca(identity: &str) -> Result<MintedCa, CaError> {
    Ok(bottle_contract::ca::mint_ca(identity)?)
}

/// Signs leaves for the agent's side of intercepted connections.
pub struct LeafMinter {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    cache: Mutex<HashMap<Host, (Instant, Arc<ServerConfig>)>>,
}

impl LeafMinter {
    /// From the CA's certificate and key (PEM).
    pub fn new(ca_cert_pem: &str, ca_key_pem: &str) -> Result<LeafMinter, CaError> {
        let key = KeyPair::from_pem(ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key)?;
        let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca_cert_pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok(LeafMinter {
            issuer,
            ca_der,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// A server configuration presenting a leaf for `host`.
    pub fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, CaError> {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((minted, config)) = cache.get(host)
            && minted.elapsed() < LEAF_REUSE
        {
            return Ok(Arc::clone(config));
        }
        let config = Arc::new(self.mint(host)?);
        if cache.len() >= LEAF_CACHE_MAX {
            cache.clear();
        }
        cache.insert(host.clone(), (Instant::now(), Arc::clone(&config)));
        Ok(config)
    }

    fn mint(&self, host: &Host) -> Result<ServerConfig, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host {
            Host::Name(name) => SanType::DnsName(name.clone().try_into()?),
            Host::Ip(ip) => SanType::IpAddress(*ip),
        }];
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            match host {
                Host::Name(name) => name.clone(),
                Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
                Host::Ip(IpAddr::V6(ip)) => ip.to_string(),
            },
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + LEAF_VALIDITY;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mint_is_a_new_ca() {
        let a = mint_ca("a-1").unwrap_or_else(|e| panic!("{e}"));
        let b = mint_ca("a-1").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.cert_pem, b.cert_pem);
        assert_ne!(a.key_pem, b.key_pem);
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }

    #[test]
    fn leaves_are_minted_and_cached() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = mint_ca("b-2").unwrap_or_else(|e| panic!("{e}"));
        let minter = LeafMinter::new(&ca.cert_pem, &ca.key_pem).unwrap_or_else(|e| panic!("{e}"));
        let host = Host::Name("allowed.test".into());
        let first = minter
            .server_config(&host)
            .unwrap_or_else(|e| panic!("{e}"));
        let again = minter
            .server_config(&host)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(&first, &again));
        let ip = minter.server_config(&Host::Ip(
            "203.0.113.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        ));
        assert!(ip.is_ok());
    }
}
