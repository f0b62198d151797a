//! Keys of the bottle's merged into a JSON file of the agent's home, such
//! as Claude Code's `~/.claude.json`, which the agent's tools also write:
//! what is there stays, the bottle's keys are set (objects merged key by
//! key), and the file is replaced whole, never left half written.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use serde_json::{Map, Value};

/// Merges the object in `source` into the one in `dest` (an empty one when
/// `dest` is missing), making `dest`'s directory when it is missing. A
/// `dest` that is a link or holds no JSON object is left as it is, and is
/// an error naming it: nothing of it is lost.
pub fn merge_into(source: &Path, dest: &Path) -> Result<(), String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", dest.display());
    let bottle: Value = serde_json::from_slice(
        &std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?,
    )
    .map_err(|e| format!("{}: {e}", source.display()))?;
    let Value::Object(bottle) = bottle else {
        return Err(format!("{}: not a JSON object", source.display()));
    };
    let dir = dest.parent().ok_or_else(|| at(&"no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| at(&e))?;
    let mut current = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(o_nofollow())
        .open(dest)
    {
        Ok(file) => {
            let value: Value =
                serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
                    at(&format!(
                        "not JSON ({e}); fix or remove it, and start the bottle again"
                    ))
                })?;
            match value {
                Value::Object(map) => map,
                _ => {
                    return Err(at(
                        &"not a JSON object; fix or remove it, and start the bottle again",
                    ));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(at(&e)),
    };
    merge(&mut current, bottle);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.bottle", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let bytes = serde_json::to_vec_pretty(&Value::Object(current)).map_err(|e| at(&e))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&tmp, dest))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            at(&e)
        })
}

/// `O_NOFOLLOW`: a link in the file's place is refused, not followed.
fn o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Sets `add`'s keys in `into`; where both hold an object, key by key.
fn merge(into: &mut Map<String, Value>, add: Map<String, Value>) {
    for (key, value) in add {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(mine)), Value::Object(theirs)) => merge(mine, theirs),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    fn source(dir: &Path, json: &str) -> std::path::PathBuf {
        let path = dir.join("bottle.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn what_is_there_stays_and_the_bottles_keys_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(
            dir.path(),
            r#"{"remoteDialogSeen": true, "projects": {"/workspace": {"hasTrustDialogAccepted": true}}}"#,
        );
        let dest = dir.path().join("home/.claude.json");
        // Missing: made, with its directory.
        merge_into(&src, &dest).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&dest).unwrap()).unwrap();
        assert_eq!(v["projects"]["/workspace"]["hasTrustDialogAccepted"], true);
        // The agent's own keys, and its own of a merged object, stay.
        std::fs::write(
            &dest,
            r#"{"numStartups": 7, "remoteDialogSeen": false, "projects": {"/workspace": {"allowedTools": ["x"]}, "/other": {}}}"#,
        )
        .unwrap();
        merge_into(&src, &dest).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&dest).unwrap()).unwrap();
        assert_eq!(v["numStartups"], 7);
        assert_eq!(v["remoteDialogSeen"], true);
        assert_eq!(v["projects"]["/workspace"]["allowedTools"][0], "x");
        assert_eq!(v["projects"]["/workspace"]["hasTrustDialogAccepted"], true);
        assert!(v["projects"]["/other"].is_object());
    }

    #[test]
    fn a_file_that_is_no_json_object_or_a_link_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), r#"{"a": 1}"#);
        let dest = dir.path().join(".claude.json");
        std::fs::write(&dest, "{ broken").unwrap();
        let err = merge_into(&src, &dest).unwrap_err();
        assert!(
            err.contains("not JSON") && err.contains("fix or remove it"),
            "{err}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"{ broken");

        let target = dir.path().join("elsewhere.json");
        std::fs::write(&target, "{}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(merge_into(&src, &link).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
    }
}
