//! What bot-bottle owns on this machine: bottles in the state root and, on
//! each usable backend, what it holds for their identities. `list`,
//! `cleanup` and `rm` all start here.

use std::collections::BTreeMap;

use bottle_backend::registry::AnyBackend;
use bottle_backend::state::{self, BottleState, Record};
use bottle_backend::{Backend, BackendError, BackendName, Found, Role};
use serde::Serialize;

use crate::settings::{Global, Start};

/// One bottle, as far as it is known.
pub struct Bottle {
    pub identity: String,
    pub record: Option<Record>,
    /// What each usable backend holds for it.
    pub found: Vec<Found>,
}

impl Bottle {
    /// Held by a live launcher: running, never to be cleaned up.
    pub fn is_live(&self) -> bool {
        self.record.as_ref().is_some_and(Record::is_live)
            || self.found.iter().any(Found::launcher_alive)
    }

    /// Belongs to another state root (another user's, or another
    /// `XDG_STATE_HOME`) whose directory still exists: not ours to judge.
    pub fn is_foreign(&self) -> bool {
        self.record.is_none()
            && self
                .found
                .iter()
                .filter_map(|f| f.state_dir.as_ref())
                .any(|dir| dir.is_dir())
    }

    /// `running`, `stopped`, `preserved`, `orphaned` (parts with no live
    /// launcher and no record saying it was stopped), `elsewhere` (another
    /// state root's) or `unreadable`.
    pub fn state(&self) -> &'static str {
        match &self.record {
            _ if self.is_live() => "running",
            None if self.is_foreign() => "elsewhere",
            None => "orphaned",
            Some(r) => match r.state() {
                Some(BottleState::Running) => "orphaned",
                Some(state) => state.as_str(),
                None => "unreadable",
            },
        }
    }

    /// The backend it runs on: as recorded, else as found.
    pub fn backend(&self) -> Option<BackendName> {
        self.record
            .as_ref()
            .and_then(|r| r.metadata.as_ref().ok())
            .and_then(|m| m.backend.parse().ok())
            .or_else(|| self.found.first().map(|f| f.backend))
    }

    pub fn services(&self) -> Vec<&'static str> {
        Role::ALL
            .iter()
            .filter(|&&role| self.found.iter().any(|f| f.running(role)))
            .map(|role| role.as_str())
            .collect()
    }
}

/// The row `list --format json` prints for a bottle: a stable contract.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub identity: &'a str,
    pub agent: Option<&'a str>,
    pub backend: &'static str,
    pub started_at: Option<&'a str>,
    pub state: &'static str,
    pub services: Vec<&'static str>,
    /// The health of each gate that runs and has a verdict:
    /// `{"gate": "healthy", "git": "starting"}`.
    pub health: BTreeMap<&'static str, &'a str>,
    /// Why the metadata cannot be read, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Bottle {
    pub fn row(&self) -> Row<'_> {
        let meta = self.record.as_ref().and_then(|r| r.metadata.as_ref().ok());
        Row {
            identity: &self.identity,
            agent: meta.map(|m| m.agent.as_str()),
            backend: self.backend().map_or("-", BackendName::as_str),
            started_at: meta.map(|m| m.started_at.as_str()),
            state: self.state(),
            services: self.services(),
            health: [Role::Gate, Role::Git]
                .into_iter()
                .filter_map(|role| {
                    let health = self.found.iter().find_map(|f| f.health(role))?;
                    Some((role.as_str(), health))
                })
                .collect(),
            problem: self
                .record
                .as_ref()
                .and_then(|r| r.metadata.as_ref().err())
                .map(ToString::to_string),
        }
    }
}

/// Every bottle: from the state root and every usable backend. A backend
/// that is not usable here is skipped; one that fails to answer is
/// reported.
pub async fn gather<B: Backend>(
    global: &Global,
    backends: &[B],
) -> (Vec<Bottle>, Vec<BackendError>) {
    let mut by_id: BTreeMap<String, Bottle> = state::records(&global.state_root)
        .into_iter()
        .map(|r| {
            (
                r.identity.clone(),
                Bottle {
                    identity: r.identity.clone(),
                    record: Some(r),
                    found: Vec::new(),
                },
            )
        })
        .collect();
    let mut trouble = Vec::new();
    let found = futures_util::future::join_all(backends.iter().map(|b| async move {
        if b.availability().await.is_usable() {
            Some(b.enumerate(&global.state_root).await)
        } else {
            None
        }
    }))
    .await;
    for result in found.into_iter().flatten() {
        match result {
            Ok(found) => {
                for (identity, parts) in found {
                    by_id
                        .entry(identity.clone())
                        .or_insert_with(|| Bottle {
                            identity,
                            record: None,
                            found: Vec::new(),
                        })
                        .found
                        .push(parts);
                }
            }
            Err(err) => trouble.push(err),
        }
    }
    (by_id.into_values().collect(), trouble)
}

/// Every backend of this build, with the settings of `start`.
pub fn backends(global: &Global) -> anyhow::Result<Vec<AnyBackend>> {
    let settings = Start::resolve(None, global)?;
    Ok(AnyBackend::all(&settings.backends))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bottle_backend::fake::FakeBackend;
    use bottle_backend::state::{BottleDir, Metadata};
    use bottle_backend::{Part, process::Launcher};

    const V1: &str = include_str!("../../../backend/tests/fixtures/metadata-v1.json");

    pub(crate) fn global(root: &std::path::Path) -> Global {
        Global {
            home: root.to_owned(),
            cwd: root.to_owned(),
            state_root: root.join("state"),
            config_home: None,
            cache_root: root.join("cache"),
        }
    }

    /// A recorded bottle `identity` in `state`, running under `launcher`
    /// or stopped.
    pub(crate) fn record(global: &Global, identity: &str, launcher: Option<Launcher>) {
        let mut plan = Metadata::parse(V1.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
            .plan;
        plan.identity = identity.to_owned();
        plan.state_dir = global.state_root.join(identity);
        let dir = BottleDir::new(&plan.state_dir);
        dir.create().unwrap_or_else(|e| panic!("{e}"));
        let mut meta = Metadata::starting(&plan);
        match launcher {
            Some(l) => meta.launcher = l.to_string(),
            None => meta.stop(false),
        }
        meta.write(&dir).unwrap_or_else(|e| panic!("{e}"));
    }

    pub(crate) fn found(backend: BackendName, launcher: Option<Launcher>) -> Found {
        let mut f = Found::new(backend);
        f.launcher = launcher.map(|l| l.to_string());
        f.parts.push(Part {
            kind: "process",
            name: "gate (pid 1)".into(),
            role: Some(Role::Gate),
            running: true,
            health: Some("healthy".into()),
        });
        f
    }

    #[test]
    fn bottles_are_joined_across_the_state_and_every_usable_backend() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let global = global(root.path());
        let me = Launcher::current().unwrap_or_else(|e| panic!("{e}"));
        let gone = Launcher {
            pid: me.pid,
            start: 1,
        };
        record(&global, "live-aaaaaa", Some(me));
        record(&global, "stopped-bbbbbb", None);
        record(&global, "crashed-cccccc", Some(gone));
        let mut native = FakeBackend::new(BackendName::Native);
        native
            .found
            .insert("live-aaaaaa".into(), found(BackendName::Native, Some(me)));
        let mut docker = FakeBackend::new(BackendName::Docker);
        docker.found.insert(
            "stray-dddddd".into(),
            found(BackendName::Docker, Some(gone)),
        );
        let mut absent = FakeBackend::new(BackendName::Docker);
        absent.usable = false;
        absent
            .found
            .insert("never-eeeeee".into(), found(BackendName::Docker, None));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let (bottles, trouble) = rt.block_on(gather(&global, &[native, docker, absent.clone()]));
        assert!(trouble.is_empty());
        let state = |id: &str| {
            bottles.iter().find(|b| b.identity == id).map(|b| {
                (
                    b.state(),
                    b.backend().map(BackendName::as_str),
                    b.services(),
                )
            })
        };
        assert_eq!(
            state("live-aaaaaa"),
            Some(("running", Some("docker"), vec!["gate"]))
        );
        assert_eq!(
            state("stopped-bbbbbb"),
            Some(("stopped", Some("docker"), vec![]))
        );
        assert_eq!(
            state("crashed-cccccc"),
            Some(("orphaned", Some("docker"), vec![]))
        );
        assert_eq!(
            state("stray-dddddd"),
            Some(("orphaned", Some("docker"), vec!["gate"]))
        );
        assert_eq!(
            state("never-eeeeee"),
            None,
            "an unusable backend is not asked"
        );
        assert!(absent.calls().is_empty());
        let row = bottles
            .iter()
            .find(|b| b.identity == "live-aaaaaa")
            .map(|b| serde_json::to_value(b.row()).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(row["health"]["gate"], "healthy");
    }
}
