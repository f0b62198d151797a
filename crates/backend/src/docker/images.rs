//! The gate and agent images: built from the base image with this very
//! binary copied in, and rebuilt only when their inputs change.
//!
//! Each image carries the label `bot-bottle.inputs`, a hash of everything
//! it was built from (Dockerfile, build arguments, the base image's id and
//! the binary's identity). A start whose inputs hash matches reuses the
//! image; anything else rebuilds it. Builds of the same image by bottles
//! started at the same moment are serialised by a lock file.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::{BackendError, Reporter};

/// Label holding the hash of an image's inputs.
pub const INPUTS_LABEL: &str = "bot-bottle.inputs";
/// Label marking everything bot-bottle builds.
pub const MANAGED_LABEL: &str = "bot-bottle.managed";

const GATE_DOCKERFILE: &str = include_str!("../../../../images/gate/Dockerfile");
const AGENT_DOCKERFILE: &str = include_str!("../../../../images/agent/Dockerfile");
/// Files of the agent's build context besides the Dockerfile and binary.
const AGENT_FILES: &[(&str, &str)] = &[("node-proxy.cjs", crate::sandbox::NODE_PROXY_JS)];

/// Which image to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Gate,
    Agent,
    /// A person's own agent image, with the binary layered on top.
    Derived,
    /// A bottle's own image: its agent image plus the image changes a
    /// person approved (a capability block), with bot-bottle's files laid
    /// back on top so no fragment can replace them.
    Bottle,
}

/// One image to ensure.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub kind: ImageKind,
    /// Tag to build.
    pub tag: String,
    /// The image it is built `FROM`.
    pub from: String,
    pub build_args: Vec<(String, String)>,
    /// [`ImageKind::Bottle`]: the approved Dockerfile instructions, all
    /// of them (for the Dockerfile on record and the inputs' hash).
    pub fragment: Option<String>,
    /// [`ImageKind::Bottle`]: each approved change, in order, and the
    /// policy the build runs under.
    pub gated: Option<(Vec<String>, super::build::BuildPolicy)>,
    /// Extra labels (a bottle's image carries its identity).
    pub labels: Vec<(String, String)>,
    /// How Claude Code comes into an agent image.
    pub claude: ClaudeLayer,
}

/// How Claude Code comes into an agent image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaudeLayer {
    /// Copied from the image `tag` (built once from the host's binary: see
    /// [`ensure_claude`]), named by its `id` once known, so that a build
    /// never looks for it in a registry.
    Image { tag: String, id: Option<String> },
    /// Installed from the npm registry while the image builds; a registry
    /// that does not answer fails the build.
    Npm,
    /// Not installed.
    None,
}

/// Where an agent image has Claude Code.
pub const CLAUDE_PATH: &str = "/usr/local/bin/claude";
/// The line of the agent's Dockerfile that [`ClaudeLayer`] replaces.
const CLAUDE_MARK: &str = "#@claude@";

impl ClaudeLayer {
    fn dockerfile_line(&self) -> String {
        match self {
            ClaudeLayer::Image { tag, id } => {
                format!("COPY --from={} /claude {CLAUDE_PATH}", id.as_ref().unwrap_or(tag))
            }
            ClaudeLayer::Npm => "RUN apt-get update && apt-get install -y --no-install-recommends npm && npm install -g @anthropic-ai/claude-code && rm -rf /var/lib/apt/lists/* /root/.npm".to_owned(),
            ClaudeLayer::None => "# Claude Code not installed (BOTTLE_INSTALL_CLAUDE=0)".to_owned(),
        }
    }
}

/// How the Dockerfile on record names bot-bottle's own files laid over a
/// bottle's image (the build itself copies them in: see `build`).
const OVERLAY: &str = "overlay";

impl ImageSpec {
    /// An image of `kind` tagged `tag`, built from `from`, with no build
    /// arguments, fragment or extra labels.
    pub fn new(kind: ImageKind, tag: impl Into<String>, from: impl Into<String>) -> ImageSpec {
        ImageSpec {
            kind,
            tag: tag.into(),
            from: from.into(),
            build_args: Vec::new(),
            fragment: None,
            gated: None,
            labels: Vec::new(),
            claude: ClaudeLayer::None,
        }
    }

    pub(crate) fn dockerfile(&self) -> String {
        match self.kind {
            ImageKind::Gate => GATE_DOCKERFILE.to_owned(),
            ImageKind::Agent => {
                AGENT_DOCKERFILE.replace(CLAUDE_MARK, &self.claude.dockerfile_line())
            }
            ImageKind::Derived => format!(
                "FROM {}\nUSER root\n{}\nCOPY node-proxy.cjs /usr/local/lib/bot-bottle/node-proxy.cjs\n\
                 COPY bottle /usr/local/bin/bottle\n\
                 RUN mkdir -p /run/bottle /workspace && /usr/local/bin/bottle prepare-trust\n",
                self.from,
                self.claude.dockerfile_line()
            ),
            // The fragment runs as root; bot-bottle's files come back on
            // top after it, so no fragment can replace the shim, and the
            // trust stores are prepared again (a fragment may rewrite them).
            ImageKind::Bottle => format!(
                "FROM {}\nUSER root\n{}\nCOPY {OVERLAY}/ /\nRUN /usr/local/bin/bottle prepare-trust\n",
                self.from,
                self.fragment.as_deref().unwrap_or_default()
            ),
        }
    }

    fn files(&self) -> &'static [(&'static str, &'static str)] {
        match self.kind {
            ImageKind::Gate => &[],
            ImageKind::Agent | ImageKind::Derived | ImageKind::Bottle => AGENT_FILES,
        }
    }
}

/// The running binary, which every image carries.
#[derive(Debug, Clone)]
pub struct SelfBinary {
    pub path: PathBuf,
    /// Size, modification time and inode: enough to notice a rebuild
    /// without hashing megabytes on every start.
    fingerprint: String,
}

impl SelfBinary {
    pub fn current() -> Result<SelfBinary, BackendError> {
        let path = std::env::current_exe()?;
        let fingerprint =
            crate::state::file_identity(&path).map_err(|source| BackendError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(SelfBinary { fingerprint, path })
    }
}

/// The hash of an image's inputs.
fn inputs_hash(spec: &ImageSpec, from_id: &str, binary: &SelfBinary) -> String {
    let mut h = Sha256::new();
    for part in [spec.dockerfile().as_str(), from_id, &binary.fingerprint] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (name, contents) in spec.files() {
        h.update(format!("{name}\0{contents}\0").as_bytes());
    }
    for (k, v) in &spec.build_args {
        h.update(format!("{k}={v}\0").as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of `image`, or `None` when it does not exist.
pub async fn image_id(
    docker: &Docker,
    image: &str,
) -> Result<Option<(String, HashMap<String, String>)>, BackendError> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(Some((
            inspect.id.unwrap_or_default(),
            inspect.config.and_then(|c| c.labels).unwrap_or_default(),
        ))),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(BackendError::docker(format!("inspect image {image}"), err)),
    }
}

/// Makes sure `spec.tag` exists and is up to date; builds it if not.
pub async fn ensure(
    docker: &Docker,
    spec: &ImageSpec,
    binary: &SelfBinary,
    lock_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<(), BackendError> {
    let from_id = match image_id(docker, &spec.from).await? {
        Some((id, _)) => id,
        None if matches!(spec.kind, ImageKind::Derived | ImageKind::Bottle) => {
            return Err(BackendError::ImageMissing {
                image: spec.from.clone(),
            });
        }
        None => {
            return Err(BackendError::BaseImageMissing {
                image: spec.from.clone(),
            });
        }
    };
    let want = inputs_hash(spec, &from_id, binary);
    let current = |labels: &HashMap<String, String>| labels.get(INPUTS_LABEL) == Some(&want);
    if let Some((_, labels)) = image_id(docker, &spec.tag).await?
        && current(&labels)
    {
        return Ok(());
    }

    // Another launcher may be building the same image right now.
    let lock = lock_file(lock_dir, &spec.tag)?;
    let locked = crate::state::locked(lock).await?;
    if let Some((_, labels)) = image_id(docker, &spec.tag).await?
        && current(&labels)
    {
        return Ok(());
    }
    let result = match (&spec.kind, &spec.gated) {
        (ImageKind::Bottle, Some((fragments, policy))) => {
            reporter.step(&format!(
                "building {} inside the bottle's policy ({} approved change{})",
                spec.tag,
                fragments.len(),
                if fragments.len() == 1 { "" } else { "s" }
            ));
            let labels = super::build::image_labels(&want, &spec.labels);
            let wanted = super::build::Wanted {
                from: &spec.from,
                fragments,
                tag: &spec.tag,
                labels: &labels,
            };
            super::build::build(docker, policy, wanted, binary, reporter).await
        }
        (ImageKind::Bottle, None) => Err(BackendError::Build {
            image: spec.tag.clone(),
            message: "a bottle's own image is built only under the bottle's policy".into(),
            log: String::new(),
        }),
        _ => {
            reporter.step(&format!(
                "building {} (once; reused until bot-bottle or the base changes)",
                spec.tag
            ));
            build(docker, spec, &want, binary, reporter).await
        }
    };
    drop(locked);
    result
}

fn lock_file(dir: &Path, tag: &str) -> Result<std::fs::File, BackendError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| BackendError::Io {
        path: dir.to_owned(),
        source,
    };
    // The directory is in the shared temporary directory, where another
    // user may have made it first (or a link by its name, or a link
    // inside to a file of yours): it must be a directory, no link, that
    // no one else can change, and the lock is never opened through a link.
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
        _ => {}
    }
    if !std::fs::symlink_metadata(dir).map_err(io)?.is_dir() {
        return Err(BackendError::Other(std::io::Error::other(format!(
            "{}: the image builds' lock directory is not a directory; remove it, or set TMPDIR to a directory of your own",
            dir.display()
        ))));
    }
    crate::state::check_owned(dir)?;
    let name: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    crate::state::open_lock(&dir.join(format!(".build-{name}.lock")))
}

async fn build(
    docker: &Docker,
    spec: &ImageSpec,
    inputs: &str,
    binary: &SelfBinary,
    reporter: &dyn Reporter,
) -> Result<(), BackendError> {
    let context = build_context(
        &with_labels(&spec.dockerfile(), inputs, &spec.labels),
        spec.files(),
        &binary.path,
    )?;
    let mut build_args: HashMap<String, String> = spec.build_args.iter().cloned().collect();
    build_args.insert("BASE".into(), spec.from.clone());
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(spec.tag.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(build_args),
        ..Default::default()
    };
    let stream = docker.build_image(options, None, Some(bollard::body_full(context)));
    follow_build(stream, &spec.tag, reporter).await
}

/// Runs one build, reporting its steps; its error carries the log's tail.
async fn follow_build(
    stream: impl futures_util::Stream<Item = Result<bollard::models::BuildInfo, bollard::errors::Error>>,
    tag: &str,
    reporter: &dyn Reporter,
) -> Result<(), BackendError> {
    let mut log = String::new();
    let mut pending = String::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|err| BackendError::Build {
            image: tag.to_owned(),
            message: err.to_string(),
            log: tail(&log),
        })?;
        if let Some(detail) = info.error_detail {
            return Err(BackendError::Build {
                image: tag.to_owned(),
                message: detail.message.unwrap_or_default(),
                log: tail(&log),
            });
        }
        if let Some(text) = info.stream {
            log.push_str(&text);
            pending.push_str(&text);
            // The engine streams arbitrary fragments: report whole lines.
            while let Some(end) = pending.find('\n') {
                let line = strip_ansi(&pending[..end]);
                pending.drain(..=end);
                if line.trim().is_empty() {
                    continue;
                }
                if line.starts_with("Step ") {
                    reporter.step(&format!("  {line}"));
                } else {
                    reporter.detail(&format!("  {line}"));
                }
            }
        }
    }
    Ok(())
}

/// `dockerfile` ending with one `LABEL` step for every label. (The engine
/// turns the build's `labels` option into a step per label, and each step
/// is a layer commit that costs seconds on some engines.)
fn with_labels(dockerfile: &str, inputs: &str, extra: &[(String, String)]) -> String {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let labels: Vec<String> = [(INPUTS_LABEL, inputs), (MANAGED_LABEL, "true")]
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("{}\nLABEL {}\n", dockerfile.trim_end(), labels.join(" "))
}

/// `text` without terminal escape sequences (the engine colours stderr).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// The last lines of a build log, for an error message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    strip_ansi(&lines[lines.len().saturating_sub(30)..].join("\n"))
}

/// The tag of the image holding the binary `install` gives, or how else
/// an agent image gets Claude Code.
pub fn claude_layer(install: &crate::claude::Install) -> Result<ClaudeLayer, BackendError> {
    use crate::claude::Install;
    Ok(match install {
        Install::Skip => ClaudeLayer::None,
        Install::Npm => ClaudeLayer::Npm,
        Install::Pinned { pin, .. } => ClaudeLayer::Image {
            tag: format!("bot-bottle/claude:{}", pin.tag()?),
            id: None,
        },
        Install::Binary(path) => {
            let identity =
                crate::state::file_identity(path).map_err(|source| BackendError::Io {
                    path: path.clone(),
                    source,
                })?;
            let mut h = Sha256::new();
            h.update(format!("{}\0{identity}", path.display()));
            let id: String = h
                .finalize()
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect();
            ClaudeLayer::Image {
                tag: format!("bot-bottle/claude:own-{id}"),
                id: None,
            }
        }
    })
}

/// Makes sure the image `tag`, which holds Claude Code as `/claude` and
/// nothing else, exists, and returns its id: built once from the binary
/// `install` gives (fetched into the cache first when it is the pinned one
/// and not there).
pub async fn ensure_claude(
    docker: &Docker,
    tag: &str,
    install: &crate::claude::Install,
    lock_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<String, BackendError> {
    if let Some((id, _)) = image_id(docker, tag).await? {
        return Ok(id);
    }
    let lock = lock_file(lock_dir, tag)?;
    let locked = crate::state::locked(lock).await?;
    if let Some((id, _)) = image_id(docker, tag).await? {
        return Ok(id);
    }
    let Some(installed) = install.ensure(reporter).await? else {
        return Err(BackendError::Claude(format!(
            "{tag}: no Claude Code binary to build it from"
        )));
    };
    reporter.step(&format!(
        "building {tag} (Claude Code {}, once)",
        installed.version
    ));
    let dockerfile = with_labels("FROM scratch\nCOPY claude /claude\n", "", &[]);
    let context = streamed_context(&dockerfile, &installed.path).await?;
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_owned()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let stream = docker.build_image(options, None, Some(bollard::body_try_stream(context)));
    follow_build(stream, tag, reporter).await?;
    drop(locked);
    match image_id(docker, tag).await? {
        Some((id, _)) => Ok(id),
        None => Err(BackendError::Claude(format!(
            "{tag} was built and is gone: build it again (start again)"
        ))),
    }
}

/// A build context of `dockerfile` and the file `binary` as `claude`,
/// read from disk as the engine takes it (the binary is hundreds of
/// megabytes).
async fn streamed_context(
    dockerfile: &str,
    binary: &Path,
) -> Result<impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static, BackendError>
{
    let io = |source| BackendError::Io {
        path: binary.to_owned(),
        source,
    };
    let file = tokio::fs::File::open(binary).await.map_err(io)?;
    let size = file.metadata().await.map_err(io)?.len();
    // By hand: a tar::Builder ends its archive when it is taken apart.
    let header = |name: &str, size: u64, mode: u32| -> Result<Vec<u8>, BackendError> {
        let mut header = tar::Header::new_gnu();
        header.set_path(name)?;
        header.set_size(size);
        header.set_mode(mode);
        header.set_cksum();
        Ok(header.as_bytes().to_vec())
    };
    let padding = |size: u64| vec![0u8; usize::try_from((512 - size % 512) % 512).unwrap_or(0)];
    let mut head = header("Dockerfile", dockerfile.len() as u64, 0o644)?;
    head.extend_from_slice(dockerfile.as_bytes());
    head.extend(padding(dockerfile.len() as u64));
    head.extend(header("claude", size, 0o755)?);
    // The file padded to a whole block, then the archive's two empty ones.
    let mut tail = padding(size);
    tail.extend([0u8; 1024]);
    let stream = futures_util::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(tokio_util::io::ReaderStream::new(file))
        .chain(futures_util::stream::once(
            async move { Ok(Bytes::from(tail)) },
        ));
    Ok(stream)
}

/// A tar holding the Dockerfile, the extra files and the binary as
/// `bottle`.
fn build_context(
    dockerfile: &str,
    files: &[(&str, &str)],
    binary: &Path,
) -> Result<Bytes, BackendError> {
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644)?;
    for (name, contents) in files {
        append_file(&mut tar, name, contents.as_bytes(), 0o644)?;
    }
    append_binary(&mut tar, "bottle", binary)?;
    let mut bytes = tar.into_inner()?;
    bytes.flush()?;
    Ok(Bytes::from(bytes))
}

/// bot-bottle's own files where they belong (`usr/local/bin/bottle`,
/// `usr/local/lib/bot-bottle/…`), to be laid over `/` of a bottle's image.
pub fn overlay_tar(binary: &Path) -> Result<Bytes, BackendError> {
    let mut tar = tar::Builder::new(Vec::new());
    for dir in [
        "usr",
        "usr/local",
        "usr/local/bin",
        "usr/local/lib",
        "usr/local/lib/bot-bottle",
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    for (name, contents) in AGENT_FILES {
        append_file(
            &mut tar,
            &format!("usr/local/lib/bot-bottle/{name}"),
            contents.as_bytes(),
            0o644,
        )?;
    }
    append_binary(&mut tar, "usr/local/bin/bottle", binary)?;
    Ok(Bytes::from(tar.into_inner()?))
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_cksum();
    tar.append_data(&mut header, name, contents)
}

fn append_binary(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    binary: &Path,
) -> Result<(), BackendError> {
    let mut file = std::fs::File::open(binary).map_err(|source| BackendError::Io {
        path: binary.to_owned(),
        source,
    })?;
    let size = file.metadata()?.len();
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, name, &mut file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_directory_others_could_write_or_a_planted_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = root.path().join("locks");
        assert!(lock_file(&dir, "a:b").is_ok(), "made, then used");
        let target = root.path().join("victim");
        std::os::unix::fs::symlink(&target, dir.join(".build-c_d.lock"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(lock_file(&dir, "c:d").is_err(), "never through a link");
        assert!(!target.exists(), "the link's target was not created");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = match lock_file(&dir, "a:b").map(|_| ()) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted"),
        };
        assert!(refused.contains("only you can write"), "{refused}");
    }

    #[test]
    fn a_bottles_image_lays_bot_bottles_files_back_after_the_fragment() {
        let spec = ImageSpec {
            fragment: Some("RUN rm -f /usr/local/bin/bottle".into()),
            ..ImageSpec::new(
                ImageKind::Bottle,
                "bot-bottle/bottle-x:latest",
                "bot-bottle/agent:latest",
            )
        };
        let dockerfile = spec.dockerfile();
        assert!(dockerfile.starts_with("FROM bot-bottle/agent:latest\nUSER root\nRUN rm"));
        assert!(dockerfile.ends_with(
            "RUN rm -f /usr/local/bin/bottle\nCOPY overlay/ /\nRUN /usr/local/bin/bottle prepare-trust\n"
        ));
        let Ok(overlay) = overlay_tar(&std::env::current_exe().unwrap_or_default()) else {
            panic!("no overlay");
        };
        let names: Vec<String> = tar::Archive::new(&overlay[..])
            .entries()
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.path().ok().map(|p| p.display().to_string()))
            .collect();
        assert!(
            names.contains(&"usr/local/bin/bottle".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"usr/local/lib/bot-bottle/node-proxy.cjs".to_owned()));
    }

    #[test]
    fn labels_are_one_step() {
        let text = with_labels(
            "FROM x\n",
            "abc",
            &[("bot-bottle.identity".into(), "a-1".into())],
        );
        assert_eq!(
            text,
            "FROM x\nLABEL \"bot-bottle.inputs\"=\"abc\" \"bot-bottle.managed\"=\"true\" \"bot-bottle.identity\"=\"a-1\"\n"
        );
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(strip_ansi("\x1b[91mcurl: failed\x1b[0m\r"), "curl: failed");
    }
}
