//! The copy of the host's directory the agent works on (`--cwd`): a tar
//! stream, owned by the agent's user, of what git tracks plus untracked
//! files it does not ignore, and `.git` itself — or every file when the
//! directory is not a git repository. The host's directory is only read.
//!
//! No secret rides in with the copy. Files that are secrets by name or
//! content ([`secrets`]) are left out unless the person names them
//! (`--include`); files git tracks are copied, except that where the work
//! tree may hold what git does not record, the index's version is copied
//! ([`tracked`]). Of `.git`, only what git needs is copied (refs, the
//! index, `HEAD` and the state of an operation in progress, for the
//! repository and each submodule and worktree): credential stores, hooks,
//! reflogs, backups and whatever else a tool keeps there (`git-crypt`'s
//! keys) are left out; the objects are packed anew from what the copy
//! keeps ([`objects`]), the index is written anew, and every
//! configuration file is rewritten without credentials ([`gitconfig`]).

pub mod gitconfig;
pub mod objects;
pub mod secrets;
pub mod tracked;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bottle_manifest::plan::{LeftOut, WorkspaceMode, WorkspacePlan};
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
    /// Git directories (`.git`, `.git/modules/NAME`) whose objects are
    /// packed anew for the copy, each with the files the person named
    /// (`--include .git/logs`) whose commits the pack must hold too.
    pub git_dirs: BTreeMap<PathBuf, Vec<PathBuf>>,
    /// Rewritten files that are executable (a script taken from the index).
    pub executable: BTreeSet<PathBuf>,
}

impl Selection {
    /// Has the pack of `git_dir` hold what `file` (a ref, a reflog the
    /// person named) reaches.
    fn pack_also(&mut self, git_dir: PathBuf, file: &Path) {
        let named = self.git_dirs.entry(git_dir).or_default();
        if !named.iter().any(|n| n == file) {
            named.push(file.to_owned());
        }
    }

    /// Leaves `path` out once: a directory left out (`.git/hooks`) is
    /// reported once, not per file.
    fn leave_out_once(&mut self, path: PathBuf, reason: &str) {
        if !self.left_out.iter().any(|l| l.path == path) {
            self.left_out.push(LeftOut {
                path,
                reason: reason.to_owned(),
            });
        }
    }
}

/// Chooses what a copy of `workspace.source` takes.
pub fn select(workspace: &WorkspacePlan) -> io::Result<Selection> {
    let source = &workspace.source;
    let included = |rel: &Path| workspace.include.iter().any(|i| rel.starts_with(i));
    let mut selection = Selection::default();
    let mut candidates: BTreeSet<PathBuf>;
    let mut tracked = BTreeSet::new();
    if workspace.mode != WorkspaceMode::All {
        if workspace.mode == WorkspaceMode::Git {
            refuse_linked_checkout(source)?;
        }
        let listed = tracked::list(source)?;
        tracked = tracked::paths(&listed);
        let choice = tracked::choose(source, &listed, &included)?;
        for (rel, reason) in choice.left_out {
            tracked.remove(&rel);
            selection.left_out.push(LeftOut { path: rel, reason });
        }
        for (rel, committed) in choice.from_index {
            tracked.remove(&rel);
            if committed.executable {
                selection.executable.insert(rel.clone());
            }
            selection
                .changes
                .push(format!("{}: {}", rel.display(), committed.why));
            selection.rewritten.insert(rel, committed.bytes);
        }
        candidates = git_files(source, &["--others", "--exclude-standard"])?;
        if workspace.mode == WorkspaceMode::Git {
            let mut git_dir = BTreeSet::new();
            walk(source, Path::new(".git"), &mut git_dir)?;
            for rel in git_dir {
                git_internal(source, rel, &included, &mut selection)?;
            }
        }
    } else {
        let mut all = BTreeSet::new();
        walk(source, Path::new(""), &mut all)?;
        // A repository nested in a plain directory is copied as `--cwd` at
        // it would be, by git's rules; a bare one is left out.
        let (roots, bare) = repositories(source, &all);
        for root in &roots {
            nested_repository(workspace, root, &mut selection);
        }
        for dir in &bare {
            if !included(dir) {
                selection.leave_out_once(
                    dir.clone(),
                    "a bare git repository (its object store and configuration may hold what no branch does); clone it to copy it",
                );
            }
        }
        // Every path with a `.git` in it is under one of `roots`.
        candidates = all
            .into_iter()
            .filter(|rel| {
                let under = |dirs: &[PathBuf]| dirs.iter().any(|d| rel.starts_with(d));
                !under(&roots) && (!under(&bare) || included(rel))
            })
            .collect();
    }
    // A repository inside this one that git does not track (`ls-files`
    // lists its directory): not copied, and said so.
    let nested: Vec<PathBuf> = candidates
        .iter()
        .filter(|rel| source.join(rel).is_dir())
        .cloned()
        .collect();
    for rel in nested {
        candidates.remove(&rel);
        selection.leave_out_once(
            rel,
            "a git repository inside this one (run with --cwd at it to copy it)",
        );
    }
    // A path through a symbolic link to a directory would be read from
    // wherever the link points: the link goes in, never what is behind it.
    for rel in tracked.iter().chain(&candidates) {
        if through_link(source, rel) {
            selection.left_out.push(LeftOut {
                path: rel.clone(),
                reason: "it is reached through a symbolic link (the link goes in, not what it points to)".to_owned(),
            });
        }
    }
    let left_out: BTreeSet<PathBuf> = selection.left_out.iter().map(|l| l.path.clone()).collect();
    tracked.retain(|rel| !left_out.contains(rel));
    candidates.retain(|rel| !left_out.contains(rel));
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
    clean_indexes(source, &mut selection)?;
    Ok(selection)
}

/// The repositories in a plain directory's files: the work trees with a
/// `.git` of their own (outermost only), and bare repositories (a
/// directory with `HEAD`, `objects/` and `refs/`, not a `.git`).
fn repositories(source: &Path, all: &BTreeSet<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut bare: Vec<PathBuf> = Vec::new();
    for rel in all {
        let parts: Vec<_> = rel.components().collect();
        if let Some(at) = parts.iter().position(|c| c.as_os_str() == ".git") {
            let root: PathBuf = parts[..at].iter().collect();
            if !roots.iter().any(|r| root.starts_with(r)) {
                roots.retain(|r| !r.starts_with(&root));
                roots.push(root);
            }
        } else if rel.file_name().is_some_and(|n| n == "HEAD")
            && let Some(dir) = rel.parent()
            && source.join(dir).join("objects").is_dir()
            && source.join(dir).join("refs").is_dir()
            && !bare.iter().any(|b| dir.starts_with(b))
        {
            bare.push(dir.to_owned());
        }
    }
    (roots, bare)
}

/// A repository at `root` inside a plain directory, selected as `--cwd` at
/// it would be and added to `selection` under `root`; one that cannot be
/// (a linked worktree) is left out with the reason.
fn nested_repository(workspace: &WorkspacePlan, root: &Path, selection: &mut Selection) {
    let plan = WorkspacePlan {
        source: workspace.source.join(root),
        mode: WorkspaceMode::Git,
        include: workspace
            .include
            .iter()
            .filter_map(|i| i.strip_prefix(root).ok().map(Path::to_path_buf))
            .collect(),
        left_out: Vec::new(),
        config_changes: Vec::new(),
    };
    let inner = match select(&plan) {
        Ok(inner) => inner,
        Err(err) => {
            selection.leave_out_once(root.to_owned(), &err.to_string());
            return;
        }
    };
    selection
        .files
        .extend(inner.files.into_iter().map(|f| root.join(f)));
    for (rel, bytes) in inner.rewritten {
        selection.rewritten.insert(root.join(rel), bytes);
    }
    selection
        .left_out
        .extend(inner.left_out.into_iter().map(|l| LeftOut {
            path: root.join(l.path),
            reason: l.reason,
        }));
    selection.changes.extend(
        inner
            .changes
            .into_iter()
            .map(|c| format!("{}/{c}", root.display())),
    );
    for (dir, named) in inner.git_dirs {
        selection.git_dirs.insert(
            root.join(dir),
            named.into_iter().map(|n| root.join(n)).collect(),
        );
    }
    selection
        .executable
        .extend(inner.executable.into_iter().map(|e| root.join(e)));
}

/// Every git directory's own index, rewritten as the copy gets it
/// ([`objects::clean_index`]); the top repository's loses the entries of
/// the tracked files left out.
fn clean_indexes(source: &Path, selection: &mut Selection) -> io::Result<()> {
    let left_out: Vec<PathBuf> = selection
        .left_out
        .iter()
        .map(|l| l.path.clone())
        .filter(|p| !p.components().any(|c| c.as_os_str() == ".git"))
        .collect();
    for git_dir in selection.git_dirs.keys().cloned().collect::<Vec<_>>() {
        let index = git_dir.join("index");
        let Some(at) = selection.files.iter().position(|f| *f == index) else {
            continue;
        };
        let remove: &[PathBuf] = if git_dir == Path::new(".git") {
            &left_out
        } else {
            &[]
        };
        let cleaned = objects::clean_index(&source.join(&git_dir), &source.join(&index), remove)?;
        selection.files.remove(at);
        selection.rewritten.insert(index, cleaned);
    }
    Ok(())
}

/// A linked worktree or a submodule's checkout has a `.git` file naming a
/// git directory elsewhere, which a copy would not carry: it is refused
/// with the way round it, rather than copied into a broken repository.
fn refuse_linked_checkout(source: &Path) -> io::Result<()> {
    let dot_git = source.join(".git");
    // A link to a git directory is that directory.
    if fs_err::metadata(&dot_git)?.is_dir() {
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

/// Whether a directory on the way to `rel` (under `source`) is a symbolic
/// link.
fn through_link(source: &Path, rel: &Path) -> bool {
    rel.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .any(|a| {
            std::fs::symlink_metadata(source.join(a)).is_ok_and(|m| m.file_type().is_symlink())
        })
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
    let listed = tracked::git(source, &[&["ls-files", "-z"], args].concat(), None)?;
    let mut out = BTreeSet::new();
    for name in listed.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = tracked::path_of(name);
        // Tracked but deleted in the work tree: nothing to copy.
        if source.join(&rel).symlink_metadata().is_ok() {
            out.insert(rel);
        }
    }
    Ok(out)
}

/// Where `rel` (a file under a `.git`) is in the git directory that holds
/// it — the repository's, a submodule's (`modules/NAME/`) or a worktree's
/// (`worktrees/NAME/`): `Ok(part)` if it is a part git needs, else
/// `Err(top)`, the top of what it is in (`.git/hooks`, `.git/config.bak`),
/// so that what is left out is reported once per directory.
fn git_part(source: &Path, rel: &Path) -> Result<PathBuf, PathBuf> {
    let parts: Vec<_> = rel.components().collect();
    let Some(dot_git) = parts.iter().position(|p| p.as_os_str() == ".git") else {
        return Err(rel.to_owned());
    };
    let mut root = dot_git + 1;
    // The first `depth` parts of what is under the git directory ending
    // at `end`.
    let top = |end: usize, depth: usize| -> PathBuf {
        parts[..(end + depth).min(parts.len())].iter().collect()
    };
    // Into nested git directories: the shortest path under `modules/` or
    // `worktrees/` that has a `HEAD` of its own.
    while let Some("modules" | "worktrees") = parts.get(root).and_then(|p| p.as_os_str().to_str()) {
        let Some(nested) = (root + 2..parts.len()).find(|&end| {
            let dir: PathBuf = parts[..end].iter().collect();
            source.join(dir).join("HEAD").is_file()
        }) else {
            return Err(top(root, 1));
        };
        root = nested;
    }
    let rest: PathBuf = parts[root..].iter().collect();
    let Some(first) = rest
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .map(str::to_owned)
    else {
        return Err(top(root, 1));
    };
    let second = rest
        .components()
        .nth(1)
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    let needed = match first.as_str() {
        "HEAD"
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
        | "SQUASH_MSG"
        | "TAG_EDITMSG"
        | "description"
        | "index"
        | "packed-refs"
        | "shallow"
        | "config"
        | "config.worktree"
        | "commondir"
        | "gitdir"
        | "objects"
        | "refs"
        | "remotes"
        | "branches"
        | "sequencer"
        | "rebase-merge"
        | "rebase-apply" => true,
        "info" => matches!(second, "exclude" | "attributes" | "sparse-checkout"),
        // Not needed, and holding what the branches may not: `rr-cache`
        // (whole conflicted files, kept for weeks), `COMMIT_EDITMSG` (a
        // verbose commit's diff), `lfs/` (every file ever added to LFS,
        // and crash logs; the copy carries LFS pointers).
        name => name.starts_with("sharedindex."),
    };
    if needed {
        Ok(rest)
    } else {
        Err(top(root, if first == "info" { 2 } else { 1 }))
    }
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
    let part = match git_part(source, &rel) {
        Ok(part) => part,
        Err(top) if included(&rel) => {
            // Named by the person: what it reaches is packed too.
            let names_commits = top
                .file_name()
                .is_some_and(|n| matches!(n.to_str(), Some("logs" | "ORIG_HEAD" | "FETCH_HEAD")));
            if let (true, Some(git_dir)) = (names_commits, top.parent()) {
                selection.pack_also(git_dir.to_owned(), &rel);
            }
            selection.files.push(rel);
            return Ok(());
        }
        Err(top) => {
            let top_name = top
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let reason = if name.contains("credentials") {
                "git's credential store"
            } else if matches!(top_name.as_str(), "logs" | "ORIG_HEAD" | "FETCH_HEAD") {
                "it reaches commits no branch does (what a reset, an amend or a fetch left behind)"
            } else {
                "not part of what git needs (hooks, backups, a tool's own files)"
            };
            selection.leave_out_once(top, reason);
            return Ok(());
        }
    };
    let first = part
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    let git_dir: PathBuf = {
        let depth = rel.components().count() - part.components().count();
        rel.components().take(depth).collect()
    };
    // The object store is packed anew from what the copy keeps
    // ([`objects`]); no file of it is copied as it is.
    if first == "objects" {
        selection.git_dirs.entry(git_dir).or_default();
        return Ok(());
    }
    if objects::is_dropped_ref(&part.to_string_lossy()) {
        if included(&rel) {
            // Named by the person: what it reaches is packed too.
            selection.pack_also(git_dir, &rel);
            selection.files.push(rel);
        } else {
            let top = git_dir.join(part.components().take(2).collect::<PathBuf>());
            selection.leave_out_once(top, DROPPED_REFS);
        }
        return Ok(());
    }
    // The legacy `remotes/` and `branches/` remote definitions record URLs.
    let names_urls = matches!(first, "remotes" | "branches");
    if part == Path::new("packed-refs") {
        let text = fs_err::read_to_string(&full)?;
        let mut kept = String::with_capacity(text.len());
        let mut dropping = false;
        for line in text.split_inclusive('\n') {
            // `^ID` lines peel the tag on the line before.
            if line.starts_with('^') {
                if !dropping {
                    kept.push_str(line);
                }
                continue;
            }
            let name = line.split_whitespace().nth(1).unwrap_or_default();
            let named = included(&git_dir.join(name));
            dropping = objects::is_dropped_ref(name) && !named;
            if !dropping {
                kept.push_str(line);
            }
            if named && objects::is_dropped_ref(name) {
                // What the person named must be in the pack too.
                selection.pack_also(git_dir.clone(), &rel);
            }
        }
        if kept != text {
            selection
                .changes
                .push(format!("{}: {DROPPED_REFS}; left out", rel.display()));
        }
        selection.rewritten.insert(rel, kept.into_bytes());
    } else if part == Path::new("config") || part == Path::new("config.worktree") {
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
                        reason: format!(
                            "a remote definition that names a URL with a credential ({why})"
                        ),
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
                reason: "a remote definition that is not text (it may name URLs with credentials)"
                    .to_owned(),
            }),
        }
    } else if !matches!(first, "index" | "refs")
        && !first.starts_with("sharedindex.")
        && let Some(why) = secrets::why_secret(&rel, &full).or_else(|| {
            fs_err::read(&full)
                .ok()
                .and_then(|b| secrets::secret_in_text(&String::from_utf8_lossy(&b)))
        })
    {
        // Free text git keeps (a merge message naming the URL pulled, a
        // rebase's todo list with its `exec` lines).
        selection.left_out.push(LeftOut {
            path: rel,
            reason: format!("git's own text, but {why}"),
        });
    } else {
        selection.files.push(rel);
    }
    Ok(())
}

/// Why refs other than the kept kinds stay out.
const DROPPED_REFS: &str = "refs other than branches, tags, remotes and notes (the stash, filter-branch's backup, a tool's snapshots) keep what the branches do not";

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

/// What the preflight's progress says of a finished copy.
pub fn describe_copy(
    copied: &Copied,
    workspace: &WorkspacePlan,
    took: std::time::Duration,
) -> String {
    format!(
        "workspace: copied {} files ({:.1} MiB) from {} in {} ms{}",
        copied.files,
        copied.bytes as f64 / f64::from(1 << 20),
        workspace.source.display(),
        took.as_millis(),
        if copied.left_out > 0 {
            format!("; left out {} that look like secrets", copied.left_out)
        } else {
            String::new()
        }
    )
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
    let mut dirs = dirs;
    for git_dir in selection.git_dirs.keys() {
        // git knows a repository by these, empty or not (refs may all be
        // packed).
        for sub in [
            "objects",
            "objects/pack",
            "objects/info",
            "refs",
            "refs/heads",
            "refs/tags",
        ] {
            dirs.insert(git_dir.join(sub));
        }
    }
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
            // Opened without following a link or waiting on a pipe that
            // took the file's place, and sized from what was opened: a
            // file that changes meanwhile gives exactly the bytes its
            // header says (cut, or padded with zeros), never a stream out
            // of step.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let opened = file.metadata()?;
            if !opened.is_file() {
                continue;
            }
            let len = opened.len();
            header.set_size(len);
            header.set_cksum();
            let exact = io::Read::take(
                io::Read::chain(io::Read::take(file, len), io::repeat(0)),
                len,
            );
            tar.append_data(&mut header, rel, exact)?;
            copied.bytes += len;
        }
        copied.files += 1;
    }
    for (rel, bytes) in &selection.rewritten {
        let mut header = tar::Header::new_gnu();
        header.set_mode(if selection.executable.contains(rel) {
            0o755
        } else {
            0o644
        });
        header.set_size(bytes.len() as u64);
        own(&mut header);
        tar.append_data(&mut header, rel, &bytes[..])?;
        copied.bytes += bytes.len() as u64;
        copied.files += 1;
    }
    for (git_dir, named) in &selection.git_dirs {
        let scratch = tempfile::tempdir()?;
        let named: Vec<PathBuf> = named.iter().map(|n| source.join(n)).collect();
        // The pack holds what the copy's index names, not the original's.
        let index = match selection.rewritten.get(&git_dir.join("index")) {
            Some(bytes) => {
                let path = scratch.path().join("index");
                fs_err::write(&path, bytes)?;
                Some(path)
            }
            None => None,
        };
        let packed = scratch.path().join("pack");
        fs_err::create_dir(&packed)?;
        for file in objects::pack(&source.join(git_dir), &named, index.as_deref(), &packed)? {
            let meta = fs_err::metadata(&file)?;
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o444);
            header.set_size(meta.len());
            own(&mut header);
            let name = git_dir
                .join("objects/pack")
                .join(file.file_name().unwrap_or_default());
            tar.append_data(&mut header, name, fs_err::File::open(&file)?)?;
            copied.bytes += meta.len();
            copied.files += 1;
        }
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

    /// Found by review: a directory that is not a repository (a fake
    /// `.git` with no `HEAD`) holding credentials: never copied as it is.
    #[test]
    fn a_git_directory_git_cannot_read_is_left_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join("sub/.git");
        std::fs::create_dir_all(&git).unwrap();
        std::fs::write(git.join("credentials"), "https://u:tok3n@example.com\n").unwrap();
        std::fs::write(dir.path().join("sub/notes.txt"), "tok3n\n").unwrap();
        std::fs::write(dir.path().join("plain.txt"), "plain\n").unwrap();
        let plan = WorkspacePlan {
            source: dir.path().to_owned(),
            mode: WorkspaceMode::All,
            include: Vec::new(),
            left_out: Vec::new(),
            config_changes: Vec::new(),
        };
        let selection = select(&plan).unwrap();
        assert_eq!(selection.files, vec![PathBuf::from("plain.txt")]);
        assert!(selection.rewritten.is_empty());
        assert!(
            selection
                .left_out
                .iter()
                .any(|l| l.path == Path::new("sub")),
            "{:?}",
            selection.left_out
        );
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod git_tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        git_out(dir, args);
    }

    fn plan(source: &Path, include: &[&str]) -> WorkspacePlan {
        WorkspacePlan {
            source: source.to_owned(),
            mode: WorkspaceMode::Git,
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

    /// The copy as the bottle gets it, unpacked into a directory.
    fn copy_of(source: &Path) -> tempfile::TempDir {
        copy_including(source, &[])
    }

    fn copy_including(source: &Path, include: &[&str]) -> tempfile::TempDir {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut plan = plan(source, include);
        if !source.join(".git").exists() {
            plan.mode = WorkspaceMode::All;
        }
        let writer = std::thread::spawn(move || write_tar(&plan, tx).unwrap());
        let mut tar = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            tar.extend_from_slice(&chunk);
        }
        writer.join().unwrap();
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(&tar[..]).unpack(out.path()).unwrap();
        out
    }

    /// The regular files under `dir` (links not followed) whose bytes
    /// hold `needle`.
    fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let kind = entry.file_type().unwrap();
                if kind.is_dir() {
                    stack.push(entry.path());
                } else if kind.is_file()
                    && String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap())
                        .contains(needle)
                {
                    found.push(entry.path());
                }
            }
        }
        found
    }

    fn git_out(dir: &Path, args: &[&str]) -> String {
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
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Found by review: the object store went in as it was, and with it a
    /// stash of ignored files, a blob added and unstaged, the history
    /// filter-branch kept, and commits only a reflog reaches.
    #[test]
    fn only_reachable_objects_go_in() {
        let dir = repo();
        let root = dir.path();
        std::fs::write(root.join(".gitignore"), ".env\n").unwrap();
        git(root, &["add", ".gitignore"]);
        git(root, &["commit", "-q", "-m", "ignore"]);
        // A stash of the ignored .env.
        std::fs::write(root.join(".env"), "TOKEN=stashed-s3cret\n").unwrap();
        git(root, &["stash", "-q", "-a"]);
        // A blob added and then unstaged.
        std::fs::write(root.join("oops.txt"), "TOKEN=unstaged-s3cret\n").unwrap();
        git(root, &["add", "oops.txt"]);
        git(root, &["rm", "-q", "--cached", "oops.txt"]);
        std::fs::remove_file(root.join("oops.txt")).unwrap();
        // A commit reset away: only the reflog and ORIG_HEAD reach it.
        std::fs::write(root.join("README"), "TOKEN=reset-s3cret\n").unwrap();
        git(root, &["commit", "-q", "-am", "oops"]);
        git(root, &["reset", "-q", "--hard", "HEAD~1"]);
        // A backup ref as filter-branch leaves it.
        git(
            root,
            &["update-ref", "refs/original/refs/heads/main", "HEAD"],
        );
        git(root, &["pack-refs", "--all"]);
        // A staged change, which the copy must keep.
        std::fs::write(root.join("new.txt"), "staged\n").unwrap();
        git(root, &["add", "new.txt"]);

        let copy = copy_of(root);
        let all = git_out(
            copy.path(),
            &["cat-file", "--batch-all-objects", "--batch", "--unordered"],
        );
        assert!(!all.contains("s3cret"), "{all}");
        assert!(!copy.path().join(".git/logs").exists());
        assert!(!copy.path().join(".git/ORIG_HEAD").exists());
        let packed = std::fs::read_to_string(copy.path().join(".git/packed-refs")).unwrap();
        assert!(!packed.contains("refs/original"), "{packed}");
        assert!(packed.contains("refs/heads/main"), "{packed}");
        // The copy is a whole repository: history, the staged file.
        git_out(copy.path(), &["fsck", "--no-dangling"]);
        assert!(git_out(copy.path(), &["log", "--oneline"]).contains("ignore"));
        let status = git_out(copy.path(), &["status", "--porcelain"]);
        assert_eq!(status.trim(), "A  new.txt", "{status}");

        // Named by the person, the stash and the reflogs go in whole, with
        // what they reach.
        let copy = copy_including(root, &[".git/refs/stash", ".git/logs"]);
        git_out(copy.path(), &["fsck", "--no-dangling"]);
        let stash = git_out(copy.path(), &["show", "stash@{0}^3:.env"]);
        assert_eq!(stash, "TOKEN=stashed-s3cret\n");
        let reflog = git_out(copy.path(), &["log", "-g", "--format=%s", "HEAD"]);
        assert!(reflog.contains("oops"), "{reflog}");
    }

    /// Found by review: a tracked directory replaced by a link to
    /// elsewhere was read through the link, and a tracked link replaced
    /// by a file skipped every check.
    #[test]
    fn links_are_not_followed_out_and_a_replaced_link_is_looked_at() {
        let dir = repo();
        let root = dir.path();
        std::fs::create_dir(root.join("config")).unwrap();
        std::fs::write(root.join("config/settings.yml"), "db: placeholder\n").unwrap();
        std::os::unix::fs::symlink("settings.env", root.join("link.env")).unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "links"]);
        let private = tempfile::tempdir().unwrap();
        std::fs::write(private.path().join("settings.yml"), "db: real-s3cret\n").unwrap();
        std::fs::remove_dir_all(root.join("config")).unwrap();
        std::os::unix::fs::symlink(private.path(), root.join("config")).unwrap();
        std::fs::remove_file(root.join("link.env")).unwrap();
        std::fs::write(root.join("link.env"), "TOKEN=real-s3cret\n").unwrap();
        let selection = select(&plan(root, &[])).unwrap();
        let left_out: Vec<&Path> = selection
            .left_out
            .iter()
            .map(|l| l.path.as_path())
            .collect();
        assert!(
            left_out.contains(&Path::new("config/settings.yml")),
            "{left_out:?}"
        );
        assert!(left_out.contains(&Path::new("link.env")), "{left_out:?}");
        let copy = copy_of(root);
        let found = files_holding(copy.path(), "real-s3cret");
        assert!(found.is_empty(), "{found:?}");
    }

    /// Found by review: `--cwd` at a directory inside a repository copied
    /// every file, ignored ones and hidden local values included.
    #[test]
    fn a_directory_inside_a_repository_is_copied_by_git_rules() {
        let dir = repo();
        let root = dir.path();
        std::fs::create_dir(root.join("app")).unwrap();
        std::fs::write(root.join("app/.gitignore"), "local.yml\n").unwrap();
        std::fs::write(root.join("app/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(root.join("app/tracked.cfg"), "v=placeholder\n").unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "app"]);
        git(
            root,
            &["update-index", "--skip-worktree", "app/tracked.cfg"],
        );
        std::fs::write(root.join("app/tracked.cfg"), "v=real-s3cret\n").unwrap();
        std::fs::write(root.join("app/local.yml"), "password: real\n").unwrap();
        std::fs::write(root.join("app/new.rs"), "// new\n").unwrap();
        let mut plan = plan(&root.join("app"), &[]);
        plan.mode = WorkspaceMode::GitSubdir;
        let selection = select(&plan).unwrap();
        let copied: Vec<&Path> = selection.files.iter().map(PathBuf::as_path).collect();
        assert!(copied.contains(&Path::new("main.rs")), "{copied:?}");
        assert!(copied.contains(&Path::new("new.rs")), "{copied:?}");
        assert!(!copied.contains(&Path::new("local.yml")), "{copied:?}");
        assert_eq!(
            selection.rewritten.get(Path::new("tracked.cfg")).unwrap(),
            b"v=placeholder\n"
        );
        assert!(selection.git_dirs.is_empty());
    }

    /// Found by review: the index's resolve-undo record kept the blob of a
    /// popped stash after its conflict was resolved the other way, and the
    /// pack took every blob the index named.
    #[test]
    fn a_resolved_conflict_leaves_nothing_of_the_losing_side() {
        let dir = repo();
        let root = dir.path();
        std::fs::write(root.join("settings.py"), "PASSWORD = 'placeholder'\n").unwrap();
        git(root, &["add", "settings.py"]);
        git(root, &["commit", "-q", "-m", "settings"]);
        std::fs::write(root.join("settings.py"), "PASSWORD = 'hunter2-s3cret'\n").unwrap();
        git(root, &["stash", "-q"]);
        std::fs::write(root.join("settings.py"), "PASSWORD = 'changed'\n").unwrap();
        git(root, &["commit", "-q", "-am", "upstream change"]);
        // The pop conflicts; the person keeps their branch's side.
        let _ = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["stash", "pop", "-q"])
            .output()
            .unwrap();
        git(root, &["checkout", "--ours", "settings.py"]);
        git(root, &["add", "settings.py"]);
        git(root, &["stash", "drop", "-q"]);
        let copy = copy_of(root);
        let all = git_out(
            copy.path(),
            &["cat-file", "--batch-all-objects", "--batch", "--unordered"],
        );
        assert!(!all.contains("hunter2"), "{all}");
        git_out(copy.path(), &["fsck", "--no-dangling"]);
    }

    /// Found by review: a name that is not UTF-8 was dropped from the
    /// copy, so the bottle saw the file deleted.
    #[test]
    fn a_name_that_is_not_utf8_goes_in() {
        use std::os::unix::ffi::OsStrExt;
        let dir = repo();
        let root = dir.path();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(root.join(name), "latin-1 name\n").unwrap();
        std::fs::write(
            root.join(std::ffi::OsStr::from_bytes(b"new\xff.txt")),
            "x\n",
        )
        .unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "names"]);
        std::fs::write(
            root.join(std::ffi::OsStr::from_bytes(b"untracked\xfe")),
            "y\n",
        )
        .unwrap();
        let selection = select(&plan(root, &[])).unwrap();
        for bytes in [&b"caf\xe9.txt"[..], b"new\xff.txt", b"untracked\xfe"] {
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
            assert!(
                selection.files.contains(&path),
                "{path:?}: {:?}",
                selection.files
            );
        }
    }

    /// A script taken from the index keeps its executable bit.
    #[test]
    fn a_script_from_the_index_stays_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = repo();
        let root = dir.path();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\necho placeholder\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        git(root, &["add", "run.sh"]);
        git(root, &["commit", "-q", "-m", "script"]);
        git(root, &["update-index", "--skip-worktree", "run.sh"]);
        std::fs::write(root.join("run.sh"), "#!/bin/sh\necho real-s3cret\n").unwrap();
        let copy = copy_of(root);
        let script = copy.path().join("run.sh");
        assert_eq!(
            std::fs::read_to_string(&script).unwrap(),
            "#!/bin/sh\necho placeholder\n"
        );
        assert_eq!(
            std::fs::metadata(&script).unwrap().permissions().mode() & 0o111,
            0o111
        );
    }

    /// Found by review: a repository nested in a plain directory had its
    /// `.git` copied as it was, credentials and all, and its work tree
    /// without git's rules; a bare repository went in as raw files.
    #[test]
    fn repositories_in_a_plain_directory_are_copied_by_git_rules() {
        let outer = tempfile::tempdir().unwrap();
        let inner = repo();
        let sub = outer.path().join("sub");
        std::fs::rename(inner.path(), &sub).unwrap();
        std::fs::write(
            sub.join(".git/config"),
            "[remote \"origin\"]\n\turl = https://u:tok3n@example.com/r.git\n",
        )
        .unwrap();
        std::fs::write(
            sub.join(".git/credentials"),
            "https://u:tok3n@example.com\n",
        )
        .unwrap();
        std::fs::write(sub.join(".gitignore"), "local.yml\n").unwrap();
        std::fs::write(sub.join("local.yml"), "password: tok3n\n").unwrap();
        git(&sub, &["update-index", "--skip-worktree", "settings.env"]);
        std::fs::write(sub.join("settings.env"), "TOKEN=tok3n\n").unwrap();
        git(outer.path(), &["init", "-q", "--bare", "mirror.git"]);
        std::fs::write(outer.path().join("notes.txt"), "plain\n").unwrap();
        let mut plan = plan(outer.path(), &[]);
        plan.mode = WorkspaceMode::All;
        let selection = select(&plan).unwrap();
        assert!(selection.files.contains(&PathBuf::from("notes.txt")));
        assert!(selection.files.contains(&PathBuf::from("sub/README")));
        assert!(!selection.files.contains(&PathBuf::from("sub/local.yml")));
        assert!(!selection.files.iter().any(|f| f.starts_with("mirror.git")));
        assert!(selection.git_dirs.contains_key(Path::new("sub/.git")));
        let left_out: Vec<&Path> = selection
            .left_out
            .iter()
            .map(|l| l.path.as_path())
            .collect();
        assert!(left_out.contains(&Path::new("mirror.git")), "{left_out:?}");
        assert!(
            left_out.contains(&Path::new("sub/.git/credentials")),
            "{left_out:?}"
        );
        let copy = copy_of(outer.path());
        let found = files_holding(copy.path(), "tok3n");
        assert!(found.is_empty(), "{found:?}");
        git_out(&copy.path().join("sub"), &["log", "--oneline"]);
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
            ".git/git-crypt",
            ".git/hooks",
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
