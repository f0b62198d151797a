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
/// there.
pub async fn ensure_pinned(
    pin: &Pin,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Installed, BackendError> {
    let path = pin.cached(cache)?;
    if is_executable_file(&path) {
        return Ok(Installed {
            path,
            version: pin.claude.clone(),
        });
    }
    let wheel = pin.wheel()?;
    let dir = path.parent().unwrap_or(cache).to_owned();
    fs_err::create_dir_all(&dir)?;
    let partial = dir.join(format!(".wheel.{}", std::process::id()));
    reporter.step(&format!(
        "fetching Claude Code {} ({} {} from PyPI, {} MiB, once into {})",
        pin.claude,
        pin.package,
        pin.version,
        wheel.size >> 20,
        cache.display()
    ));
    let result = fetch_and_check(pin, wheel, &partial, reporter).await;
    let _ = std::fs::remove_file(&partial);
    let failed = |e: String| {
        claude_error(format!(
            "Claude Code {} could not be installed: {e}; {ALTERNATIVES}",
            pin.claude
        ))
    };
    let (binary, version) = result.map_err(failed)?;
    std::fs::rename(&binary, &path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    reporter.step(&format!("Claude Code {version} is in {}", path.display()));
    Ok(Installed { path, version })
}

/// Fetches `wheel` into `partial`, checks it against the pin, takes the
/// binary out beside it and runs it; returns the binary's path and the
/// version it reports. A pin whose `claude` is empty (a new one, from the
/// index) takes the version the wheel names.
async fn fetch_and_check(
    pin: &Pin,
    wheel: &Wheel,
    partial: &Path,
    reporter: &dyn Reporter,
) -> Result<(PathBuf, String), String> {
    let mut shown = 0;
    let fetched = fetch::download(&wheel.url, partial, None, |done, total| {
        let total = total.unwrap_or(wheel.size).max(1);
        let quarter = (done * 4 / total).min(4);
        if quarter > shown {
            shown = quarter;
            reporter.step(&format!(
                "  {}% ({} of {} MiB)",
                quarter * 25,
                done >> 20,
                total >> 20
            ));
        }
    })
    .await?;
    if fetched.sha256 != wheel.sha256 {
        return Err(format!(
            "{} has sha256 {}, the pin says {}: not installed",
            wheel.url, fetched.sha256, wheel.sha256
        ));
    }
    let binary = partial.with_extension("claude");
    let taken = {
        let (partial, binary) = (partial.to_owned(), binary.clone());
        tokio::task::spawn_blocking(move || take_binary(&partial, &binary))
            .await
            .map_err(|e| e.to_string())?
    };
    let checked = async {
        // "2.1.332 (Claude Code)": the version is the first word.
        let said = taken?
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
        let version = version_of(&binary).await?;
        if version != said {
            return Err(format!(
                "the binary reports {version}, the wheel says {said}"
            ));
        }
        Ok(version)
    };
    match checked.await {
        Ok(version) => Ok((binary, version)),
        Err(e) => {
            let _ = std::fs::remove_file(&binary);
            Err(e)
        }
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
    let dir = cache.join("claude");
    fs_err::create_dir_all(&dir)?;
    let partial = dir.join(format!(".wheel.{}", std::process::id()));
    reporter.step(&format!(
        "fetching {package} {} from {index} ({} MiB)",
        pin.version,
        wheel.size >> 20
    ));
    let result = fetch_and_check(&pin, &wheel, &partial, reporter).await;
    let _ = std::fs::remove_file(&partial);
    let (binary, claude) = result.map_err(claude_error)?;
    pin.claude = claude;
    let path = pin.cached(cache)?;
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    std::fs::rename(&binary, &path).map_err(|source| BackendError::Io {
        path: path.clone(),
        source,
    })?;
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

/// Takes the binary out of the wheel at `wheel` into `to` (mode 0755);
/// returns the version the wheel names for it.
fn take_binary(wheel: &Path, to: &Path) -> Result<String, String> {
    let file = std::fs::File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("the wheel: {e}"))?;
    let mut said = String::new();
    zip.by_name(WHEEL_VERSION)
        .map_err(|e| format!("the wheel has no {WHEEL_VERSION}: {e}"))?
        .take(256)
        .read_to_string(&mut said)
        .map_err(|e| format!("{WHEEL_VERSION}: {e}"))?;
    let mut entry = zip
        .by_name(WHEEL_BINARY)
        .map_err(|e| format!("the wheel has no {WHEEL_BINARY}: {e}"))?;
    let mut out = std::fs::File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| format!("{WHEEL_BINARY}: {e}"))?;
    out.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", to.display()))?;
    out.sync_all()
        .map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(said)
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
