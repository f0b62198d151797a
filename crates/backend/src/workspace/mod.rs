//! The copy of the host's directory the agent works on (`--cwd`): a tar
//! stream, owned by the agent's user, of what git tracks plus untracked
//! files it does not ignore, and `.git` itself — or every file when the
//! directory is not a git repository. The host's directory is only read.
//!
//! No secret rides in with the copy. Files that are secrets by name or
//! content ([`secrets`]) are left out unless the person names them
//! (`--include`); files git tracks are copied, except that where the work
//! tree may hold what git does not record, the index's version is copied
//! ([`tracked`]). Of `.git`, only what git needs is copied (objects, refs,
//! the index, `HEAD` and the state of an operation in progress, for the
//! repository and each submodule and worktree): credential stores, hooks,
//! backups and whatever else a tool keeps there (`git-crypt`'s keys) are
//! left out; every configuration file is rewritten without credentials
//! ([`gitconfig`]), and the reflogs and `FETCH_HEAD` lose the user
//! information of the URLs they mention.

pub mod gitconfig;
pub mod secrets;
pub mod tracked;

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
        refuse_linked_checkout(source)?;
        let listed = tracked::list(source)?;
        tracked = tracked::paths(&listed);
        let choice = tracked::choose(source, &listed, &included)?;
        for (rel, reason) in choice.left_out {
            tracked.remove(&rel);
            selection.left_out.push(LeftOut { path: rel, reason });
        }
        for (rel, (bytes, why)) in choice.from_index {
            tracked.remove(&rel);
            selection.changes.push(format!("{}: {why}", rel.display()));
            selection.rewritten.insert(rel, bytes);
        }
        candidates = git_files(source, &["--others", "--exclude-standard"])?;
        let mut git_dir = BTreeSet::new();
        walk(source, Path::new(".git"), &mut git_dir)?;
        for rel in git_dir {
            git_internal(source, rel, &included, &mut selection)?;
        }
    } else {
        let mut all = BTreeSet::new();
        walk(source, Path::new(""), &mut all)?;
        // A repository nested in a plain directory: its `.git` is treated
        // as a repository's is (configuration rewritten, credential stores
        // left out), never copied as it is.
        for rel in all {
            if rel.components().any(|c| c.as_os_str() == ".git") {
                git_internal(source, rel, &included, &mut selection)?;
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

/// A linked worktree or a submodule's checkout has a `.git` file naming a
/// git directory elsewhere, which a copy would not carry: it is refused
/// with the way round it, rather than copied into a broken repository.
fn refuse_linked_checkout(source: &Path) -> io::Result<()> {
    let dot_git = source.join(".git");
    if fs_err::symlink_metadata(&dot_git)?.is_dir() {
        return Ok(());
    }
    let text = fs_err::read_to_string(&dot_git).unwrap_or_default();
    let target = text
        .strip_prefix("gitdir:")
        .map(str::trim)
        .unwrap_or("a git directory elsewhere");
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a linked worktree or a submodule's checkout: its .git points to {target}, \
             which a copy does not carry; run with --cwd at the repository's main checkout, \
             or at a clone of this branch",
            source.display()
        ),
    ))
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

/// Where `rel` (a file under a `.git`) is in the git directory that holds
/// it — the repository's, a submodule's (`modules/NAME/`) or a worktree's
/// (`worktrees/NAME/`) — if it is a part git needs: `None` for anything
/// else.
fn git_part(source: &Path, rel: &Path) -> Option<PathBuf> {
    let parts: Vec<_> = rel.components().collect();
    let mut root = parts.iter().position(|p| p.as_os_str() == ".git")? + 1;
    // Into nested git directories: the shortest path under `modules/` or
    // `worktrees/` that has a `HEAD` of its own.
    while let Some("modules" | "worktrees") = parts.get(root).and_then(|p| p.as_os_str().to_str()) {
        let nested = (root + 2..parts.len()).find(|&end| {
            let dir: PathBuf = parts[..end].iter().collect();
            source.join(dir).join("HEAD").is_file()
        })?;
        root = nested;
    }
    let rest: PathBuf = parts[root..].iter().collect();
    let first = rest.components().next()?.as_os_str().to_str()?.to_owned();
    let needed = matches!(
        first.as_str(),
        "HEAD"
            | "ORIG_HEAD"
            | "FETCH_HEAD"
            | "MERGE_HEAD"
            | "MERGE_MSG"
            | "MERGE_MODE"
            | "MERGE_RR"
            | "AUTO_MERGE"
            | "CHERRY_PICK_HEAD"
            | "REVERT_HEAD"
            | "REBASE_HEAD"
            | "BISECT_LOG"
            | "BISECT_START"
            | "BISECT_TERMS"
            | "BISECT_NAMES"
            | "BISECT_EXPECTED_REV"
            | "BISECT_ANCESTORS_OK"
            | "COMMIT_EDITMSG"
            | "SQUASH_MSG"
            | "TAG_EDITMSG"
            | "description"
            | "index"
            | "sharedindex"
            | "packed-refs"
            | "shallow"
            | "config"
            | "config.worktree"
            | "commondir"
            | "gitdir"
            | "objects"
            | "refs"
            | "logs"
            | "info"
            | "remotes"
            | "branches"
            | "rr-cache"
            | "sequencer"
            | "rebase-merge"
            | "rebase-apply"
            | "lfs"
    ) || first.starts_with("sharedindex.");
    needed.then_some(rest)
}

/// One file under `.git`: left out, rewritten or copied.
fn git_internal(
    source: &Path,
    rel: PathBuf,
    included: &dyn Fn(&Path) -> bool,
    selection: &mut Selection,
) -> io::Result<()> {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let full = source.join(&rel);
    let Some(part) = git_part(source, &rel) else {
        if included(&rel) {
            selection.files.push(rel);
        } else {
            let reason = if name.contains("credentials") {
                "git's credential store"
            } else {
                "not part of what git needs (hooks, backups, a tool's own files)"
            };
            selection.left_out.push(LeftOut {
                path: rel,
                reason: reason.to_owned(),
            });
        }
        return Ok(());
    };
    // Files that record URLs as text: the reflogs, FETCH_HEAD, and the
    // legacy `remotes/` and `branches/` remote definitions.
    let first = part
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    let names_urls = matches!(first, "logs" | "remotes" | "branches" | "FETCH_HEAD");
    if part == Path::new("config") || part == Path::new("config.worktree") {
        let sanitized = gitconfig::sanitize(source, &full)?;
        for change in sanitized.changes {
            selection
                .changes
                .push(format!("{}: {change}", rel.display()));
        }
        selection.rewritten.insert(rel, sanitized.text.into_bytes());
    } else if names_urls && full.is_file() {
        let bytes = fs_err::read(&full)?;
        match String::from_utf8(bytes) {
            Ok(text) => {
                let clean: String = text
                    .split_inclusive('\n')
                    .map(gitconfig::strip_userinfo)
                    .collect();
                if let Some(why) = secrets::secret_in_text(&clean) {
                    selection.left_out.push(LeftOut {
                        path: rel,
                        reason: format!("a git log that names a URL with a credential ({why})"),
                    });
                    return Ok(());
                }
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

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod git_tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn plan(source: &Path, include: &[&str]) -> WorkspacePlan {
        WorkspacePlan {
            source: source.to_owned(),
            mode: "git",
            include: include.iter().map(PathBuf::from).collect(),
            left_out: Vec::new(),
            config_changes: Vec::new(),
        }
    }

    /// A repository with a committed `settings.env` placeholder.
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join("settings.env"), "TOKEN=placeholder\n").unwrap();
        std::fs::write(dir.path().join("README"), "hello\n").unwrap();
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-q", "-m", "first"]);
        dir
    }

    fn copied_bytes(selection: &Selection, source: &Path, rel: &str) -> Option<Vec<u8>> {
        let rel = Path::new(rel);
        if let Some(bytes) = selection.rewritten.get(rel) {
            return Some(bytes.clone());
        }
        selection
            .files
            .iter()
            .any(|f| f == rel)
            .then(|| std::fs::read(source.join(rel)).unwrap())
    }

    /// Found by review: a tracked file whose local changes git was told to
    /// ignore went in with the person's real values.
    #[test]
    fn hidden_local_values_of_a_tracked_file_stay_out() {
        for flag in ["--skip-worktree", "--assume-unchanged"] {
            let dir = repo();
            git(dir.path(), &["update-index", flag, "settings.env"]);
            std::fs::write(dir.path().join("settings.env"), "TOKEN=real-s3cret\n").unwrap();
            let selection = select(&plan(dir.path(), &[])).unwrap();
            let bytes = copied_bytes(&selection, dir.path(), "settings.env").unwrap();
            assert_eq!(bytes, b"TOKEN=placeholder\n", "{flag}");
            assert!(
                selection
                    .changes
                    .iter()
                    .any(|c| c.starts_with("settings.env:") && c.contains("index")),
                "{flag}: {:?}",
                selection.changes
            );
            // Named by the person: the working copy goes in.
            let selection = select(&plan(dir.path(), &["settings.env"])).unwrap();
            let bytes = copied_bytes(&selection, dir.path(), "settings.env").unwrap();
            assert_eq!(bytes, b"TOKEN=real-s3cret\n", "{flag}");
        }
    }

    /// A tracked secret-looking file edited in place, and a file behind a
    /// filter (git-crypt's way): the index's version goes in.
    #[test]
    fn a_changed_secret_or_filtered_file_goes_in_as_committed() {
        let dir = repo();
        std::fs::write(
            dir.path().join(".gitattributes"),
            "vault.txt filter=crypt\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("vault.txt"), "ciphertext\n").unwrap();
        std::fs::write(dir.path().join(".env"), "A=placeholder\n").unwrap();
        git(dir.path(), &["add", "-f", "."]);
        git(dir.path(), &["commit", "-q", "-m", "more"]);
        std::fs::write(dir.path().join("vault.txt"), "plaintext s3cret\n").unwrap();
        std::fs::write(dir.path().join(".env"), "A=s3cret\n").unwrap();
        std::fs::write(dir.path().join("README"), "edited\n").unwrap();
        let selection = select(&plan(dir.path(), &[])).unwrap();
        assert_eq!(
            copied_bytes(&selection, dir.path(), "vault.txt").unwrap(),
            b"ciphertext\n"
        );
        assert_eq!(
            copied_bytes(&selection, dir.path(), ".env").unwrap(),
            b"A=placeholder\n"
        );
        // An ordinary edit goes in as it is.
        assert_eq!(
            copied_bytes(&selection, dir.path(), "README").unwrap(),
            b"edited\n"
        );
    }

    #[test]
    fn a_linked_worktree_is_refused_with_the_way_round() {
        let dir = repo();
        let linked = dir.path().join("linked");
        git(
            dir.path(),
            &["worktree", "add", "-q", linked.to_str().unwrap()],
        );
        let err = select(&plan(&linked, &[])).unwrap_err().to_string();
        assert!(err.contains("linked worktree"), "{err}");
        assert!(
            err.contains("--cwd at the repository's main checkout"),
            "{err}"
        );
    }

    /// Only what git needs of `.git` goes in: hooks, backups and a tool's
    /// key store stay out, a branch named like a configuration file is a
    /// ref, and a submodule's configuration is rewritten.
    #[test]
    fn only_what_git_needs_of_the_git_directory_goes_in() {
        let dir = repo();
        let dot_git = dir.path().join(".git");
        git(dir.path(), &["branch", "config"]);
        std::fs::write(
            dot_git.join("config.bak"),
            "[remote \"o\"]\n\turl = https://u:tok3n@example.com/r\n",
        )
        .unwrap();
        std::fs::create_dir_all(dot_git.join("git-crypt/keys")).unwrap();
        std::fs::write(dot_git.join("git-crypt/keys/default"), "key material").unwrap();
        std::fs::write(dot_git.join("hooks/pre-push"), "#!/bin/sh\n").unwrap();
        let module = dot_git.join("modules/lib");
        std::fs::create_dir_all(module.join("refs")).unwrap();
        std::fs::write(module.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(
            module.join("config"),
            "[remote \"origin\"]\n\turl = https://u:tok3n@example.com/lib\n",
        )
        .unwrap();
        std::fs::write(module.join("notes.bak"), "tok3n").unwrap();
        std::fs::write(
            dot_git.join("FETCH_HEAD"),
            "0000\t\tbranch 'main' of https://git.example.com/r?private_token=tok3n\n",
        )
        .unwrap();
        let selection = select(&plan(dir.path(), &[])).unwrap();
        let left_out: Vec<&Path> = selection
            .left_out
            .iter()
            .map(|l| l.path.as_path())
            .collect();
        for path in [
            ".git/config.bak",
            ".git/git-crypt/keys/default",
            ".git/hooks/pre-push",
            ".git/modules/lib/notes.bak",
            ".git/FETCH_HEAD",
        ] {
            assert!(left_out.contains(&Path::new(path)), "{path}: {left_out:?}");
        }
        assert!(
            selection
                .files
                .contains(&PathBuf::from(".git/refs/heads/config"))
        );
        assert!(selection.files.contains(&PathBuf::from(".git/HEAD")));
        assert!(
            selection.rewritten.contains_key(Path::new(".git/index"))
                || selection.files.contains(&PathBuf::from(".git/index"))
        );
        let module_config = selection
            .rewritten
            .get(Path::new(".git/modules/lib/config"))
            .unwrap();
        assert!(!String::from_utf8_lossy(module_config).contains("tok3n"));
        for (path, bytes) in &selection.rewritten {
            assert!(
                !String::from_utf8_lossy(bytes).contains("tok3n"),
                "{}",
                path.display()
            );
        }
        // Named by the person, a left-out file goes in.
        let selection = select(&plan(dir.path(), &[".git/hooks"])).unwrap();
        assert!(
            selection
                .files
                .contains(&PathBuf::from(".git/hooks/pre-push"))
        );
    }
}
