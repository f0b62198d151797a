//! The control socket: how the person's `bottle approve` widens a running
//! gate. It lives in the bottle's `supervise/` directory, which is mounted
//! into the gate only — never into the agent's sandbox — and is readable
//! by the launching user alone (mode 0600), so nothing inside the bottle
//! can reach it, let alone approve its own requests.
//!
//! One JSON line each way per connection: a [`Change`] in, a [`Reply`] out.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::audit::Audit;
use crate::egress::Live;
use crate::egress::credentials::{Route, Secret};
use bottle_manifest::host::{HostRule, normalize_host};

/// File name of the control socket in the supervise directory.
pub use bottle_contract::config::CONTROL_SOCKET;
/// Longest control line: a route's secret and its names.
const MAX_LINE: usize = 64 * 1024;

/// A change the person approved, to apply now.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Allow one more rule.
    Allow {
        rule: String,
        request: String,
        decided_by: String,
    },
    /// Add a credential route (and allow its host on 443).
    Route {
        host: String,
        header: String,
        scheme: String,
        secret: String,
        request: String,
        decided_by: String,
    },
    /// The bottle is being restarted on a rebuilt image.
    Image {
        image: String,
        request: String,
        decided_by: String,
    },
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Allow { rule, request, .. } => write!(f, "Allow({rule}, {request})"),
            Change::Route {
                host,
                header,
                request,
                ..
            } => {
                write!(f, "Route({host}, {header}, secret ***, {request})")
            }
            Change::Image { image, request, .. } => write!(f, "Image({image}, {request})"),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

/// Sends `change` to the gate listening on `socket` and waits for its
/// answer. An error means the gate did not apply it.
pub async fn send(socket: &Path, change: &Change) -> std::io::Result<Reply> {
    let exchange = async {
        let mut stream = connect(socket).await?;
        let mut line = serde_json::to_vec(change).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).await?;
        serde_json::from_str::<Reply>(&answer)
            .map_err(|e| std::io::Error::other(format!("the gate answered {answer:?}: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the gate did not answer"))?
}

/// Longest path `connect(2)` takes for a Unix socket, with its NUL.
const SUN_PATH_MAX: usize = 108;

/// Connects to `socket`, also when its path is longer than a socket
/// address holds (a deep state directory): through the directory's file
/// descriptor, `/proc/self/fd/N/NAME`.
async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    if socket.as_os_str().len() < SUN_PATH_MAX {
        return UnixStream::connect(socket).await;
    }
    use std::os::fd::AsRawFd;
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return UnixStream::connect(socket).await;
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let stream = UnixStream::connect(&short).await;
    drop(dir);
    stream
}

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
        let read = BufReader::new(limited).read_line(&mut line).await;
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
    if secret.is_empty() || secret.contains(['\r', '\n', '\0']) {
        return Err("the secret is empty or spans lines".to_owned());
    }
    Ok((
        Route::whole_host(name, header, scheme, Secret::new(secret)),
        rule,
    ))
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
        assert!(socket.as_os_str().len() >= SUN_PATH_MAX);
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
