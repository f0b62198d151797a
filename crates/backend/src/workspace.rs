//! The copy of the host's directory the agent works on (`--cwd`): a tar
//! stream, owned by the agent's user, of what git tracks plus untracked
//! files it does not ignore, and `.git` itself — or every file when the
//! directory is not a git repository. The host's directory is only read.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use tokio::sync::mpsc::Sender;

/// The agent's uid and gid, owner of every copied file.
const OWNER: u64 = bottle_manifest::plan::AGENT_UID as u64;
/// Size of the chunks sent while the tar is written.
const CHUNK: usize = 256 << 10;

/// The files to copy, relative to `source`, in a stable order.
pub fn files(source: &Path, mode: &str) -> io::Result<Vec<PathBuf>> {
    let mut out = BTreeSet::new();
    if mode == "git" {
        let listed = Command::new("git")
            .arg("-C")
            .arg(source)
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .output()?;
        if !listed.status.success() {
            return Err(io::Error::other(format!(
                "git ls-files failed in {}: {}",
                source.display(),
                String::from_utf8_lossy(&listed.stderr).trim()
            )));
        }
        for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let rel = PathBuf::from(String::from_utf8_lossy(name).into_owned());
            // Tracked but deleted in the work tree: nothing to copy.
            if source.join(&rel).symlink_metadata().is_ok() {
                out.insert(rel);
            }
        }
        walk(source, Path::new(".git"), &mut out)?;
    } else {
        walk(source, Path::new(""), &mut out)?;
    }
    Ok(out.into_iter().collect())
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
}

/// Writes the tar of `source` into `tx` in chunks.
pub fn write_tar(source: &Path, mode: &str, tx: Sender<Bytes>) -> io::Result<Copied> {
    let mut copied = Copied::default();
    let files = files(source, mode)?;
    let mut tar = tar::Builder::new(ChunkWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    });
    tar.follow_symlinks(false);
    let dirs: BTreeSet<PathBuf> = files
        .iter()
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
    for rel in &files {
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
