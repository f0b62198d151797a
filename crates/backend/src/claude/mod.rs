//! Claude Code, the default agent, in every bottle.
//!
//! The official `claude-agent-sdk` wheel on PyPI carries the Claude Code
//! CLI as a native binary (`claude_agent_sdk/_bundled/claude`). Its
//! version and checksum are pinned in one place, `images/agent/claude.json`
//! (a person's own pin, written by `bottle update-agent`, takes its place).
//! The wheel is fetched once into a host cache, checked against the pin,
//! the binary taken out of it and run (`--version`) before it is kept.
//! Docker bottles get it in their image; native bottles get the same file
//! bound read-only.

pub mod fetch;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BackendError, Reporter};

/// The pin this build of bot-bottle ships.
pub const BUILTIN_PIN: &str = include_str!("../../../../images/agent/claude.json");
/// The binary's place in the wheel.
const WHEEL_BINARY: &str = "claude_agent_sdk/_bundled/claude";
/// The version the wheel says its binary is.
const WHEEL_VERSION: &str = "claude_agent_sdk/_bundled/claude.version";
/// The package index `bottle update-agent` asks (PEP 691 JSON).
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple/";
/// How long `claude --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);
/// What every failure to install says a person can do instead.
const ALTERNATIVES: &str = "set BOTTLE_CLAUDE_BIN to a claude binary of your own, BOTTLE_INSTALL_CLAUDE=npm to install it from the npm registry in the image, or BOTTLE_INSTALL_CLAUDE=0 for bottles without Claude Code";

/// A pinned release of Claude Code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The PyPI package carrying the binary.
    pub package: String,
    /// The package's version.
    pub version: String,
    /// The Claude Code version its binary reports.
    pub claude: String,
    /// One wheel per machine architecture (`x86_64`, `aarch64`).
    pub wheels: BTreeMap<String, Wheel>,
}

/// One wheel file of the pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wheel {
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

/// How bottles get Claude Code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// The pinned binary, from the cache (fetched on first use).
    Pinned { pin: Pin, cache: PathBuf },
    /// A binary the person supplies (`BOTTLE_CLAUDE_BIN`).
    Binary(PathBuf),
    /// From the npm registry, while the image builds.
    Npm,
    /// Not at all (`BOTTLE_INSTALL_CLAUDE=0`).
    Skip,
}

/// A binary ready to go into bottles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub path: PathBuf,
    /// What `claude --version` printed, first word.
    pub version: String,
}

impl Pin {
    /// The pin in `path` when it exists, the built-in one otherwise.
    pub fn load(path: &Path) -> Result<Pin, BackendError> {
        // A pin names what this user runs: no one else may have written it.
        if path.exists() {
            crate::state::check_owned(path)?;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Pin::parse(&text).map_err(|e| {
                claude_error(format!(
                    "{}: {e}; remove it to use the pin bot-bottle ships",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Pin::builtin(),
            Err(source) => Err(BackendError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn builtin() -> Result<Pin, BackendError> {
        Pin::parse(BUILTIN_PIN).map_err(|e| claude_error(format!("the pin bot-bottle ships: {e}")))
    }

    pub fn parse(text: &str) -> Result<Pin, String> {
        let pin: Pin = serde_json::from_str(text).map_err(|e| format!("not a pin: {e}"))?;
        for (arch, wheel) in &pin.wheels {
            if !wheel.url.starts_with("https://") {
                return Err(format!("the {arch} wheel's url is not https"));
            }
            if wheel.sha256.len() != 64 || !wheel.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("the {arch} wheel's sha256 is not 64 hex digits"));
            }
        }
        if pin.claude.is_empty()
            || !pin
                .claude
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
            || pin.claude.starts_with('.')
        {
            return Err(format!("{:?} is not a version", pin.claude));
        }
        Ok(pin)
    }

    /// This machine's wheel.
    pub fn wheel(&self) -> Result<&Wheel, BackendError> {
        let arch = std::env::consts::ARCH;
        self.wheels.get(arch).ok_or_else(|| {
            claude_error(format!(
                "the pin of {} {} has no wheel for {arch}: {ALTERNATIVES}",
                self.package, self.version
            ))
        })
    }

    /// Where the binary of this pin is kept under `cache`.
    pub fn cached(&self, cache: &Path) -> Result<PathBuf, BackendError> {
        let wheel = self.wheel()?;
        Ok(cache
            .join("claude")
            .join(format!("{}-{}", self.claude, &wheel.sha256[..12]))
            .join("claude"))
    }

    /// A name for what this pin installs, for image tags and the log.
    pub fn tag(&self) -> Result<String, BackendError> {
        Ok(format!("{}-{}", self.claude, &self.wheel()?.sha256[..12]))
    }
}

fn claude_error(message: String) -> BackendError {
    BackendError::Claude(message)
}

impl Install {
    /// The binary bottles get, fetching the pinned one when it is not in
    /// the cache yet. `None` when bottles get none from the host (npm or
    /// skipped).
    pub async fn ensure(&self, reporter: &dyn Reporter) -> Result<Option<Installed>, BackendError> {
        match self {
            Install::Skip | Install::Npm => Ok(None),
            Install::Binary(path) => {
                crate::state::check_owned(path)?;
                let version = version_of(path).await.map_err(|e| {
                    claude_error(format!(
                        "BOTTLE_CLAUDE_BIN={}: {e}; point it at a claude binary for Linux, or unset it",
                        path.display()
                    ))
                })?;
                Ok(Some(Installed {
                    path: path.clone(),
                    version,
                }))
            }
            Install::Pinned { pin, cache } => ensure_pinned(pin, cache, reporter).await.map(Some),
        }
    }
}

/// The cached binary of `pin`, fetched and checked first if it is not
/// there (or no longer what was checked).
pub async fn ensure_pinned(
    pin: &Pin,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Installed, BackendError> {
    let path = pin.cached(cache)?;
    let dir = owned_dir(path.parent().unwrap_or(cache))?;
    if let Some(installed) = verified(&path, false, reporter).await? {
        return Ok(installed);
    }
    // One fetch at a time into a directory; the one that waited finds
    // the binary there.
    let locked = lock(&dir).await?;
    if let Some(installed) = verified(&path, true, reporter).await? {
        return Ok(installed);
    }
    let wheel = pin.wheel()?;
    reporter.step(&format!(
        "fetching Claude Code {} ({} {} from PyPI, {} MiB, once into {})",
        pin.claude,
        pin.package,
        pin.version,
        wheel.size >> 20,
        cache.display()
    ));
    let failed = |e: String| {
        claude_error(format!(
            "Claude Code {} could not be installed: {e}; {ALTERNATIVES}",
            pin.claude
        ))
    };
    let taken = fetch_and_check(pin, wheel, &dir, reporter)
        .await
        .map_err(failed)?;
    let installed = taken.place(&path).map_err(failed)?;
    drop(locked);
    reporter.step(&format!(
        "Claude Code {} is in {}",
        installed.version,
        path.display()
    ));
    Ok(installed)
}

/// `dir`, made if need be, and no one's but this user's (or root's) to
/// change, from `/` down: a binary kept there is run by this user and
/// copied into every bottle.
fn owned_dir(dir: &Path) -> Result<PathBuf, BackendError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| BackendError::Io {
            path: dir.to_owned(),
            source,
        })?;
    crate::state::check_owned(dir)?;
    Ok(dir.to_owned())
}

/// Holds `dir/.lock` until dropped; leftovers of a fetch that was cut
/// short (no fetch runs while the lock is held) are removed.
async fn lock(dir: &Path) -> Result<std::fs::File, BackendError> {
    let file = crate::state::open_lock(&dir.join(".lock"))?;
    let locked = crate::state::locked(file).await?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".wheel.") || name.starts_with(".claude.") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(locked)
}

/// What was checked of a kept binary: its SHA-256 and version, and the
/// file's identity then (a file whose identity changed is hashed again).
#[derive(Debug, Serialize, Deserialize)]
struct Checked {
    sha256: String,
    version: String,
    fingerprint: String,
}

fn checked_path(binary: &Path) -> PathBuf {
    binary.with_extension("checked")
}

/// The binary at `path` when it is still what was checked: by its
/// identity, or else by hashing it again. A binary that is not (changed,
/// cut short, no record) is removed, to be fetched again.
/// Only `repair` (under the directory's lock) removes anything: another
/// fetch may be placing a binary and its record at this moment.
async fn verified(
    path: &Path,
    repair: bool,
    reporter: &dyn Reporter,
) -> Result<Option<Installed>, BackendError> {
    let remove = |path: &Path| {
        if repair {
            let _ = std::fs::remove_file(path);
        }
    };
    let record = checked_path(path);
    let (Ok(text), Ok(now)) = (
        std::fs::read_to_string(&record),
        crate::state::file_identity(path),
    ) else {
        remove(path);
        return Ok(None);
    };
    let Ok(checked) = serde_json::from_str::<Checked>(&text) else {
        remove(path);
        return Ok(None);
    };
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        remove(path);
        return Ok(None);
    }
    if now != checked.fingerprint {
        let (file, want) = (path.to_owned(), checked.sha256.clone());
        let same = tokio::task::spawn_blocking(move || hash_file(&file).is_ok_and(|h| h == want))
            .await
            .unwrap_or(false);
        if !same {
            if !repair {
                return Ok(None);
            }
            reporter.step(&format!(
                "{} is not the Claude Code that was checked: fetching it again",
                path.display()
            ));
            remove(path);
            return Ok(None);
        }
        let renewed = Checked {
            fingerprint: now,
            ..checked
        };
        let _ = write_new(&record, &serde_json::to_vec(&renewed).unwrap_or_default());
        return Ok(Some(Installed {
            path: path.to_owned(),
            version: renewed.version,
        }));
    }
    Ok(Some(Installed {
        path: path.to_owned(),
        version: checked.version,
    }))
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hash = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hash)?;
    Ok(fetch::hex(&hash.finalize()))
}

/// Writes `path` through a new file beside it, renamed into place.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let staging = unique(path.parent().unwrap_or(Path::new(".")), ".claude.");
    let mut file = create_new(&staging, 0o644)?;
    std::io::Write::write_all(&mut file, bytes)?;
    std::fs::rename(&staging, path)
}

/// A name in `dir` no one else uses: this process's id and the time.
fn unique(dir: &Path, prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    dir.join(format!("{prefix}{}.{nanos}", std::process::id()))
}

/// A file made now, never one that was there (nor a link's target).
fn create_new(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// A binary taken out of a checked wheel, not yet in its place.
struct Taken {
    binary: PathBuf,
    sha256: String,
    version: String,
}

impl Taken {
    /// Moves the binary to `path` with the record of what was checked.
    fn place(self, path: &Path) -> Result<Installed, String> {
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        std::fs::rename(&self.binary, path).map_err(io)?;
        let checked = Checked {
            sha256: self.sha256.clone(),
            version: self.version.clone(),
            fingerprint: crate::state::file_identity(path).map_err(io)?,
        };
        write_new(
            &checked_path(path),
            &serde_json::to_vec(&checked).map_err(|e| e.to_string())?,
        )
        .map_err(io)?;
        Ok(Installed {
            path: path.to_owned(),
            version: self.version.clone(),
        })
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        // Placed, it is gone from here; not placed, it must not stay.
        let _ = std::fs::remove_file(&self.binary);
    }
}

/// Fetches `wheel` into `dir`, checks it against the pin, takes the
/// binary out beside it and runs it. A pin whose `claude` is empty (a new
/// one, from the index) takes the version the wheel names.
async fn fetch_and_check(
    pin: &Pin,
    wheel: &Wheel,
    dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Taken, String> {
    let partial = unique(dir, ".wheel.");
    let fetched = download_wheel(wheel, &partial, reporter).await;
    let result = match fetched {
        Ok(()) => take_and_check(pin, &partial, dir).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&partial);
    result
}

async fn download_wheel(
    wheel: &Wheel,
    partial: &Path,
    reporter: &dyn Reporter,
) -> Result<(), String> {
    let mut shown = 0;
    let fetched = fetch::download(&wheel.url, partial, wheel.size, |done| {
        let quarter = (done * 4 / wheel.size.max(1)).min(4);
        if quarter > shown {
            shown = quarter;
            reporter.step(&format!(
                "  {}% ({} of {} MiB)",
                quarter * 25,
                done >> 20,
                wheel.size >> 20
            ));
        }
    })
    .await?;
    if fetched != wheel.sha256 {
        return Err(format!(
            "{} has sha256 {}, the pin says {}: not installed",
            wheel.url, fetched, wheel.sha256
        ));
    }
    Ok(())
}

async fn take_and_check(pin: &Pin, wheel: &Path, dir: &Path) -> Result<Taken, String> {
    let binary = unique(dir, ".claude.");
    let (said, sha256) = {
        let (wheel, binary) = (wheel.to_owned(), binary.clone());
        tokio::task::spawn_blocking(move || take_binary(&wheel, &binary))
            .await
            .map_err(|e| e.to_string())?
    }
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&binary);
    })?;
    let taken = Taken {
        binary,
        sha256,
        version: String::new(),
    };
    // "2.1.332 (Claude Code)": the version is the first word.
    let said = said
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    if !pin.claude.is_empty() && said != pin.claude {
        return Err(format!(
            "the wheel says its binary is {said:?}, the pin says {}",
            pin.claude
        ));
    }
    valid_version(&said)?;
    let version = version_of(&taken.binary).await?;
    if version != said {
        return Err(format!(
            "the binary reports {version}, the wheel says {said}"
        ));
    }
    let mut taken = taken;
    taken.version = version;
    Ok(taken)
}

/// A version fit for a path and an image tag.
fn valid_version(version: &str) -> Result<(), String> {
    let fits = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && version.as_bytes()[0].is_ascii_alphanumeric();
    if fits {
        Ok(())
    } else {
        Err(format!("{version:?} is not a version"))
    }
}

/// A pin of `package` at `version` (the newest release with Linux wheels
/// when `None`) from the PEP 691 index at `index`, its binary fetched,
/// checked and cached under `cache`.
pub async fn pin_from_index(
    index: &str,
    package: &str,
    version: Option<&str>,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Pin, BackendError> {
    let url = format!("{}/{package}/", index.trim_end_matches('/'));
    let page = fetch::text(&url, "application/vnd.pypi.simple.v1+json", 16 << 20)
        .await
        .map_err(claude_error)?;
    let mut pin =
        pin_in_page(&page, package, version).map_err(|e| claude_error(format!("{url}: {e}")))?;
    let wheel = pin.wheel()?.clone();
    let dir = owned_dir(&cache.join("claude"))?;
    let locked = lock(&dir).await?;
    reporter.step(&format!(
        "fetching {package} {} from {index} ({} MiB)",
        pin.version,
        wheel.size >> 20
    ));
    let taken = fetch_and_check(&pin, &wheel, &dir, reporter)
        .await
        .map_err(claude_error)?;
    pin.claude = taken.version.clone();
    // What is written is what a later start reads back: the same checks.
    let text = serde_json::to_string(&pin).map_err(|e| claude_error(e.to_string()))?;
    let pin = Pin::parse(&text).map_err(|e| claude_error(format!("{url}: {e}")))?;
    let path = pin.cached(cache)?;
    owned_dir(path.parent().unwrap_or(cache))?;
    taken.place(&path).map_err(claude_error)?;
    drop(locked);
    Ok(pin)
}

/// The pin a PEP 691 index page offers for `version` (or the newest
/// release with a Linux wheel); its `claude` is left empty, to be read
/// from the wheel.
fn pin_in_page(page: &str, package: &str, version: Option<&str>) -> Result<Pin, String> {
    #[derive(Deserialize)]
    struct Page {
        files: Vec<File>,
    }
    #[derive(Deserialize)]
    struct File {
        filename: String,
        url: String,
        hashes: BTreeMap<String, String>,
        #[serde(default)]
        size: u64,
        #[serde(default)]
        yanked: serde_json::Value,
    }
    let page: Page =
        serde_json::from_str(page).map_err(|e| format!("not a package index page: {e}"))?;
    let stem = package.replace('-', "_");
    let mut releases: BTreeMap<Vec<u64>, (String, BTreeMap<String, Wheel>)> = BTreeMap::new();
    for file in page.files {
        if file.yanked != serde_json::Value::Bool(false) && !file.yanked.is_null() {
            continue;
        }
        let Some(rest) = file.filename.strip_prefix(&format!("{stem}-")) else {
            continue;
        };
        let Some((release, tags)) = rest.split_once('-') else {
            continue;
        };
        let Some(arch) = ["x86_64", "aarch64"]
            .into_iter()
            .find(|arch| tags.ends_with(&format!("manylinux_2_17_{arch}.whl")))
        else {
            continue;
        };
        // Final releases only: a pre-release is never picked by itself.
        let Ok(key) = release
            .split('.')
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()
        else {
            continue;
        };
        let Some(sha256) = file.hashes.get("sha256") else {
            continue;
        };
        let entry = releases
            .entry(key)
            .or_insert_with(|| (release.to_owned(), BTreeMap::new()));
        entry.1.insert(
            arch.to_owned(),
            Wheel {
                url: file.url,
                sha256: sha256.clone(),
                size: file.size,
            },
        );
    }
    let (release, wheels) = match version {
        Some(wanted) => releases
            .into_values()
            .find(|(release, _)| release == wanted)
            .ok_or_else(|| format!("no release {wanted} with a Linux wheel"))?,
        None => releases
            .into_values()
            .next_back()
            .ok_or_else(|| "no release with a Linux wheel".to_owned())?,
    };
    let pin = Pin {
        package: package.to_owned(),
        version: release,
        claude: String::new(),
        wheels,
    };
    Ok(pin)
}

/// Largest binary taken out of a wheel (the one pinned is 384 MiB).
const MAX_BINARY: u64 = 2 << 30;

/// Takes the binary out of the wheel at `wheel` into the new file `to`
/// (mode 0755); returns the version the wheel names for it and the
/// binary's SHA-256.
fn take_binary(wheel: &Path, to: &Path) -> Result<(String, String), String> {
    use sha2::Digest;
    let file = std::fs::File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("the wheel: {e}"))?;
    let mut said = String::new();
    zip.by_name(WHEEL_VERSION)
        .map_err(|e| format!("the wheel has no {WHEEL_VERSION}: {e}"))?
        .take(256)
        .read_to_string(&mut said)
        .map_err(|e| format!("{WHEEL_VERSION}: {e}"))?;
    let entry = zip
        .by_name(WHEEL_BINARY)
        .map_err(|e| format!("the wheel has no {WHEEL_BINARY}: {e}"))?;
    let mut out = create_new(to, 0o755).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut hash = sha2::Sha256::new();
    let mut limited = entry.take(MAX_BINARY + 1);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = limited
            .read(&mut buf)
            .map_err(|e| format!("{WHEEL_BINARY}: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_BINARY {
            return Err(format!(
                "{WHEEL_BINARY} is larger than {} MiB",
                MAX_BINARY >> 20
            ));
        }
        hash.update(&buf[..n]);
        std::io::Write::write_all(&mut out, &buf[..n])
            .map_err(|e| format!("{}: {e}", to.display()))?;
    }
    out.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", to.display()))?;
    out.sync_all()
        .map_err(|e| format!("{}: {e}", to.display()))?;
    Ok((said, fetch::hex(&hash.finalize())))
}

/// The version `path --version` prints (its first word), run with no
/// environment but `PATH` and `HOME` so that nothing of the host's
/// configuration is read and nothing is updated.
pub async fn version_of(path: &Path) -> Result<String, String> {
    if !is_executable_file(path) {
        return Err("not an executable file".to_owned());
    }
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let run = tokio::process::Command::new(path)
        .arg("--version")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        .env("DISABLE_AUTOUPDATER", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(VERSION_TIMEOUT, run)
        .await
        .map_err(|_| format!("--version gave no answer in {}s", VERSION_TIMEOUT.as_secs()))?
        .map_err(|e| format!("it does not run here: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "--version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| "--version printed nothing".to_owned())
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shipped_pin_parses_and_names_a_wheel_here() {
        let pin = Pin::parse(BUILTIN_PIN).unwrap();
        assert_eq!(pin, Pin::builtin().unwrap());
        assert_eq!(pin.package, "claude-agent-sdk");
        let wheel = pin.wheel().unwrap();
        assert!(wheel.url.ends_with(".whl") && wheel.size > 0);
        let cached = pin.cached(Path::new("/c")).unwrap();
        assert!(cached.starts_with("/c/claude/") && cached.ends_with("claude"));
    }

    #[test]
    fn a_pin_that_could_mislead_is_refused() {
        let mut pin: serde_json::Value = serde_json::from_str(BUILTIN_PIN).unwrap();
        pin["wheels"]["x86_64"]["url"] = "http://plain.example/a.whl".into();
        assert!(
            Pin::parse(&pin.to_string())
                .unwrap_err()
                .contains("not https")
        );
        let mut pin: serde_json::Value = serde_json::from_str(BUILTIN_PIN).unwrap();
        pin["wheels"]["x86_64"]["sha256"] = "abc".into();
        assert!(Pin::parse(&pin.to_string()).unwrap_err().contains("64 hex"));
        let mut pin: serde_json::Value = serde_json::from_str(BUILTIN_PIN).unwrap();
        pin["claude"] = "../../etc".into();
        assert!(
            Pin::parse(&pin.to_string())
                .unwrap_err()
                .contains("not a version")
        );
        assert!(Pin::parse("{}").unwrap_err().contains("not a pin"));
    }

    #[test]
    fn a_wheel_without_the_binary_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file(WHEEL_VERSION, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, b"9.9.9\n").unwrap();
        zip.finish().unwrap();
        let err = take_binary(&wheel, &dir.path().join("claude")).unwrap_err();
        assert!(!dir.path().join("claude").exists() || err.contains(WHEEL_BINARY));
        assert!(err.contains(WHEEL_BINARY), "{err}");
    }

    #[test]
    fn the_index_gives_the_newest_final_release_with_linux_wheels() {
        let file = |name: &str, yanked: bool| {
            serde_json::json!({
                "filename": name, "url": format!("https://files.example/{name}"),
                "hashes": {"sha256": "ab".repeat(32)}, "size": 10, "yanked": yanked,
            })
        };
        let page = serde_json::json!({"files": [
            file("claude_agent_sdk-0.2.9-py3-none-manylinux_2_17_x86_64.whl", false),
            file("claude_agent_sdk-0.2.10-py3-none-manylinux_2_17_x86_64.whl", false),
            file("claude_agent_sdk-0.2.10-py3-none-manylinux_2_17_aarch64.whl", false),
            file("claude_agent_sdk-0.2.10.tar.gz", false),
            file("claude_agent_sdk-0.2.11rc1-py3-none-manylinux_2_17_x86_64.whl", false),
            file("claude_agent_sdk-0.2.12-py3-none-manylinux_2_17_x86_64.whl", true),
            file("claude_agent_sdk-0.2.12-py3-none-win_amd64.whl", false),
        ]})
        .to_string();
        let pin = pin_in_page(&page, "claude-agent-sdk", None).unwrap();
        assert_eq!(pin.version, "0.2.10");
        assert_eq!(pin.wheels.len(), 2);
        let pin = pin_in_page(&page, "claude-agent-sdk", Some("0.2.9")).unwrap();
        assert_eq!(
            pin.wheels["x86_64"].url,
            "https://files.example/claude_agent_sdk-0.2.9-py3-none-manylinux_2_17_x86_64.whl"
        );
        assert!(pin_in_page(&page, "claude-agent-sdk", Some("0.2.12")).is_err());
    }

    struct Quiet;
    impl Reporter for Quiet {
        fn step(&self, _: &str) {}
        fn detail(&self, _: &str) {}
    }

    #[test]
    fn a_cache_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = owned_dir(&open.join("claude")).unwrap_err().to_string();
        assert!(err.contains("others may write"), "{err}");
        assert!(owned_dir(&dir.path().join("mine/claude")).is_ok());
    }

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "kept").unwrap();
        let link = dir.path().join(".claude.planted");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new(&link, 0o755).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "kept");
    }

    #[tokio::test]
    async fn a_kept_binary_that_changed_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claude");
        let staged = dir.path().join(".claude.x");
        std::fs::write(&staged, "#!/bin/sh\necho 1.2.3\n").unwrap();
        let taken = Taken {
            binary: staged.clone(),
            sha256: hash_file(&staged).unwrap(),
            version: "1.2.3".into(),
        };
        taken.place(&path).unwrap();
        assert!(!staged.exists());
        let kept = verified(&path, true, &Quiet).await.unwrap().unwrap();
        assert_eq!(kept.version, "1.2.3");
        // Same size, other bytes: found by hashing again, and removed.
        std::fs::write(&path, "#!/bin/sh\necho 6.6.6\n").unwrap();
        assert!(verified(&path, false, &Quiet).await.unwrap().is_none());
        assert!(path.exists(), "only a repair removes");
        assert!(verified(&path, true, &Quiet).await.unwrap().is_none());
        assert!(!path.exists());
        // No record of a check: not used.
        std::fs::write(&path, "x").unwrap();
        std::fs::remove_file(checked_path(&path)).unwrap();
        assert!(verified(&path, true, &Quiet).await.unwrap().is_none());
    }

    #[test]
    fn versions_fit_a_path_and_a_tag() {
        for good in ["2.1.332", "1.0.0-beta_2"] {
            assert!(valid_version(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "-1", ".1", "1/2", "1+2", "a b"] {
            assert!(valid_version(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_binary_that_is_not_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claude");
        std::fs::write(&path, "not a program").unwrap();
        assert!(
            version_of(&path)
                .await
                .unwrap_err()
                .contains("not an executable")
        );
        std::fs::write(&path, "#!/bin/sh\necho 1.2.3 '(Claude Code)'\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(version_of(&path).await.unwrap(), "1.2.3");
    }
}
