//! The objects of a copied repository: only those its kept refs, HEADs,
//! operation state and index reach.
//!
//! A repository's object store holds more than its branches: a stash of
//! ignored files (`git stash -a` keeps `.env`), a blob added and then
//! unstaged, the history `filter-branch` kept in `refs/original/` after a
//! secret was taken out, commits only a reflog still reaches. None of that
//! is copied: the store is never copied as it is, but packed anew with
//! `git pack-objects --revs` from what the copy keeps.

use std::io;
use std::path::{Path, PathBuf};

use super::tracked::{git, git_with_index};

/// Refs (`refs/…`) that are not copied, nor what only they reach: every
/// kind but those in [`KEPT_REFS`].
pub fn is_dropped_ref(name: &str) -> bool {
    name.starts_with("refs/") && !KEPT_REFS.iter().any(|kept| name.starts_with(kept))
}

/// The kinds of refs a copy keeps. Anything else a tool keeps under
/// `refs/` (the stash, `filter-branch`'s `refs/original/`, an editor's
/// work-in-progress snapshots, another tool's private history) stays out
/// with what only it reaches.
const KEPT_REFS: &[&str] = &[
    "refs/heads/",
    "refs/tags/",
    "refs/remotes/",
    "refs/notes/",
    "refs/replace/",
    "refs/bisect/",
    "refs/rewritten/",
    "refs/worktree/",
];

/// The heads of an operation in progress: their commits are needed, and
/// one of them present says an operation is in progress.
const OPERATION_HEADS: &[&str] = &[
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "REBASE_HEAD",
];

/// Other files that name commits the repository's state needs.
const STATE_FILES: &[&str] = &[
    "HEAD",
    "rebase-merge/onto",
    "rebase-merge/orig-head",
    "rebase-apply/onto",
    "rebase-apply/orig-head",
];

/// Whether `word` is an object id (SHA-1 or SHA-256, in hex).
fn is_object_id(word: &str) -> bool {
    matches!(word.len(), 40 | 64) && word.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the pack starts from: every kept ref, and the commits the HEADs
/// and operation state of the repository and its worktrees name.
fn tips(git_dir: &Path) -> io::Result<Vec<String>> {
    let listed = git(
        git_dir,
        &[
            "--git-dir=.",
            "for-each-ref",
            "--format=%(objectname) %(refname)",
        ],
        None,
    )?;
    let mut tips: Vec<String> = String::from_utf8_lossy(&listed)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, name)| !is_dropped_ref(name))
        .map(|(id, _)| id.to_owned())
        .collect();
    let mut dirs = vec![git_dir.to_owned()];
    if let Ok(worktrees) = std::fs::read_dir(git_dir.join("worktrees")) {
        dirs.extend(worktrees.filter_map(Result::ok).map(|e| e.path()));
    }
    for dir in dirs {
        // `AUTO_MERGE` only within an operation: a conflicted `stash pop`
        // leaves one behind whose tree holds the stash.
        let operation = OPERATION_HEADS.iter().any(|f| dir.join(f).is_file());
        let auto_merge = operation.then_some("AUTO_MERGE");
        let files = STATE_FILES.iter().chain(OPERATION_HEADS).copied();
        for file in files.chain(auto_merge) {
            let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
                continue;
            };
            for line in text.lines() {
                let id = line.split_whitespace().next().unwrap_or_default();
                if is_object_id(id) {
                    tips.push(id.to_owned());
                }
            }
        }
    }
    tips.sort();
    tips.dedup();
    Ok(tips)
}

/// The index of `git_dir` (`index`, a copy of its file) as the copy gets
/// it: without the resolve-undo record (it keeps the blobs of every side
/// of a resolved conflict, a stash's included), the untracked cache (it
/// names host paths) and a split index, and without the entries in
/// `remove` (files the copy leaves out).
pub fn clean_index(git_dir: &Path, index: &Path, remove: &[PathBuf]) -> io::Result<Vec<u8>> {
    let scratch = tempfile::tempdir()?;
    let copy = scratch.path().join("index");
    fs_err::copy(index, &copy)?;
    git_with_index(
        git_dir,
        &[
            "--git-dir=.",
            "update-index",
            "--clear-resolve-undo",
            "--no-untracked-cache",
            "--no-split-index",
        ],
        None,
        Some(&copy),
    )?;
    if !remove.is_empty() {
        let mut input = Vec::new();
        for path in remove {
            input.extend_from_slice(path.as_os_str().as_encoded_bytes());
            input.push(0);
        }
        git_with_index(
            git_dir,
            &[
                "--git-dir=.",
                "update-index",
                "--force-remove",
                "-z",
                "--stdin",
            ],
            Some(&input),
            Some(&copy),
        )?;
    }
    fs_err::read(&copy)
}

/// The object ids the `files` name (every hex word of the right length)
/// that the repository has.
fn existing(git_dir: &Path, files: &[PathBuf]) -> io::Result<Vec<String>> {
    let mut ids = Vec::new();
    for file in files {
        let text = fs_err::read_to_string(file).unwrap_or_default();
        ids.extend(
            text.split_whitespace()
                .filter(|w| is_object_id(w))
                .map(str::to_owned),
        );
    }
    if ids.is_empty() {
        return Ok(ids);
    }
    let mut input = ids.join("\n").into_bytes();
    input.push(b'\n');
    let out = git(
        git_dir,
        &["--git-dir=.", "cat-file", "--batch-check=%(objectname)"],
        Some(&input),
    )?;
    // Missing ids come back as `ID missing`.
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.ends_with(" missing") && !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Packs what the copy of `git_dir` keeps into `out` (`pack-ID.pack` and
/// its `.idx`), and returns the files written. `named`: files the person
/// named to be copied (a reflog, the stash) whose commits go in too.
pub fn pack(
    git_dir: &Path,
    named: &[PathBuf],
    index: Option<&Path>,
    out: &Path,
) -> io::Result<Vec<PathBuf>> {
    let mut tips = tips(git_dir)?;
    tips.extend(existing(git_dir, named)?);
    let mut input = tips.join("\n").into_bytes();
    input.push(b'\n');
    let base = out.join("pack");
    git_with_index(
        git_dir,
        &[
            "--git-dir=.",
            "pack-objects",
            "--revs",
            "--indexed-objects",
            "--quiet",
            &base.to_string_lossy(),
        ],
        Some(&input),
        index,
    )
    .map_err(|e| {
        io::Error::other(format!(
            "cannot pack the objects of {} for the copy ({e}); a copy takes only what the \
             repository's branches, tags, HEAD and index reach",
            git_dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = fs_err::read_dir(out)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack" || e == "idx"))
        .collect();
    files.sort();
    Ok(files)
}
