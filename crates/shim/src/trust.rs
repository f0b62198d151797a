//! Adds the bottle's CA to the trust stores of the agent's image, so every
//! runtime trusts the gate's certificates with no flags. Runs as root,
//! before the shim drops to the agent's user; the agent cannot change the
//! stores afterwards.

use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// System bundles of the common distributions; the first one is created
/// when none exists.
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Where `update-ca-certificates` looks, so a later run keeps the CA.
const LOCAL_CA: &str = "/usr/local/share/ca-certificates/bot-bottle.crt";

pub fn install(ca: &Path) -> io::Result<()> {
    let pem = fs_err::read_to_string(ca)?;
    let mut appended = false;
    for bundle in BUNDLES {
        let path = Path::new(bundle);
        if let Ok(current) = fs_err::read_to_string(path) {
            if !current.contains(pem.trim()) {
                let mut file = fs_err::OpenOptions::new().append(true).open(path)?;
                file.write_all(format!("\n{}\n", pem.trim()).as_bytes())?;
            }
            appended = true;
        }
    }
    if !appended {
        let first = Path::new(BUNDLES[0]);
        if let Some(dir) = first.parent() {
            fs_err::create_dir_all(dir)?;
        }
        fs_err::write(first, &pem)?;
    }
    if let Some(dir) = Path::new(LOCAL_CA).parent()
        && dir.is_dir()
    {
        let _ = std::fs::write(LOCAL_CA, &pem);
    }
    java(ca);
    Ok(())
}

/// Imports the CA into Java's default trust store when Java is present.
fn java(ca: &Path) {
    let has_keytool = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("keytool").is_file()))
        .unwrap_or(false);
    if !has_keytool {
        return;
    }
    let status = Command::new("keytool")
        .args([
            "-importcert",
            "-noprompt",
            "-cacerts",
            "-storepass",
            "changeit",
            "-alias",
            "bot-bottle",
            "-file",
        ])
        .arg(ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("bottle shim: warning: could not add the bottle's CA to Java's trust store");
    }
}
