//! What bot-bottle owns on this machine: bottles in the state root and, on
//! each available backend, the resources labelled with their identities.
//! `list`, `cleanup` and `rm` all start here.

use std::collections::BTreeMap;

use bottle_backend::docker::inventory::{self, Resources};
use bottle_backend::state::{self, Record};
use serde::Serialize;

use crate::settings::Global;

/// One bottle, as far as it is known.
pub struct Bottle {
    pub identity: String,
    pub record: Option<Record>,
    /// `None` when Docker is not available here.
    pub docker: Option<Resources>,
}

impl Bottle {
    /// Held by a live launcher: running, never to be cleaned up.
    pub fn is_live(&self) -> bool {
        self.record.as_ref().is_some_and(Record::is_live)
            || self.docker.as_ref().is_some_and(Resources::launcher_alive)
    }

    /// Belongs to another state root (another user's, or another
    /// `XDG_STATE_HOME`) whose directory still exists: not ours to judge.
    pub fn is_foreign(&self) -> bool {
        self.record.is_none()
            && self
                .docker
                .as_ref()
                .and_then(|d| d.state_dir.as_ref())
                .is_some_and(|dir| dir.is_dir())
    }

    /// `running`, `stopped`, `preserved`, or `orphaned` (resources with no
    /// live launcher and no record saying it was stopped).
    pub fn state(&self) -> &str {
        match &self.record {
            _ if self.is_live() => "running",
            None if self.is_foreign() => "elsewhere",
            Some(r) if r.state() == "running" => "orphaned",
            Some(r) => r.state(),
            None => "orphaned",
        }
    }

    pub fn services(&self) -> Vec<&'static str> {
        let Some(d) = &self.docker else {
            return Vec::new();
        };
        ["agent", "gate", "git"]
            .into_iter()
            .filter(|role| d.running(role))
            .collect()
    }
}

/// The row `list --format json` prints for a bottle: a stable contract.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub identity: &'a str,
    pub agent: Option<&'a str>,
    pub backend: &'a str,
    pub started_at: Option<&'a str>,
    pub state: &'a str,
    pub services: Vec<&'static str>,
    /// The health of each gate that runs and has a verdict:
    /// `{"gate": "healthy", "git": "starting"}`.
    pub health: std::collections::BTreeMap<&'static str, &'a str>,
}

impl Bottle {
    pub fn row(&self) -> Row<'_> {
        let meta = self.record.as_ref().map(|r| &r.metadata);
        Row {
            identity: &self.identity,
            agent: meta.and_then(|m| m["agent"].as_str()),
            backend: meta.and_then(|m| m["backend"].as_str()).unwrap_or("docker"),
            started_at: meta.and_then(|m| m["started_at"].as_str()),
            state: self.state(),
            services: self.services(),
            health: ["gate", "git"]
                .into_iter()
                .filter_map(|role| Some((role, self.docker.as_ref()?.health(role)?)))
                .collect(),
        }
    }
}

/// Every bottle: from the state root and every available backend.
pub async fn gather(global: &Global) -> (Vec<Bottle>, Option<bottle_backend::BackendError>) {
    let mut by_id: BTreeMap<String, Bottle> = state::records(&global.state_root)
        .into_iter()
        .map(|r| {
            (
                r.identity.clone(),
                Bottle {
                    identity: r.identity.clone(),
                    record: Some(r),
                    docker: None,
                },
            )
        })
        .collect();
    // A missing engine is skipped, not an error: list what the state knows.
    let mut trouble = None;
    if let Ok(engine) = bottle_backend::docker::connect().await {
        match inventory::by_identity(&engine).await {
            Ok(found) => {
                for bottle in by_id.values_mut() {
                    bottle.docker = Some(Resources::default());
                }
                for (identity, resources) in found {
                    by_id
                        .entry(identity.clone())
                        .or_insert_with(|| Bottle {
                            identity,
                            record: None,
                            docker: None,
                        })
                        .docker = Some(resources);
                }
            }
            Err(err) => trouble = Some(err),
        }
    }
    (by_id.into_values().collect(), trouble)
}
