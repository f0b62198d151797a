//! The bottle's networks and volumes: the gate's network (made for the
//! bottle or the person's), what the gate may never reach on it, and the
//! workspace and home volumes.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::InspectNetworkOptions;

use super::ROLE_LABEL;
use crate::BackendError;

pub(super) async fn create_network(
    docker: &Docker,
    name: &str,
    labels: &HashMap<String, String>,
) -> Result<(), BackendError> {
    let mut labels = labels.clone();
    labels.insert(ROLE_LABEL.into(), "egress".into());
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(false),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(|e| BackendError::docker(format!("create network {name}"), e))?;
    Ok(())
}

/// What the gate never connects to, whatever `allow_private` says: the
/// gateways of its network and every address of the host's own
/// interfaces (its LAN address, the Docker bridges): the host is never a
/// destination.
pub(super) fn refused_addresses(gateways: Vec<std::net::IpAddr>) -> Vec<std::net::IpAddr> {
    let mut out = gateways;
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for interface in interfaces {
            let Some(address) = interface.address else {
                continue;
            };
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                std::net::IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                std::net::IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Subnets and gateways of a network. A network that puts the gate in the
/// host's namespace, or in none, is refused (`gate_network` may name one
/// by its id).
pub(super) async fn network_addresses(
    docker: &Docker,
    name: &str,
) -> Result<(Vec<ipnet::IpNet>, Vec<std::net::IpAddr>), BackendError> {
    let network = match docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(n) => n,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(BackendError::NetworkMissing {
                name: name.to_owned(),
            });
        }
        Err(e) => return Err(BackendError::docker(format!("inspect network {name}"), e)),
    };
    if let Some(driver @ ("host" | "null")) = network.driver.as_deref() {
        return Err(BackendError::docker(
            format!("gate network {name}"),
            format!(
                "its driver is {driver}: the gate would share the host's namespace or have none; name a bridge network"
            ),
        ));
    }
    let configs = network.ipam.and_then(|i| i.config).unwrap_or_default();
    let subnets = configs
        .iter()
        .filter_map(|c| c.subnet.as_deref()?.parse().ok())
        .collect();
    let gateways = configs
        .iter()
        .filter_map(|c| c.gateway.as_deref()?.parse().ok())
        .collect();
    Ok((subnets, gateways))
}

pub(super) async fn create_volume(
    docker: &Docker,
    name: &str,
    labels: &HashMap<String, String>,
    role: &str,
) -> Result<(), BackendError> {
    let mut labels = labels.clone();
    labels.insert(ROLE_LABEL.into(), role.into());
    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(|e| BackendError::docker(format!("create volume {name}"), e))?;
    Ok(())
}
