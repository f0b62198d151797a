//! One request on its way out, after its target was allowed: checked for
//! leaked secrets, given its route's credential, sent through the pooled
//! upstream client, and its response scrubbed. Plain `http://` requests
//! and requests inside intercepted tunnels share this path.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bottle_manifest::host::Host;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};

use super::Egress;
use super::credentials::{Credentials, Leak};
use super::upstream::{BoxError, Origin, Refusal, UpstreamBody, refusal_of};
use crate::audit::redact_query;

/// The body type the gate answers the agent with.
pub type Body = BoxBody<Bytes, BoxError>;

/// Where an allowed request goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `https`.
    pub https: bool,
    pub host: Host,
    pub port: u16,
    /// The allow rule that let it through, for the audit log.
    pub rule: String,
    /// Whether the request came through an intercepted CONNECT tunnel.
    pub tunnel: bool,
}

impl Target {
    fn default_port(&self) -> u16 {
        if self.https { 443 } else { 80 }
    }

    /// `scheme://host[:port]`.
    fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        if self.port == self.default_port() {
            format!("{scheme}://{}", self.host)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Egress {
    /// Sends `req` to `target` and returns the answer for the agent.
    pub(crate) async fn forward(
        &self,
        mut req: Request<Incoming>,
        target: Target,
    ) -> Response<Body> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut fields = request_fields(req.method().as_str(), &target, &path);
        // One snapshot of the routes for the whole exchange.
        let credentials = self.live.credentials();
        let route = if target.https {
            credentials.route_for(&target.host).cloned()
        } else {
            // A credential never travels in clear text.
            None
        };

        if let Err(leak) = self.check_for_leaks(
            &credentials,
            &req,
            &target,
            &path,
            route.as_ref().map(|r| &r.header),
        ) {
            return self.refuse(fields, leak_refusal(&leak));
        }

        let upgrade = wants_upgrade(req.headers());
        // The upstream protocol follows the agent's: HTTP/2 agents may get
        // HTTP/2 upstream (by ALPN); HTTP/1.1 agents get a pool of HTTP/1.1
        // connections, one per request in flight, as they would directly.
        let agent_h2 = req.version() == http::Version::HTTP_2;
        let agent_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        // The URI names the target; the client sets Host (HTTP/1.1) or
        // :authority (HTTP/2) from it.
        parts.headers.remove(header::HOST);
        if let Some(route) = &route {
            parts.headers.remove(&route.header);
            match HeaderValue::from_str(&route.header_value()) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    parts.headers.insert(route.header.clone(), value);
                }
                Err(_) => {
                    return self.refuse(
                        fields,
                        Refusal::upstream("the route's secret is not a valid header value"),
                    );
                }
            }
            // Responses are scrubbed of the secret: they must be readable.
            parts.headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            fields.insert("injected".into(), route.header.as_str().into());
        }
        parts.uri = match format!("{}{path}", target.origin()).parse::<Uri>() {
            Ok(uri) => uri,
            Err(_) => return self.refuse(fields, Refusal::agent("the request path is not valid")),
        };
        parts.version = http::Version::HTTP_11;

        // A request without a body and with an idempotent method may be
        // sent again if the pooled connection it went out on was closed
        // under it (an HTTP/2 GOAWAY, a keep-alive race).
        let retry = (body.is_end_stream() && is_idempotent(&parts.method) && !upgrade)
            .then(|| parts.clone());
        let leaked = Arc::new(OnceLock::new());
        let body: UpstreamBody = if credentials.is_empty() {
            body.map_err(BoxError::from).boxed()
        } else {
            Scanned {
                inner: body,
                credentials: Arc::clone(&credentials),
                host: target.host.clone(),
                tail: Vec::new(),
                found: Arc::clone(&leaked),
            }
            .boxed()
        };
        let client = if agent_h2 && !upgrade {
            &self.upstreams.any
        } else {
            &self.upstreams.http1
        };
        let mut sent = client.request(Request::from_parts(parts, body)).await;
        if let (Err(err), Some(parts)) = (&sent, retry)
            && refusal_of(err).is_none()
        {
            tracing::debug!(%err, "retrying an idempotent request on a fresh connection");
            sent = client
                .request(Request::from_parts(parts, empty_body()))
                .await;
        }
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => {
                let refusal = match leaked.get() {
                    Some(leak) => leak_refusal(leak),
                    None => refusal_of(&err).unwrap_or_else(|| Refusal::upstream(describe(&err))),
                };
                return self.refuse(fields, refusal);
            }
        };

        if let (Some(agent_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
            (agent_upgrade, response.status())
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(agent), Ok(upstream)) = tokio::join!(agent_upgrade, upstream_upgrade) {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(agent),
                        &mut TokioIo::new(upstream),
                    )
                    .await;
                }
            });
        }

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(
            &mut parts.headers,
            parts.status == StatusCode::SWITCHING_PROTOCOLS,
        );
        fields.insert("decision".into(), "allow".into());
        fields.insert("status".into(), parts.status.as_u16().into());
        self.audit.record("egress", "request", fields);
        let body: Body = if route.is_some() {
            scrub_headers(&credentials, &mut parts.headers);
            Scrubbed {
                inner: body,
                credentials: Arc::clone(&credentials),
                held: Vec::new(),
                ended: false,
                trailers: None,
            }
            .boxed()
        } else {
            body.map_err(BoxError::from).boxed()
        };
        Response::from_parts(parts, body)
    }

    /// The URL and every header, checked for secrets bound elsewhere. The
    /// route's own header is replaced anyway and not checked.
    fn check_for_leaks(
        &self,
        credentials: &Credentials,
        req: &Request<Incoming>,
        target: &Target,
        path: &str,
        replaced: Option<&HeaderName>,
    ) -> Result<(), Leak> {
        if credentials.is_empty() {
            return Ok(());
        }
        if let Some(leak) = credentials.find_leak(path.as_bytes(), &target.host, "url") {
            return Err(leak);
        }
        for (name, value) in req.headers() {
            if Some(name) == replaced {
                continue;
            }
            if let Some(leak) =
                credentials.find_leak(value.as_bytes(), &target.host, &format!("header {name}"))
            {
                return Err(leak);
            }
        }
        Ok(())
    }

    /// Records a refusal and answers the agent with it.
    pub(crate) fn refuse(
        &self,
        mut fields: Map<String, Value>,
        refusal: Refusal,
    ) -> Response<Body> {
        let event = if fields.get("method").and_then(Value::as_str) == Some("CONNECT") {
            "connect"
        } else {
            "request"
        };
        fields.insert("decision".into(), "deny".into());
        fields.insert("origin".into(), refusal.origin.as_str().into());
        fields.insert("status".into(), refusal.status.as_u16().into());
        fields.insert("reason".into(), refusal.reason.clone().into());
        self.audit.record("egress", event, fields);
        refusal_response(&refusal)
    }
}

/// The audit fields of a request.
pub(crate) fn request_fields(method: &str, target: &Target, path: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("method".into(), method.into());
    fields.insert(
        "scheme".into(),
        if target.https { "https" } else { "http" }.into(),
    );
    fields.insert("host".into(), target.host.to_string().into());
    fields.insert("port".into(), target.port.into());
    fields.insert("path".into(), redact_query(path).into());
    fields.insert("rule".into(), target.rule.clone().into());
    if target.tunnel {
        fields.insert("tunnel".into(), true.into());
    }
    fields
}

fn leak_refusal(leak: &Leak) -> Refusal {
    Refusal::policy(format!("credential leak: {leak}"))
}

/// A client error, said without hyper's internals where possible.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}

/// The response the agent reads: a status and one plain-text line saying
/// who refused and why (also in `x-bottle-reason`, for clients that only
/// show headers, such as after a failed CONNECT).
pub(crate) fn refusal_response(refusal: &Refusal) -> Response<Body> {
    let line = match refusal.origin {
        Origin::Policy => format!("blocked by bottle policy: {}", refusal.reason),
        Origin::Agent => format!("bottle gate: bad request: {}", refusal.reason),
        Origin::Upstream => format!("bottle gate: upstream error: {}", refusal.reason),
    };
    let mut response = Response::new(full(format!("{line}\n")));
    *response.status_mut() = refusal.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-bottle-error",
        HeaderValue::from_static(refusal.origin.as_str()),
    );
    if let Ok(value) =
        HeaderValue::from_str(&line.replace(|c: char| !(' '..='~').contains(&c), "?"))
    {
        headers.insert("x-bottle-reason", value);
    }
    response
}

pub(crate) fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method)
}

fn empty_body() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Whether the agent asks to switch protocols (WebSocket) on HTTP/1.1.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the headers that describe one hop (RFC 9110 §7.6.1), including
/// those the `Connection` header names, and the proxy's own credentials.
/// An upgrade keeps `Connection: upgrade` and `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

fn scrub_headers(credentials: &Credentials, headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        let mut bytes = value.as_bytes().to_vec();
        if credentials.scrub(&mut bytes)
            && let Ok(clean) = HeaderValue::from_bytes(&bytes)
        {
            *value = clean;
        }
    }
}

/// A request body that fails, before the chunk that completes it goes
/// out, when it carries a secret bound for another host.
struct Scanned {
    inner: Incoming,
    credentials: Arc<Credentials>,
    host: Host,
    /// The end of what was seen, to find a secret split across chunks.
    tail: Vec<u8>,
    found: Arc<OnceLock<Leak>>,
}

impl HttpBody for Scanned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let mut window = std::mem::take(&mut this.tail);
                    window.extend_from_slice(data);
                    if let Some(leak) = this.credentials.find_leak(&window, &this.host, "body") {
                        let _ = this.found.set(leak);
                        return Poll::Ready(Some(
                            Err("credential leak in the request body".into()),
                        ));
                    }
                    let keep = this
                        .credentials
                        .longest()
                        .saturating_sub(1)
                        .min(window.len());
                    this.tail = window.split_off(window.len() - keep);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body with every secret overwritten (same length), holding
/// back just enough to see a secret split across chunks.
struct Scrubbed {
    inner: Incoming,
    credentials: Arc<Credentials>,
    held: Vec<u8>,
    ended: bool,
    /// Trailers that arrived while data was held back.
    trailers: Option<Frame<Bytes>>,
}

impl HttpBody for Scrubbed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                if !this.held.is_empty() {
                    let rest = std::mem::take(&mut this.held);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        this.credentials.scrub(&mut this.held);
                        let keep = this
                            .credentials
                            .longest()
                            .saturating_sub(1)
                            .min(this.held.len());
                        let ready = this.held.len() - keep;
                        if ready > 0 {
                            let rest = this.held.split_off(ready);
                            let out = std::mem::replace(&mut this.held, rest);
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(trailers) => {
                        this.trailers = Some(trailers);
                        this.ended = true;
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
