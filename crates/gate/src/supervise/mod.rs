//! The supervise role (DESIGN.md §7): the agent asks for more through an
//! MCP server ([`tools`]), requests wait as files ([`requests`]) for a
//! person, and the person's approvals reach the running gate through a
//! socket the agent cannot see ([`control`]).

pub mod control;
pub mod requests;
pub mod tools;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::UnixListener;
use tower_service::Service;

use bottle_manifest::plan::{SUPERVISE_PATH, SUPERVISE_PORT};
use tools::{Shared, Supervisor};

/// Largest request body: a fragment (16 KiB) and a reason, JSON-escaped,
/// fit many times over; nothing an agent sends needs more.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Serves the MCP endpoint on `listener` (bridged to
/// `127.0.0.1:SUPERVISE_PORT` in the bottle). Requests must name that
/// address in `Host` (a page the agent's browser loads cannot rebind a name
/// to it) and the path [`SUPERVISE_PATH`].
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts([
            format!("127.0.0.1:{SUPERVISE_PORT}"),
            format!("localhost:{SUPERVISE_PORT}"),
        ])
        .with_max_request_body_bytes(MAX_BODY_BYTES);
    let mcp: StreamableHttpService<Supervisor, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(Supervisor::new(Arc::clone(&shared))),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "supervise accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mcp = mcp.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut mcp = mcp.clone();
                async move {
                    if req.uri().path() != SUPERVISE_PATH {
                        return Ok::<_, Infallible>(not_found());
                    }
                    mcp.call(req).await
                }
            });
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(%err, "supervise connection ended");
            }
        });
    }
}

fn not_found() -> Response<BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!(
            "the supervise server answers at {SUPERVISE_PATH}\n"
        )))
        .boxed(),
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}
