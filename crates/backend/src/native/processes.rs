//! A native bottle's processes, on record in its state directory: the
//! native backend's labels. Each is named `PID:START`, which a recycled
//! pid cannot match, with the launcher that started it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::process::Launcher;
use crate::state::BottleDir;
use crate::{BackendError, Role};

/// `native/processes.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Processes {
    /// The launcher that started them (`PID:START`).
    pub launcher: String,
    /// Each role's bubblewrap process (`PID:START`).
    pub roles: BTreeMap<String, String>,
}

/// Where the record is.
pub fn path(dir: &BottleDir) -> PathBuf {
    super::native_dir(dir).join("processes.json")
}

impl Processes {
    /// The record, or an empty one.
    pub fn read(dir: &BottleDir) -> Processes {
        std::fs::read(path(dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records `process` as `role`'s, started by this launcher.
    pub fn add(dir: &BottleDir, role: Role, process: Launcher) -> Result<(), BackendError> {
        let me = Launcher::current()?.to_string();
        let mut record = Processes::read(dir);
        if record.launcher != me {
            // Left by an earlier run: its processes are gone with it.
            record = Processes {
                launcher: me,
                roles: BTreeMap::new(),
            };
        }
        record
            .roles
            .insert(role.as_str().to_owned(), process.to_string());
        dir.write_json(&path(dir), &record)
    }

    /// Each role's process, parsed.
    pub fn each(&self) -> impl Iterator<Item = (Role, Launcher)> + '_ {
        self.roles
            .iter()
            .filter_map(|(role, p)| Some((Role::parse(role)?, p.parse().ok()?)))
    }

    /// The role's process, if it still runs.
    pub fn alive(&self, role: Role) -> Option<Launcher> {
        self.each()
            .find(|(r, p)| *r == role && p.is_alive())
            .map(|(_, p)| p)
    }
}

/// The process `pid` started as its only child (the shim, under
/// bubblewrap's `--as-pid-1`), if any.
pub fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}
