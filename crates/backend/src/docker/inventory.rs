//! What Docker holds for bot-bottle, found by label, never by name.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, ListNetworksOptions, ListVolumesOptions,
};

use super::{IDENTITY_LABEL, LAUNCHER_LABEL, MANAGED_LABEL, ROLE_LABEL, STATE_LABEL};
use crate::{BackendError, BackendName, Found, Part, Role};

/// Every labelled container, network and volume, by identity.
pub async fn by_identity(docker: &Docker) -> Result<BTreeMap<String, Found>, BackendError> {
    let filter = HashMap::from([("label".to_owned(), vec![IDENTITY_LABEL.to_owned()])]);
    let (containers, networks, volumes) = tokio::join!(
        docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filter.clone()),
            ..Default::default()
        })),
        docker.list_networks(Some(ListNetworksOptions {
            filters: Some(filter.clone()),
        })),
        docker.list_volumes(Some(ListVolumesOptions {
            filters: Some(filter.clone()),
        })),
    );
    let mut out: BTreeMap<String, Found> = BTreeMap::new();
    let found = || Found::new(BackendName::Docker);
    for c in containers.map_err(|e| BackendError::docker("list containers", e))? {
        let labels = c.labels.unwrap_or_default();
        let Some(identity) = labels.get(IDENTITY_LABEL) else {
            continue;
        };
        let entry = out.entry(identity.clone()).or_insert_with(found);
        if let Some(launcher) = labels.get(LAUNCHER_LABEL) {
            entry.launcher = Some(launcher.clone());
        }
        if let Some(dir) = labels.get(STATE_LABEL) {
            entry.state_dir = Some(dir.into());
        }
        entry.parts.push(Part {
            kind: "container",
            name: c
                .names
                .and_then(|n| n.first().cloned())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            role: labels.get(ROLE_LABEL).and_then(|r| Role::parse(r)),
            running: c.state.is_some_and(|s| s.to_string() == "running"),
            health: c.status.as_deref().and_then(health_of),
        });
    }
    for n in networks.map_err(|e| BackendError::docker("list networks", e))? {
        if let Some(identity) = n.labels.as_ref().and_then(|l| l.get(IDENTITY_LABEL)) {
            out.entry(identity.clone())
                .or_insert_with(found)
                .parts
                .push(Part {
                    kind: "network",
                    name: n.name.unwrap_or_default(),
                    role: None,
                    running: false,
                    health: None,
                });
        }
    }
    for v in volumes
        .map_err(|e| BackendError::docker("list volumes", e))?
        .volumes
        .unwrap_or_default()
    {
        if let Some(identity) = v.labels.get(IDENTITY_LABEL) {
            let entry = out.entry(identity.clone()).or_insert_with(found);
            if let Some(dir) = v.labels.get(STATE_LABEL) {
                entry.state_dir.get_or_insert_with(|| dir.into());
            }
            entry.parts.push(Part {
                kind: "volume",
                name: v.name,
                role: None,
                running: false,
                health: None,
            });
        }
    }
    Ok(out)
}

/// The health verdict in a container's status line (`Up 2 minutes
/// (healthy)`, `Up 3 seconds (health: starting)`).
fn health_of(status: &str) -> Option<String> {
    let inside = status.rsplit_once('(')?.1.strip_suffix(')')?;
    let verdict = inside.strip_prefix("health: ").unwrap_or(inside);
    matches!(verdict, "healthy" | "unhealthy" | "starting").then(|| verdict.to_owned())
}

/// Images bot-bottle built that no tag names any more (left behind by
/// rebuilds): safe to remove.
pub async fn dangling_images(docker: &Docker) -> Result<Vec<String>, BackendError> {
    let filters = HashMap::from([
        ("label".to_owned(), vec![format!("{MANAGED_LABEL}=true")]),
        ("dangling".to_owned(), vec!["true".to_owned()]),
    ]);
    let images = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| BackendError::docker("list images", e))?;
    Ok(images.into_iter().map(|i| i.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_read_from_the_status_line() {
        assert_eq!(
            health_of("Up 2 minutes (healthy)").as_deref(),
            Some("healthy")
        );
        assert_eq!(
            health_of("Up 3 seconds (health: starting)").as_deref(),
            Some("starting")
        );
        assert_eq!(
            health_of("Up 1 hour (unhealthy)").as_deref(),
            Some("unhealthy")
        );
        assert_eq!(health_of("Up 2 minutes"), None);
        assert_eq!(health_of("Exited (0) 5 seconds ago"), None);
    }
}
