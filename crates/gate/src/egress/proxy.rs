//! The egress role's HTTP forward proxy, served on a Unix socket.
//!
//! It speaks the two forms a proxy client sends: absolute-form requests
//! (`GET http://host/path`) for plain HTTP, and `CONNECT host:port` for
//! everything else. Each is checked by [`Policy`] before a byte goes
//! upstream; the gate then connects only to addresses it has checked, so
//! the name it allowed and the address it reaches cannot drift apart.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bottle_manifest::host::{Host, split_host_port};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value};
use tokio::net::{TcpStream, UnixListener};

use super::policy::{Allowed, Denial, Policy};
use crate::audit::{Audit, redact_query};

type Body = BoxBody<Bytes, hyper::Error>;

/// How long the agent may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to an upstream may take, per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an error came from, as the agent is told in `x-bottle-error`.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The bottle's policy refused the request.
    Policy,
    /// The request itself is malformed or not one a proxy serves.
    Agent,
    /// The upstream could not be resolved, reached or understood.
    Upstream,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Policy => "policy",
            Origin::Agent => "agent",
            Origin::Upstream => "upstream",
        }
    }
}

/// The egress role: policy, audit, and the connections it makes.
pub struct Egress {
    policy: Policy,
    audit: Arc<Audit>,
}

impl Egress {
    pub fn new(policy: Policy, audit: Arc<Audit>) -> Egress {
        Egress { policy, audit }
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

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() == Method::CONNECT {
            self.connect(req).await
        } else {
            self.forward(req).await
        }
    }

    /// `CONNECT host:port`: check, connect, answer 200, then splice.
    async fn connect(&self, req: Request<Incoming>) -> Response<Body> {
        let (host, port) = match req.uri().authority().map(|a| target(a.as_str())) {
            Some(Ok((host, Some(port)))) => (host, port),
            Some(Err(reason)) => {
                return self.refuse_request(&req, StatusCode::BAD_REQUEST, &reason);
            }
            _ => {
                return self.refuse_request(
                    &req,
                    StatusCode::BAD_REQUEST,
                    "CONNECT needs a target of the form host:port",
                );
            }
        };
        let mut fields = fields(&[
            ("method", "CONNECT".into()),
            ("host", host.clone().into()),
            ("port", port.into()),
        ]);
        let (allowed, upstream) = match self.open(&host, port, 443).await {
            Ok(pair) => pair,
            Err((origin, status, reason)) => return self.deny(fields, origin, status, &reason),
        };
        fields.insert("rule".into(), allowed.rule.clone().into());
        fields.insert("decision".into(), "allow".into());
        self.audit.record("egress", "connect", fields);

        tokio::spawn(async move {
            let mut upstream = upstream;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut agent = TokioIo::new(upgraded);
                    let _ = tokio::io::copy_bidirectional(&mut agent, &mut upstream).await;
                }
                Err(err) => tracing::debug!(%err, "CONNECT upgrade failed"),
            }
        });
        Response::new(empty())
    }

    /// An absolute-form plain HTTP request: check, connect, forward.
    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let uri = req.uri().clone();
        let Some(authority) = uri.authority().cloned() else {
            return self.refuse_request(
                &req,
                StatusCode::BAD_REQUEST,
                "this is the bottle's egress proxy: send requests in absolute form (http://host/path) or use CONNECT",
            );
        };
        if uri.scheme_str() != Some("http") {
            return self.refuse_request(
                &req,
                StatusCode::BAD_REQUEST,
                "only plain http:// URLs are forwarded in absolute form; HTTPS goes through CONNECT",
            );
        }
        let (host, port) = match target(authority.as_str()) {
            Ok((host, port)) => (host, port.unwrap_or(80)),
            Err(reason) => return self.refuse_request(&req, StatusCode::BAD_REQUEST, &reason),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut fields = fields(&[
            ("method", req.method().as_str().into()),
            ("host", host.clone().into()),
            ("port", port.into()),
            ("path", redact_query(&path).into()),
        ]);
        let (allowed, upstream) = match self.open(&host, port, 80).await {
            Ok(pair) => pair,
            Err((origin, status, reason)) => return self.deny(fields, origin, status, &reason),
        };
        fields.insert("rule".into(), allowed.rule.clone().into());

        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            // The URL's authority is the target; a Host header that says
            // otherwise must not reach a virtual-hosting upstream.
            parts.headers.insert(header::HOST, value);
        }
        parts.uri = match path.parse::<Uri>() {
            Ok(uri) => uri,
            Err(_) => {
                return self.deny(
                    fields,
                    Origin::Agent,
                    StatusCode::BAD_REQUEST,
                    "the request path is not valid",
                );
            }
        };
        parts.version = http::Version::HTTP_11;
        let outbound = Request::from_parts(parts, body);

        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
                Ok(pair) => pair,
                Err(err) => {
                    return self.deny(
                        fields,
                        Origin::Upstream,
                        StatusCode::BAD_GATEWAY,
                        &format!("upstream {host}:{port}: {err}"),
                    );
                }
            };
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "upstream connection ended with an error");
            }
        });
        match sender.send_request(outbound).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                fields.insert("decision".into(), "allow".into());
                fields.insert("status".into(), parts.status.as_u16().into());
                self.audit.record("egress", "request", fields);
                Response::from_parts(parts, body.boxed())
            }
            Err(err) => self.deny(
                fields,
                Origin::Upstream,
                StatusCode::BAD_GATEWAY,
                &format!("upstream {host}:{port}: {err}"),
            ),
        }
    }

    /// Checks the target, resolves it, checks every address, and connects.
    async fn open(
        &self,
        host: &str,
        port: u16,
        default_port: u16,
    ) -> Result<(Allowed, TcpStream), (Origin, StatusCode, String)> {
        let policy_error = |d: Denial| (Origin::Policy, StatusCode::FORBIDDEN, d.to_string());
        let allowed = self
            .policy
            .check_target(host, port, default_port)
            .map_err(policy_error)?;
        let addresses: Vec<SocketAddr> = match &allowed.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|err| {
                    (
                        Origin::Upstream,
                        StatusCode::BAD_GATEWAY,
                        format!("cannot resolve {name}: {err}"),
                    )
                })?
                .collect(),
        };
        if addresses.is_empty() {
            return Err((
                Origin::Upstream,
                StatusCode::BAD_GATEWAY,
                format!("{} has no address", allowed.host),
            ));
        }
        // Every address must pass: a name that also points somewhere
        // private is not one to trust with the rest.
        for address in &addresses {
            self.policy
                .check_address(&allowed, address.ip())
                .map_err(policy_error)?;
        }
        let mut last_error = String::new();
        for address in addresses {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((allowed, stream));
                }
                Ok(Err(err)) => last_error = format!("connect to {}: {err}", display_addr(address)),
                Err(_) => last_error = format!("connect to {} timed out", display_addr(address)),
            }
        }
        Err((Origin::Upstream, StatusCode::BAD_GATEWAY, last_error))
    }

    fn refuse_request(
        &self,
        req: &Request<Incoming>,
        status: StatusCode,
        reason: &str,
    ) -> Response<Body> {
        let fields = fields(&[
            ("method", req.method().as_str().into()),
            ("target", redact_query(&req.uri().to_string()).into()),
        ]);
        self.deny(fields, Origin::Agent, status, reason)
    }

    fn deny(
        &self,
        mut fields: Map<String, Value>,
        origin: Origin,
        status: StatusCode,
        reason: &str,
    ) -> Response<Body> {
        let event = if fields.get("method").and_then(Value::as_str) == Some("CONNECT") {
            "connect"
        } else {
            "request"
        };
        fields.insert("decision".into(), "deny".into());
        fields.insert("origin".into(), origin.as_str().into());
        fields.insert("status".into(), status.as_u16().into());
        fields.insert("reason".into(), reason.into());
        self.audit.record("egress", event, fields);
        refusal(origin, status, reason)
    }
}

/// The response the agent reads: a status and one plain-text line saying
/// who refused and why (also in `x-bottle-reason`, for clients that only
/// show headers of a failed CONNECT).
fn refusal(origin: Origin, status: StatusCode, reason: &str) -> Response<Body> {
    let line = match origin {
        Origin::Policy => format!("blocked by bottle policy: {reason}"),
        Origin::Agent => format!("bottle gate: bad request: {reason}"),
        Origin::Upstream => format!("bottle gate: upstream error: {reason}"),
    };
    let mut response = Response::new(full(format!("{line}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-bottle-error", HeaderValue::from_static(origin.as_str()));
    if let Ok(value) =
        HeaderValue::from_str(&line.replace(|c: char| !(' '..='~').contains(&c), "?"))
    {
        headers.insert("x-bottle-reason", value);
    }
    response
}

/// Splits a request target's authority into host and port, refusing what a
/// proxy target never needs and parsers disagree on: user information
/// (`evil@allowed.test`) and ports that are not 1–65535.
fn target(authority: &str) -> Result<(String, Option<u16>), String> {
    if authority.contains('@') {
        return Err("user information (user@host) in a proxy target is not allowed".to_owned());
    }
    split_host_port(authority)
        .map(|(host, port)| (host.to_owned(), port))
        .map_err(|e| e.to_string())
}

/// Removes the headers that describe one hop (RFC 9110 §7.6.1), including
/// those the `Connection` header names, and the proxy's own credentials.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
}

fn display_addr(address: SocketAddr) -> String {
    match address.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", address.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", address.port()),
    }
}

fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    full(String::new())
}
