//! Files git tracks, as a copy takes them.
//!
//! A tracked file is copied as it is in the work tree (the agent works on
//! the person's current state) — except where the work tree holds what
//! git was told not to record: a file marked `skip-worktree` or
//! `assume-unchanged` (the usual way to keep local credentials in a
//! committed configuration file), a file that passes through a filter
//! (`git-crypt` and its kind keep plaintext in the work tree and
//! ciphertext in the repository), and a file that looks like a secret by
//! name or content. When such a file's work-tree bytes differ from what
//! the index holds, the index's version is copied instead, and the
//! preflight says so.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::secrets;

/// One tracked file, as the index has it.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub rel: PathBuf,
    mode: String,
    /// The blob the index holds.
    blob: String,
    /// Merge stage (0 unless the file is in conflict).
    stage: String,
    /// Changes to it are hidden from git (`skip-worktree`,
    /// `assume-unchanged`).
    hidden: bool,
}

/// Every tracked file that exists in the work tree.
pub fn list(source: &Path) -> io::Result<Vec<Tracked>> {
    let out = git(
        source,
        &["ls-files", "-z", "--cached", "--stage", "-v"],
        None,
    )?;
    let mut files = Vec::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        // `TAG MODE BLOB STAGE\tPATH`; the path as bytes (a name need not
        // be UTF-8).
        let Some(tab) = record.iter().position(|b| *b == b'\t') else {
            continue;
        };
        let meta = String::from_utf8_lossy(&record[..tab]);
        let path = path_of(&record[tab + 1..]);
        let mut fields = meta.split(' ');
        let (Some(tag), Some(mode), Some(blob), Some(stage)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let rel = path;
        // Tracked but deleted in the work tree: nothing to copy.
        if source.join(&rel).symlink_metadata().is_err() {
            continue;
        }
        files.push(Tracked {
            rel,
            mode: mode.to_owned(),
            blob: blob.to_owned(),
            stage: stage.to_owned(),
            hidden: tag == "S" || tag.chars().all(|c| c.is_ascii_lowercase()),
        });
    }
    files.dedup_by(|a, b| a.rel == b.rel);
    Ok(files)
}

/// A path git printed, as the bytes it is.
pub(super) fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes))
}

/// A tracked file as the index has it, copied instead of the work tree's.
#[derive(Debug)]
pub struct Committed {
    pub bytes: Vec<u8>,
    /// Why, for the preflight.
    pub why: String,
    /// Git records it as executable.
    pub executable: bool,
}

/// What a copy does with tracked files that need a second look.
#[derive(Debug, Default)]
pub struct Choice {
    /// Copied from the index instead of the work tree.
    pub from_index: BTreeMap<PathBuf, Committed>,
    /// Left out entirely (a secret in conflict: no one version to take).
    pub left_out: Vec<(PathBuf, String)>,
}

/// Chooses, for every tracked file git was told to ignore, that passes a
/// filter or that looks like a secret, whether its work-tree bytes may go
/// in. `included`: paths the person named.
pub fn choose(
    source: &Path,
    files: &[Tracked],
    included: &dyn Fn(&Path) -> bool,
) -> io::Result<Choice> {
    let mut choice = Choice::default();
    let filtered = filtered(source, files)?;
    let mut second_look: Vec<(&Tracked, String)> = Vec::new();
    for file in files {
        if included(&file.rel) {
            continue;
        }
        // What the work tree holds decides, not what the index says it
        // was: a tracked link replaced by a file is a file.
        let here = std::fs::symlink_metadata(source.join(&file.rel));
        let kind_changed = match file.mode.as_str() {
            "120000" => !here.as_ref().is_ok_and(|m| m.file_type().is_symlink()),
            "160000" => !here.as_ref().is_ok_and(|m| m.is_dir()),
            _ => !here.as_ref().is_ok_and(|m| m.is_file()),
        };
        if kind_changed {
            choice.left_out.push((
                file.rel.clone(),
                "the work tree holds another kind of file than git tracks here (a link replaced by a file, or a directory)".to_owned(),
            ));
            continue;
        }
        if file.mode == "120000" || file.mode == "160000" {
            continue;
        }
        let why = if file.hidden {
            Some("git is told to ignore its changes (skip-worktree or assume-unchanged)".to_owned())
        } else if let Some(filter) = filtered.get(&file.rel) {
            Some(format!(
                "it passes through the {filter:?} filter (the work tree may hold what the repository does not)"
            ))
        } else {
            secrets::why_secret(&file.rel, &source.join(&file.rel)).map(str::to_owned)
        };
        if let Some(why) = why {
            if file.stage != "0" {
                choice.left_out.push((
                    file.rel.clone(),
                    format!("{why}, and it is in a merge conflict"),
                ));
            } else {
                second_look.push((file, why));
            }
        }
    }
    if second_look.is_empty() {
        return Ok(choice);
    }
    let paths: Vec<&Path> = second_look.iter().map(|(f, _)| f.rel.as_path()).collect();
    let hashes = work_tree_blobs(source, &paths)?;
    for ((file, why), hash) in second_look.into_iter().zip(hashes) {
        if hash == file.blob {
            continue;
        }
        let bytes = git(source, &["cat-file", "blob", &file.blob], None)?;
        choice.from_index.insert(
            file.rel.clone(),
            Committed {
                bytes,
                why: format!("the working copy differs from the index and {why}; the index's version is copied"),
                executable: file.mode == "100755",
            },
        );
    }
    Ok(choice)
}

/// The `filter` attribute of every file that has one.
fn filtered(source: &Path, files: &[Tracked]) -> io::Result<BTreeMap<PathBuf, String>> {
    let mut input = Vec::new();
    for file in files {
        input.extend_from_slice(file.rel.as_os_str().as_encoded_bytes());
        input.push(0);
    }
    let out = git(
        source,
        &["check-attr", "-z", "--stdin", "filter"],
        Some(&input),
    )?;
    let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
    let mut result = BTreeMap::new();
    for triple in fields.chunks(3) {
        if let [path, _, value] = triple
            && !matches!(*value, b"unspecified" | b"unset" | b"")
        {
            result.insert(path_of(path), String::from_utf8_lossy(value).into_owned());
        }
    }
    Ok(result)
}

/// The blob id of each work-tree file as it is, no filter applied. Each
/// file's bytes go to git on its standard input, so no path is ever
/// quoted or split.
fn work_tree_blobs(source: &Path, paths: &[&Path]) -> io::Result<Vec<String>> {
    paths
        .iter()
        .map(|path| {
            let bytes = fs_err::read(source.join(path))?;
            let out = git(
                source,
                &["hash-object", "--no-filters", "--stdin"],
                Some(&bytes),
            )?;
            Ok(String::from_utf8_lossy(&out).trim().to_owned())
        })
        .collect()
}

/// Runs `git -C source ARGS`, with `input` on its standard input, and
/// returns what it printed; a failure names the command.
pub(super) fn git(source: &Path, args: &[&str], input: Option<&[u8]>) -> io::Result<Vec<u8>> {
    git_with_index(source, args, input, None)
}

/// [`git`] with `GIT_INDEX_FILE` set to `index` when one is given.
pub(super) fn git_with_index(
    source: &Path,
    args: &[&str],
    input: Option<&[u8]>,
    index: Option<&Path>,
) -> io::Result<Vec<u8>> {
    let mut command = Command::new("git");
    command.env_remove("GIT_INDEX_FILE");
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let mut child = command
        .arg("-C")
        .arg(source)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        // Never fetch what a partial clone lacks: no network, no
        // credential helper, no write into the person's repository.
        .env("GIT_NO_LAZY_FETCH", "1")
        // The launcher's own git environment must not point elsewhere.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_NAMESPACE")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // Written from a thread: git may fill its output pipe first.
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            source.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The paths of `files`.
pub fn paths(files: &[Tracked]) -> BTreeSet<PathBuf> {
    files.iter().map(|f| f.rel.clone()).collect()
}
