//! Serving the control socket (see [`bottle_contract::control`]): the
//! person's approvals and the launcher's refreshed secrets, applied to the
//! running gate and audited.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::audit::Audit;
use crate::egress::Live;
use crate::egress::credentials::{Route, Secret};
use bottle_manifest::host::{HostRule, normalize_host};

/// File name of the control socket, the protocol and its client: shared
/// with the person's commands and the launcher.
pub use bottle_contract::control::{CONTROL_SOCKET, Change, Reply, send};
/// Longest control line: a route's secret and its names.
const MAX_LINE: usize = 64 * 1024;

/// Serves the control socket: applies each change to `live`.
pub async fn serve(listener: UnixListener, live: Arc<Live>, audit: Arc<Audit>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (reader, mut writer) = stream.into_split();
        let mut line = String::new();
        let limited = tokio::io::AsyncReadExt::take(reader, MAX_LINE as u64);
        // One client at a time: a silent one is dropped rather than
        // holding up every approval and rotation.
        let read = match tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(limited).read_line(&mut line),
        )
        .await
        {
            Ok(read) => read,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no change within 5 s",
            )),
        };
        let reply = match read {
            Ok(_) => match serde_json::from_str::<Change>(&line) {
                Ok(change) => apply(&live, &audit, change),
                Err(e) => Reply {
                    ok: false,
                    message: format!("not a change: {e}"),
                },
            },
            Err(e) => Reply {
                ok: false,
                message: e.to_string(),
            },
        };
        if let Ok(mut bytes) = serde_json::to_vec(&reply) {
            bytes.push(b'\n');
            let _ = writer.write_all(&bytes).await;
        }
    }
}

/// Applies one change and audits it.
fn apply(live: &Live, audit: &Audit, change: Change) -> Reply {
    let mut fields = serde_json::Map::new();
    let result = match change {
        Change::Allow {
            rule,
            request,
            decided_by,
        } => {
            fields.insert("request".into(), request.into());
            fields.insert("decided_by".into(), decided_by.into());
            fields.insert("rule".into(), rule.clone().into());
            HostRule::parse(&rule)
                .map_err(|e| e.to_string())
                .map(|parsed| {
                    live.allow(parsed);
                    format!("allowed {rule}")
                })
        }
        Change::Route {
            host,
            header,
            scheme,
            secret,
            request,
            decided_by,
        } => {
            fields.insert("request".into(), request.into());
            fields.insert("decided_by".into(), decided_by.into());
            fields.insert("route".into(), host.clone().into());
            fields.insert("header".into(), header.clone().into());
            route(host, header, scheme, secret).and_then(|(route, rule)| {
                let host = route.host.to_string();
                live.add_route(route)?;
                live.allow(rule);
                Ok(format!("route to {host} in force"))
            })
        }
        Change::Image {
            image,
            request,
            decided_by,
        } => {
            fields.insert("request".into(), request.into());
            fields.insert("decided_by".into(), decided_by.into());
            fields.insert("image".into(), image.clone().into());
            live.set_image(image.clone());
            Ok(format!("the bottle restarts on {image}"))
        }
        Change::Rotate { host, secret } => {
            fields.insert("rotated".into(), host.clone().into());
            fields.insert("decided_by".into(), "launcher".into());
            checked_secret(&secret)
                .and_then(|()| normalize_host(&host).map_err(|e| e.to_string()))
                .and_then(|name| live.rotate(&name, Secret::new(secret)))
                .map(|()| format!("the route to {host} sends its new secret"))
        }
    };
    match result {
        Ok(message) => {
            audit.record("supervise", "applied", fields);
            Reply { ok: true, message }
        }
        Err(message) => {
            fields.insert("error".into(), message.clone().into());
            audit.record("supervise", "apply_failed", fields);
            Reply { ok: false, message }
        }
    }
}

fn route(
    host: String,
    header: String,
    scheme: String,
    secret: String,
) -> Result<(Route, HostRule), String> {
    let name = normalize_host(&host).map_err(|e| e.to_string())?;
    let rule = HostRule::parse(&host).map_err(|e| e.to_string())?;
    let header = http::HeaderName::from_bytes(header.as_bytes()).map_err(|e| e.to_string())?;
    checked_secret(&secret)?;
    Ok((
        Route::whole_host(name, header, scheme, Secret::new(secret)),
        rule,
    ))
}

/// A secret that can go in a header value.
fn checked_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() || http::HeaderValue::from_str(secret).is_err() {
        return Err(
            "the secret is empty or holds what a header value cannot (a line break, a control character)"
                .to_owned(),
        );
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::egress::Policy;
    use crate::egress::credentials::Credentials;
    use std::os::fd::AsRawFd;

    #[tokio::test]
    async fn a_deep_state_directory_still_reaches_the_gate_and_rules_are_not_doubled() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let socket = deep.join(CONTROL_SOCKET);
        assert!(socket.as_os_str().len() >= bottle_contract::control::SUN_PATH_MAX);
        let dir = std::fs::File::open(&deep).unwrap();
        let short = format!("/proc/self/fd/{}/{CONTROL_SOCKET}", dir.as_raw_fd());
        let listener = UnixListener::bind(&short).unwrap();
        let live = Arc::new(Live::new(
            Policy::new(Vec::new(), &crate::config::EgressConfig::default()),
            Credentials::none(),
        ));
        let audit = Arc::new(Audit::open(&root.path().join("audit.jsonl")).unwrap());
        tokio::spawn(serve(listener, Arc::clone(&live), audit));
        let change = Change::Allow {
            rule: "a.test".into(),
            request: "r-000001".into(),
            decided_by: "tester".into(),
        };
        let reply = send(&socket, &change).await.unwrap();
        assert!(reply.ok, "{}", reply.message);
        // The same rule approved again, spelled otherwise, adds nothing.
        let again = Change::Allow {
            rule: "A.TEST.".into(),
            request: "r-000002".into(),
            decided_by: "tester".into(),
        };
        assert!(send(&socket, &again).await.unwrap().ok);
        assert_eq!(live.policy().rules().collect::<Vec<_>>(), ["a.test"]);
    }
}
