//! The copy of the host's directory the agent works on (`--cwd`): a tar
//! stream, owned by the agent's user, of what git tracks plus untracked
//! files it does not ignore, and `.git` itself — or every file when the
//! directory is not a git repository. The host's directory is only read.
//!
//! No secret rides in with the copy. Files that are secrets by name or
//! content ([`secrets`]) are left out unless the person names them
//! (`--include`); files git tracks are copied (their committed content is
//! in `.git` anyway). In `.git`, credential stores are left out, every
//! configuration file is rewritten without credentials ([`gitconfig`]),
//! and the reflogs and `FETCH_HEAD` lose the user information of the URLs
//! they mention.

pub mod gitconfig;
pub mod secrets;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use bottle_manifest::plan::{LeftOut, WorkspacePlan};
use bytes::Bytes;
use tokio::sync::mpsc::Sender;

/// The agent's uid and gid, owner of every copied file.
const OWNER: u64 = bottle_manifest::plan::AGENT_UID as u64;
/// Size of the chunks sent while the tar is written.
const CHUNK: usize = 256 << 10;

/// What a copy takes, and what it leaves out or changes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Copied as they are, relative to the source.
    pub files: Vec<PathBuf>,
    /// Copied with other content (git configuration, logs).
    pub rewritten: BTreeMap<PathBuf, Vec<u8>>,
    pub left_out: Vec<LeftOut>,
    /// What was removed from the git configuration, for the preflight.
    pub changes: Vec<String>,
}

/// Chooses what a copy of `workspace.source` takes.
pub fn select(workspace: &WorkspacePlan) -> io::Result<Selection> {
    let source = &workspace.source;
    let included = |rel: &Path| workspace.include.iter().any(|i| rel.starts_with(i));
    let mut selection = Selection::default();
    let mut candidates = BTreeSet::new();
    let mut tracked = BTreeSet::new();
    if workspace.mode == "git" {
        tracked = git_files(source, &["--cached"])?;
        candidates = git_files(source, &["--others", "--exclude-standard"])?;
        let mut git_dir = BTreeSet::new();
        walk(source, Path::new(".git"), &mut git_dir)?;
        for rel in git_dir {
            git_internal(source, rel, &mut selection)?;
        }
    } else {
        let mut all = BTreeSet::new();
        walk(source, Path::new(""), &mut all)?;
        // A repository nested in a plain directory: its `.git` is treated
        // as a repository's is (configuration rewritten, credential stores
        // left out), never copied as it is.
        for rel in all {
            if rel.components().any(|c| c.as_os_str() == ".git") {
                git_internal(source, rel, &mut selection)?;
            } else {
                candidates.insert(rel);
            }
        }
    }
    let mut files: BTreeSet<PathBuf> = tracked;
    for rel in candidates {
        if files.contains(&rel) {
            continue;
        }
        match secrets::why_secret(&rel, &source.join(&rel)) {
            Some(why) if !included(&rel) => selection.left_out.push(LeftOut {
                path: rel,
                reason: why.to_owned(),
            }),
            _ => {
                files.insert(rel);
            }
        }
    }
    selection.files.extend(files);
    selection.files.sort();
    Ok(selection)
}

/// What a plan's preflight says about a copy: left out and changed.
pub fn survey(workspace: &mut WorkspacePlan) -> io::Result<()> {
    let selection = select(workspace)?;
    workspace.left_out = selection.left_out;
    workspace.config_changes = selection.changes;
    Ok(())
}

/// Files git lists (`git ls-files ARGS`) that exist in the work tree.
fn git_files(source: &Path, args: &[&str]) -> io::Result<BTreeSet<PathBuf>> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(source)
        .args(["ls-files", "-z"])
        .args(args)
        .output()?;
    if !listed.status.success() {
        return Err(io::Error::other(format!(
            "git ls-files failed in {}: {}",
            source.display(),
            String::from_utf8_lossy(&listed.stderr).trim()
        )));
    }
    let mut out = BTreeSet::new();
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = PathBuf::from(String::from_utf8_lossy(name).into_owned());
        // Tracked but deleted in the work tree: nothing to copy.
        if source.join(&rel).symlink_metadata().is_ok() {
            out.insert(rel);
        }
    }
    Ok(out)
}

/// One file under `.git`: left out, rewritten or copied.
fn git_internal(source: &Path, rel: PathBuf, selection: &mut Selection) -> io::Result<()> {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let full = source.join(&rel);
    // Files that record URLs as text: the reflogs, FETCH_HEAD, and the
    // legacy `remotes/` and `branches/` remote definitions.
    let names_urls = rel.components().any(|c| {
        matches!(
            c.as_os_str().to_str(),
            Some("logs" | "remotes" | "branches")
        )
    });
    if name.contains("credentials") {
        selection.left_out.push(LeftOut {
            path: rel,
            reason: "git's credential store".to_owned(),
        });
    } else if name == "config" || name == "config.worktree" {
        let sanitized = gitconfig::sanitize(source, &full)?;
        for change in sanitized.changes {
            selection
                .changes
                .push(format!("{}: {change}", rel.display()));
        }
        selection.rewritten.insert(rel, sanitized.text.into_bytes());
    } else if (names_urls || name == "fetch_head") && full.is_file() {
        let bytes = fs_err::read(&full)?;
        match String::from_utf8(bytes) {
            Ok(text) => {
                let clean: String = text
                    .split_inclusive('\n')
                    .map(gitconfig::strip_userinfo)
                    .collect();
                if clean != text {
                    selection.changes.push(format!(
                        "{}: removed user information from URLs",
                        rel.display()
                    ));
                }
                selection.rewritten.insert(rel, clean.into_bytes());
            }
            Err(_) => selection.left_out.push(LeftOut {
                path: rel,
                reason: "a git log that is not text (it may name URLs with credentials)".to_owned(),
            }),
        }
    } else {
        selection.files.push(rel);
    }
    Ok(())
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    for entry in fs_err::read_dir(root.join(rel))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.insert(path);
        }
    }
    Ok(())
}

/// What a copy-in carried.
#[derive(Debug, Clone, Copy, Default)]
pub struct Copied {
    pub files: usize,
    pub bytes: u64,
    /// Files left out as secrets.
    pub left_out: usize,
}

/// Writes the tar of the workspace's selection into `tx` in chunks.
pub fn write_tar(workspace: &WorkspacePlan, tx: Sender<Bytes>) -> io::Result<Copied> {
    let source = &workspace.source;
    let mut copied = Copied::default();
    let selection = select(workspace)?;
    let mut tar = tar::Builder::new(ChunkWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    });
    tar.follow_symlinks(false);
    let dirs: BTreeSet<PathBuf> = selection
        .files
        .iter()
        .chain(selection.rewritten.keys())
        .flat_map(|f| {
            f.ancestors()
                .skip(1)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        own(&mut header);
        tar.append_data(&mut header, dir, io::empty())?;
    }
    for rel in &selection.files {
        let path = source.join(rel);
        let meta = fs_err::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        own(&mut header);
        if meta.file_type().is_symlink() {
            let target = fs_err::read_link(&path)?;
            tar.append_link(&mut header, rel, target)?;
        } else if meta.is_file() {
            let file = fs_err::File::open(&path)?;
            tar.append_data(&mut header, rel, file)?;
            copied.bytes += meta.len();
        }
        copied.files += 1;
    }
    for (rel, bytes) in &selection.rewritten {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        own(&mut header);
        tar.append_data(&mut header, rel, &bytes[..])?;
        copied.bytes += bytes.len() as u64;
        copied.files += 1;
    }
    copied.left_out = selection.left_out.len();
    let mut writer = tar.into_inner()?;
    writer.flush()?;
    Ok(copied)
}

fn own(header: &mut tar::Header) {
    header.set_uid(OWNER);
    header.set_gid(OWNER);
    let _ = header.set_username("agent");
    let _ = header.set_groupname("agent");
    header.set_cksum();
}

/// Sends what is written in chunks; a closed receiver is an error, which
/// stops the tar.
struct ChunkWriter {
    tx: Sender<Bytes>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    /// Found by review: a repository nested in a plain directory had its
    /// `.git` copied as it was, credentials and all.
    #[test]
    fn a_nested_repository_is_treated_as_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join("sub/.git");
        std::fs::create_dir_all(git.join("remotes")).unwrap();
        std::fs::write(
            git.join("config"),
            "[remote \"origin\"]\n\turl = https://u:tok3n@example.com/r.git\n[http]\n\textraHeader = X: tok3n\n",
        )
        .unwrap();
        std::fs::write(git.join("credentials"), "https://u:tok3n@example.com\n").unwrap();
        std::fs::write(
            git.join("remotes/old"),
            "URL: https://u:tok3n@example.com/r.git\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "plain\n").unwrap();
        let plan = WorkspacePlan {
            source: dir.path().to_owned(),
            mode: "all",
            include: Vec::new(),
            left_out: Vec::new(),
            config_changes: Vec::new(),
        };
        let selection = select(&plan).unwrap();
        assert!(selection.files.contains(&PathBuf::from("notes.txt")));
        assert!(
            selection
                .left_out
                .iter()
                .any(|l| l.path == Path::new("sub/.git/credentials")),
            "{:?}",
            selection.left_out
        );
        for (path, bytes) in &selection.rewritten {
            assert!(
                !String::from_utf8_lossy(bytes).contains("tok3n"),
                "{} kept a credential",
                path.display()
            );
        }
        assert!(
            selection
                .rewritten
                .contains_key(Path::new("sub/.git/config"))
        );
        assert!(
            selection
                .rewritten
                .contains_key(Path::new("sub/.git/remotes/old"))
        );
        assert!(!selection.files.iter().any(|f| f.starts_with("sub/.git")));
    }
}
