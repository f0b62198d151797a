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
pub async fn gather(global: &Global, backends: &[AnyBackend]) -> (Vec<Bottle>, Vec<BackendError>) {
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
