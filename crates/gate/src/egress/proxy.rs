//! The egress role's HTTP forward proxy, served on a Unix socket.
//!
//! It speaks the two forms a proxy client sends: absolute-form requests
//! (`GET http://host/path`) for plain HTTP, and `CONNECT host:port` for
//! everything else. Both are checked by the [`Policy`] before a byte goes
//! upstream. An allowed tunnel is answered `200` and then intercepted
//! ([`super::intercept`]), so each request inside is checked again.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bottle_manifest::host::split_host_port;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value};
use tokio::net::UnixListener;

use super::forward::{Body, Target, full};
use super::intercept::Tunnel;
use super::live::Live;
use super::upstream::{Refusal, Upstreams};
use crate::audit::{Audit, redact_query};
use crate::ca::LeafMinter;

/// How long the agent may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The egress role: policy, credentials, certificates, upstream
/// connections and the audit log.
///
/// Each worker thread of the gate has its own `Egress` (and so its own
/// upstream connection pools); the rest is shared.
pub struct Egress {
    /// The policy and routes now (approvals swap them while it runs).
    pub(crate) live: Arc<Live>,
    pub(crate) minter: Arc<LeafMinter>,
    pub(crate) upstreams: Upstreams,
    pub(crate) audit: Arc<Audit>,
}

impl Egress {
    pub fn new(
        live: Arc<Live>,
        minter: Arc<LeafMinter>,
        upstreams: Upstreams,
        audit: Arc<Audit>,
    ) -> Egress {
        Egress {
            live,
            minter,
            upstreams,
            audit,
        }
    }

    /// Serves proxy connections from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let egress = Arc::clone(&self);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let egress = Arc::clone(&egress);
                    async move { Ok::<_, Infallible>(egress.handle(req).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                if let Err(err) = served {
                    tracing::debug!(%err, "proxy connection ended with an error");
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if is_health_check(&req) {
            return Response::new(full("bottle gate: ok\n".to_owned()));
        }
        if req.method() == Method::CONNECT {
            self.connect(req).await
        } else {
            self.absolute(req).await
        }
    }

    /// `CONNECT host:port`: check, answer 200, then intercept the tunnel.
    async fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (host, port) = match req.uri().authority().map(|a| target(a.as_str())) {
            Some(Ok((host, Some(port)))) => (host, port),
            Some(Err(reason)) => {
                return self.refuse(bad_request_fields(&req), Refusal::agent(reason));
            }
            _ => {
                return self.refuse(
                    bad_request_fields(&req),
                    Refusal::agent("CONNECT needs a target of the form host:port"),
                );
            }
        };
        let mut fields = Map::new();
        fields.insert("method".into(), "CONNECT".into());
        fields.insert("host".into(), host.clone().into());
        fields.insert("port".into(), port.into());
        let allowed = match self.live.policy().check_target(&host, port, 443) {
            Ok(allowed) => allowed,
            Err(denial) => return self.refuse(fields, denial.into()),
        };
        fields.insert("host".into(), allowed.host.to_string().into());
        fields.insert("rule".into(), allowed.rule.clone().into());
        if let Some(leak) = self.leak_in_host(&host, &allowed.host) {
            return self.refuse(fields, super::forward::leak_refusal(&leak));
        }
        fields.insert("decision".into(), "allow".into());
        self.audit.record("egress", "connect", fields);

        let tunnel = Tunnel {
            host: allowed.host,
            port,
        };
        let egress = Arc::clone(&self);
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => egress.intercept(upgraded, tunnel).await,
                Err(err) => tracing::debug!(%err, "CONNECT upgrade failed"),
            }
        });
        Response::new(full(String::new()))
    }

    /// An absolute-form plain HTTP request.
    async fn absolute(&self, req: Request<Incoming>) -> Response<Body> {
        let uri = req.uri().clone();
        let Some(authority) = uri.authority() else {
            return self.refuse(
                bad_request_fields(&req),
                Refusal::agent(
                    "this is the bottle's egress proxy: send requests in absolute form (http://host/path) or use CONNECT",
                ),
            );
        };
        if uri.scheme_str() != Some("http") {
            return self.refuse(
                bad_request_fields(&req),
                Refusal::agent("only plain http:// URLs are forwarded in absolute form; HTTPS goes through CONNECT"),
            );
        }
        let (host, port) = match target(authority.as_str()) {
            Ok((host, port)) => (host, port.unwrap_or(80)),
            Err(reason) => return self.refuse(bad_request_fields(&req), Refusal::agent(reason)),
        };
        let allowed = match self.live.policy().check_target(&host, port, 80) {
            Ok(allowed) => allowed,
            Err(denial) => {
                let mut fields = bad_request_fields(&req);
                fields.insert("host".into(), host.into());
                fields.insert("port".into(), port.into());
                fields.insert(
                    "path".into(),
                    redact_query(uri.path_and_query().map_or("/", |p| p.as_str())).into(),
                );
                return self.refuse(fields, denial.into());
            }
        };
        if let Some(leak) = self.leak_in_host(&host, &allowed.host) {
            let mut fields = bad_request_fields(&req);
            fields.insert("host".into(), allowed.host.to_string().into());
            return self.refuse(fields, super::forward::leak_refusal(&leak));
        }
        let target = Target {
            https: false,
            host: allowed.host,
            port,
            rule: allowed.rule,
            tunnel: false,
        };
        self.forward(req, target).await
    }
}

impl Egress {
    /// A secret spelled into the host name itself, checked before the gate
    /// resolves the name: a DNS query is a way out too.
    fn leak_in_host(
        &self,
        raw: &str,
        host: &bottle_manifest::host::Host,
    ) -> Option<super::credentials::Leak> {
        let credentials = self.live.credentials();
        if credentials.is_empty() {
            return None;
        }
        credentials
            .find_leak_in_host(raw, host)
            .or_else(|| credentials.find_leak_in_host(&host.to_string(), host))
    }
}

/// `OPTIONS *`: the health check (`bottle health`), answered without a
/// record. It asks the proxy about itself, so it goes nowhere.
pub(crate) fn is_health_check<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS && req.uri() == "*"
}

fn bad_request_fields(req: &Request<Incoming>) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("method".into(), req.method().as_str().into());
    fields.insert("target".into(), redact_query(&req.uri().to_string()).into());
    fields
}

/// Splits a request target's authority into host and port, refusing what a
/// proxy target never needs and parsers disagree on: user information
/// (`evil@allowed.test`) and ports that are not 1–65535.
pub(crate) fn target(authority: &str) -> Result<(String, Option<u16>), String> {
    if authority.contains('@') {
        return Err("user information (user@host) in a proxy target is not allowed".to_owned());
    }
    split_host_port(authority)
        .map(|(host, port)| (host.to_owned(), port))
        .map_err(|e| e.to_string())
}
