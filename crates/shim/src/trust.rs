//! The bottle's CA in the trust stores of the agent's image, on a
//! read-only root.
//!
//! The agent's root filesystem is read-only, so the stores cannot be
//! appended to at start. Instead every image bot-bottle builds is
//! *prepared* ([`prepare`], run at build time as root): each system trust
//! store is moved to `STORE.system` and replaced by a symbolic link into
//! [`TRUST_DIR`], a tmpfs writable by root alone. At start the shim, still
//! root, writes each store there — the system's certificates plus the
//! bottle's CA ([`install`]) — and then drops to the agent's user, who can
//! read the stores and change none of them. Every runtime then trusts the
//! gate with no flags.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the stores are written at start: a tmpfs of the agent's sandbox,
/// mounted root-owned, mode 0755.
pub const TRUST_DIR: &str = "/run/bot-bottle/trust";

/// PEM bundles of the common distributions; the first is made when the
/// image has none.
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Java's trust stores (Debian's and Red Hat's).
const JAVA_STORES: &[&str] = &["/etc/ssl/certs/java/cacerts", "/etc/pki/java/cacerts"];
/// Suffix of a store's system copy.
const SYSTEM: &str = "system";

/// Where a store's symbolic link points.
fn target(store: &str) -> PathBuf {
    Path::new(TRUST_DIR).join(store.trim_start_matches('/').replace('/', "_"))
}

fn system_copy(store: &str) -> PathBuf {
    PathBuf::from(format!("{store}.{SYSTEM}"))
}

/// Whether `store` is a link into [`TRUST_DIR`] (prepared).
fn is_prepared(store: &str) -> bool {
    std::fs::read_link(store).is_ok_and(|t| t == target(store))
}

/// Prepares an image's trust stores (at build time, as root): each store
/// that is a file becomes `STORE.system` and a link into [`TRUST_DIR`].
/// A store that is a link elsewhere (to another store) is left as it is;
/// an image with no bundle gets an empty system bundle, so the bottle's CA
/// is still found where tools look. Running it again changes nothing, and
/// a store a build step wrote anew is prepared again.
pub fn prepare() -> io::Result<Vec<String>> {
    let mut prepared = Vec::new();
    for store in BUNDLES.iter().chain(JAVA_STORES) {
        let path = Path::new(store);
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.file_type().is_file() {
            fs_err::rename(path, system_copy(store))?;
            std::os::unix::fs::symlink(target(store), path)?;
            prepared.push((*store).to_owned());
        } else if is_prepared(store) {
            prepared.push((*store).to_owned());
        }
    }
    if !BUNDLES
        .iter()
        .any(|b| is_prepared(b) || Path::new(b).exists())
    {
        let first = BUNDLES[0];
        if let Some(dir) = Path::new(first).parent() {
            fs_err::create_dir_all(dir)?;
        }
        fs_err::write(system_copy(first), "")?;
        std::os::unix::fs::symlink(target(first), first)?;
        prepared.push(first.to_owned());
    }
    Ok(prepared)
}

/// Writes every prepared store with the bottle's CA added (at start, as
/// root). An image whose stores are not prepared (not built by bot-bottle,
/// or built before it prepared them) is an error naming the fix. Anything
/// of the image's that must run to do it (Java's `keytool`) runs as
/// `user`, never as root: a program the agent could have put on the
/// image's PATH gains nothing by running.
pub fn install(ca: &Path, user: Option<(u32, u32)>) -> io::Result<()> {
    let pem = fs_err::read_to_string(ca)?;
    let bundles: Vec<&str> = BUNDLES.iter().copied().filter(|b| is_prepared(b)).collect();
    if bundles.is_empty() {
        return Err(io::Error::other(format!(
            "the image's trust store is not prepared for a read-only root ({} is not a link into {TRUST_DIR}); let bot-bottle rebuild the image (it prepares every image it builds)",
            BUNDLES[0]
        )));
    }
    fs_err::create_dir_all(TRUST_DIR)?;
    for store in bundles {
        let system = std::fs::read_to_string(system_copy(store)).unwrap_or_default();
        let mut text = system.trim_end().to_owned();
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(pem.trim());
        text.push('\n');
        write_store(&target(store), text.as_bytes())?;
    }
    for store in JAVA_STORES.iter().copied().filter(|s| is_prepared(s)) {
        java(store, ca, user)?;
    }
    Ok(())
}

fn write_store(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs_err::write(path, bytes)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// Java's store: the system copy with the CA imported by `keytool`, when
/// the image has Java. Without keytool the system copy is used as it is.
///
/// keytool is run as `user` (the agent's uid) on a copy in a scratch
/// directory, and the result is copied, as root, into the trust tmpfs; no
/// agent process runs yet, and the result is read without following
/// links.
fn java(store: &str, ca: &Path, user: Option<(u32, u32)>) -> io::Result<()> {
    let out = target(store);
    fs_err::copy(system_copy(store), &out)?;
    fs_err::set_permissions(&out, std::fs::Permissions::from_mode(0o644))?;
    let has_keytool = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("keytool").is_file()))
        .unwrap_or(false);
    if !has_keytool {
        return Ok(());
    }
    let scratch = Path::new("/tmp").join(format!(".bot-bottle-java-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    fs_err::create_dir(&scratch)?;
    fs_err::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777))?;
    let copy = scratch.join("cacerts");
    fs_err::copy(system_copy(store), &copy)?;
    fs_err::set_permissions(&copy, std::fs::Permissions::from_mode(0o666))?;
    let mut keytool = Command::new("keytool");
    keytool
        .args([
            "-importcert",
            "-noprompt",
            "-storepass",
            "changeit",
            "-alias",
            "bot-bottle",
            "-keystore",
        ])
        .arg(&copy)
        .arg("-file")
        .arg(ca)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = user {
        use std::os::unix::process::CommandExt;
        // std drops the supplementary groups too when it sets the uid.
        keytool.uid(uid).gid(gid);
    }
    let imported = keytool.status().is_ok_and(|s| s.success());
    if imported {
        let bytes = read_no_follow(&copy)?;
        fs_err::write(&out, bytes)?;
        fs_err::set_permissions(&out, std::fs::Permissions::from_mode(0o644))?;
    } else {
        eprintln!("bottle shim: warning: could not add the bottle's CA to Java's trust store");
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A regular file's bytes, refusing a link.
fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}
