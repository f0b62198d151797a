//! Files the gate and the person's `bottle` commands both write in a
//! bottle's state directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;

/// Writes `value` as pretty JSON to `path`, readable by the user alone,
/// atomically: a temporary file beside it (named for this process, so two
/// writers never share one) renamed over it. A reader sees the old file or
/// the new one, never half of either.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes))?;
    std::fs::rename(&tmp, path)
}
