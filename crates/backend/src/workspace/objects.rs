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

use super::tracked::git;

/// Refs that are not copied, nor what only they reach: the stash (it
/// keeps ignored and uncommitted files) and `filter-branch`'s backup of
/// rewritten history.
pub fn is_dropped_ref(name: &str) -> bool {
    name == "refs/stash" || name.starts_with("refs/stash/") || name.starts_with("refs/original/")
}

/// Files of an operation in progress that name commits it needs.
const STATE_FILES: &[&str] = &[
    "HEAD",
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "REBASE_HEAD",
    "AUTO_MERGE",
    "rebase-merge/onto",
    "rebase-merge/orig-head",
    "rebase-apply/onto",
    "rebase-apply/orig-head",
];

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
        for file in STATE_FILES {
            let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
                continue;
            };
            for line in text.lines() {
                let id = line.split_whitespace().next().unwrap_or_default();
                if matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    tips.push(id.to_owned());
                }
            }
        }
    }
    tips.sort();
    tips.dedup();
    Ok(tips)
}

/// The object ids the `files` name (every hex word of the right length)
/// that the repository has.
fn existing(git_dir: &Path, files: &[PathBuf]) -> io::Result<Vec<String>> {
    let mut ids = Vec::new();
    for file in files {
        let text = fs_err::read_to_string(file).unwrap_or_default();
        ids.extend(
            text.split_whitespace()
                .filter(|w| matches!(w.len(), 40 | 64) && w.bytes().all(|b| b.is_ascii_hexdigit()))
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
pub fn pack(git_dir: &Path, named: &[PathBuf], out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut tips = tips(git_dir)?;
    tips.extend(existing(git_dir, named)?);
    let mut input = tips.join("\n").into_bytes();
    input.push(b'\n');
    let base = out.join("pack");
    git(
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
