//! A bottle's certificate authority, minted by the launcher: never shared,
//! never reused across bottles. Its key lives in the bottle's state
//! directory, readable by the gate alone; the agent trusts the certificate.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// How long a CA is valid: the life of a bottle, generously.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// Allowance for clocks that disagree between gate and agent.
pub const CLOCK_SKEW: time::Duration = time::Duration::hours(1);

/// A freshly minted CA, as PEM.
#[derive(Clone)]
pub struct MintedCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for MintedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedCa")
            .field("key_pem", &"***")
            .finish_non_exhaustive()
    }
}

/// Mints a CA for the bottle `identity`.
pub fn mint_ca(identity: &str) -> Result<MintedCa, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("bot-bottle {identity}"));
    name.push(DnType::OrganizationName, "bot-bottle");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(MintedCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
