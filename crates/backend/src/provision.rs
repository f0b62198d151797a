//! Provisioning, the part every backend shares, in the order the plan
//! states (ca → prompt → skills → git → supervise): the CA is written by
//! [`crate::lifecycle`] before anything starts; the system prompt and the
//! MCP configuration are files of the state directory that each backend
//! mounts read-only at their paths in the sandbox; the skills are one tar
//! stream, owned by the agent, that each backend unpacks into the agent's
//! home; the git gate's keys stay in its own directory.

use std::io;
use std::path::Path;

use bottle_manifest::plan::AGENT_UID;
use bottle_manifest::provision::ProvisionPlan;
use bytes::Bytes;

use crate::BackendError;
use crate::state::BottleDir;

/// Writes the prompt and, with supervise, the MCP configuration into the
/// state directory, whence they are mounted; returns each file with the
/// path it is mounted at.
pub fn write_files(
    dir: &BottleDir,
    plan: &ProvisionPlan,
) -> Result<Vec<(std::path::PathBuf, String)>, BackendError> {
    let mut files = vec![(plan.prompt_file.clone(), plan.prompt.clone())];
    if let (Some(path), Some(json)) = (&plan.mcp_config, plan.mcp_config_json()) {
        files.push((path.clone(), json));
    }
    // The keys the shim merges into the agent's home.
    files.extend(
        plan.home_merges()
            .into_iter()
            .map(|m| (m.source, m.json.to_owned())),
    );
    let mut mounts = Vec::new();
    for (inside, contents) in files {
        // Named by the whole path: two mounts never share a file.
        let name = inside.trim_start_matches('/').replace('/', "-");
        let host = dir.write_provision_file(&name, contents.as_bytes())?;
        mounts.push((host, inside));
    }
    Ok(mounts)
}

/// The skills as a tar stream of `.claude/skills/NAME/…`, to unpack in
/// the agent's home; `None` when the agent has none.
pub fn skills(plan: &ProvisionPlan) -> Result<Option<Bytes>, BackendError> {
    if plan.skills.is_empty() {
        return Ok(None);
    }
    skills_tar(&plan.skills).map(Some)
}

/// `.claude/skills/NAME/…` for each skill, owned by the agent. Symbolic
/// links are copied as links, never followed: a skill cannot pull other
/// host files into the bottle.
fn skills_tar(skills: &[bottle_manifest::provision::SkillPlan]) -> Result<Bytes, BackendError> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    for dir in [".claude", ".claude/skills"] {
        append_dir(&mut tar, Path::new(dir))?;
    }
    for skill in skills {
        let meta = std::fs::metadata(&skill.source).map_err(|source| BackendError::Io {
            path: skill.source.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(BackendError::Other(io::Error::other(format!(
                "skill {:?} at {} is not a directory: create ~/.claude/skills/{}/ or remove it from the agent",
                skill.name,
                skill.source.display(),
                skill.name
            ))));
        }
        let into = Path::new(".claude/skills").join(&skill.name);
        append_tree(&mut tar, &skill.source, &into)?;
    }
    Ok(Bytes::from(tar.into_inner()?))
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &Path) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    own(&mut header);
    tar.append_data(&mut header, path, io::empty())
}

fn append_tree(
    tar: &mut tar::Builder<Vec<u8>>,
    source: &Path,
    into: &Path,
) -> Result<(), BackendError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| BackendError::Io { path, source }
    };
    append_dir(tar, into)?;
    let mut entries: Vec<_> = std::fs::read_dir(source)
        .map_err(io_err(source))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = into.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if meta.is_dir() {
            append_tree(tar, &path, &rel)?;
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        own(&mut header);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_err(&path))?;
            tar.append_link(&mut header, &rel, target)?;
        } else if meta.is_file() {
            let file = std::fs::File::open(&path).map_err(io_err(&path))?;
            tar.append_data(&mut header, &rel, file)?;
        }
    }
    Ok(())
}

fn own(header: &mut tar::Header) {
    header.set_uid(u64::from(AGENT_UID));
    header.set_gid(u64::from(AGENT_UID));
    header.set_cksum();
}
