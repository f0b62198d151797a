//! One request on its way out, after its target was allowed: checked for
//! leaked secrets, given its route's credential, sent through the pooled
//! upstream client, and its response scrubbed. Plain `http://` requests
//! and requests inside intercepted tunnels share this path.

use std::sync::{Arc, OnceLock};

use bottle_manifest::host::Host;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};

use super::Egress;
use super::body::{self, Inflate, MAX_COMPRESSED_BODY, MAX_INFLATED_BODY};
use super::credentials::{Credentials, Leak};
use super::upstream::{BoxError, Origin, Refusal, UpstreamBody, refusal_of};
use super::websocket;
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
    ///
    /// While the bottle holds credentials, everything the gate passes on
    /// is read for them: the request (method, URL, headers, body, trailers
    /// and WebSocket frames) is refused when it carries a secret bound
    /// elsewhere, and every response is scrubbed. What the gate cannot read
    /// — a content coding it does not know, an upgrade to a protocol other
    /// than WebSocket — is refused rather than passed unread.
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
            credentials.route_for(&target.host, target.port).cloned()
        } else {
            // A credential never travels in clear text.
            None
        };
        if let Some(route) = &route
            && let Err(why) = route.admits(req.method().as_str(), &path)
        {
            drain(req.into_body()).await;
            return self.refuse(fields, Refusal::policy(why));
        }
        // A role's route replaces its placeholder only: a token of the
        // agent's own goes on as written (and is read like any header).
        let route = route.filter(|r| r.replaces(req.headers()));
        let scanning = !credentials.is_empty();
        let upgrade = wants_upgrade(req.headers());
        let mut codings = Vec::new();
        if scanning {
            let refusal = if let Some(leak) = leaked_in_request(
                &credentials,
                &req,
                &target,
                &path,
                route.as_ref().map(|r| &r.header),
            ) {
                Some(leak_refusal(&leak))
            } else if upgrade && !is_websocket(req.headers()) {
                Some(Refusal::policy(
                    "only WebSocket upgrades are forwarded while the bottle holds credentials (the gate reads every frame)",
                ))
            } else {
                match body::codings(req.headers()) {
                    Ok(found) => {
                        codings = found;
                        None
                    }
                    Err(what) => Some(Refusal::policy(format!(
                        "a body with {what} is not forwarded while the bottle holds credentials: the gate cannot read it to check it for them (send it as identity, gzip, deflate or br)"
                    ))),
                }
            };
            if let Some(refusal) = refusal {
                drain(req.into_body()).await;
                return self.refuse(fields, refusal);
            }
        }

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
            fields.insert("injected".into(), route.header.as_str().into());
        }
        if scanning {
            // Responses are scrubbed of the secrets: they must be readable.
            parts.headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            // No compressed WebSocket frames: every frame must be readable.
            parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
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
        let body: UpstreamBody = if !scanning {
            body.map_err(BoxError::from).boxed()
        } else if !codings.is_empty() {
            match self
                .read_compressed(body, &codings, &credentials, &target)
                .await
            {
                Ok(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed(),
                Err(refusal) => return self.refuse(fields, refusal),
            }
        } else {
            body::scanned(
                body,
                Arc::clone(&credentials),
                target.host.clone(),
                Arc::clone(&leaked),
            )
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

        // A transfer coding other than chunked (`gzip, chunked`) would
        // reach the agent still applied, past the scan and under no header
        // that says so: the response is not passed on.
        // `chunked, chunked` likewise: the client undoes one.
        let transfer = body::transfer_codings(response.headers());
        if !transfer.is_empty() && transfer != ["chunked"] {
            return self.refuse(
                fields,
                Refusal::upstream(format!(
                    "the upstream sent the response with transfer-coding {:?}; the gate passes on chunked only",
                    transfer.join(", ")
                )),
            );
        }
        let unreadable = !matches!(body::codings(response.headers()), Ok(c) if c.is_empty());
        if scanning && unreadable && !response.body().is_end_stream() {
            return self.refuse(
                fields,
                Refusal::upstream(
                    "the upstream sent a compressed response though the gate asked for identity; while the bottle holds credentials every response is read, so it is not passed on",
                ),
            );
        }

        if let (Some(agent_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
            (agent_upgrade, response.status())
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let relay = scanning.then(|| {
                (
                    Arc::clone(&credentials),
                    target.host.clone(),
                    Arc::clone(&self.audit),
                    fields.clone(),
                )
            });
            tokio::spawn(async move {
                let (Ok(agent), Ok(upstream)) = tokio::join!(agent_upgrade, upstream_upgrade)
                else {
                    return;
                };
                let (mut agent, mut upstream) = (TokioIo::new(agent), TokioIo::new(upstream));
                match relay {
                    None => {
                        let _ = tokio::io::copy_bidirectional(&mut agent, &mut upstream).await;
                    }
                    Some((credentials, host, audit, mut fields)) => {
                        if let Err(ended) =
                            websocket::relay(agent, upstream, credentials, host).await
                        {
                            let reason = match ended {
                                websocket::Ended::Leak(leak) => {
                                    fields.insert("class".into(), LEAK_CLASS.into());
                                    format!("credential leak: {leak}")
                                }
                                websocket::Ended::Unreadable(what) => what,
                            };
                            fields.insert("decision".into(), "deny".into());
                            fields.insert("origin".into(), "policy".into());
                            fields.insert("reason".into(), reason.into());
                            audit.record("egress", "websocket", fields);
                        }
                    }
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
        let body: Body = if scanning {
            body::scrub_headers(&credentials, &mut parts.headers);
            // A reason phrase is the upstream's text too (`401 bad token
            // …`): the agent gets the status's standard one instead.
            parts.extensions.remove::<hyper::ext::ReasonPhrase>();
            body::scrubbed(body, Arc::clone(&credentials)).boxed()
        } else {
            body.map_err(BoxError::from).boxed()
        };
        Response::from_parts(parts, body)
    }

    /// A compressed request body, read whole (up to a bound), inflated (up
    /// to a bound) and checked, as it was sent and inflated.
    async fn read_compressed(
        &self,
        body: Incoming,
        codings: &[body::Coding],
        credentials: &Credentials,
        target: &Target,
    ) -> Result<Bytes, Refusal> {
        let too_large = |what: String| Refusal {
            origin: Origin::Policy,
            status: StatusCode::PAYLOAD_TOO_LARGE,
            reason: what,
            class: None,
        };
        // One compressed body is read and inflated at a time in a gate: its
        // bounds are then the gate's peak, and parallel uploads queue
        // rather than take the gate past its memory.
        let _turn = inflating().acquire().await;
        let collected = Limited::new(body, MAX_COMPRESSED_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    too_large(format!(
                        "a compressed request body over {} MiB is not forwarded while the bottle holds credentials (the gate reads it whole to check it for them)",
                        MAX_COMPRESSED_BODY >> 20
                    ))
                } else {
                    Refusal::agent(format!("the request body could not be read: {e}"))
                }
            })?;
        if let Some(trailers) = collected.trailers()
            && let Some(leak) =
                body::leak_in_headers(credentials, trailers, &target.host, None, "trailer")
        {
            return Err(leak_refusal(&leak));
        }
        let bytes = collected.to_bytes();
        let plain = body::inflate(&bytes, codings, MAX_INFLATED_BODY).map_err(|e| match e {
            Inflate::TooLarge => too_large(format!(
                "the request body inflates to more than {} MiB; it is not forwarded while the bottle holds credentials",
                MAX_INFLATED_BODY >> 20
            )),
            Inflate::Corrupt(why) => {
                Refusal::agent(format!("the request body is not what its Content-Encoding says: {why}"))
            }
        })?;
        let leak = credentials
            .find_leak(&plain, &target.host, "compressed body")
            .or_else(|| credentials.find_leak(&bytes, &target.host, "body"));
        match leak {
            Some(leak) => Err(leak_refusal(&leak)),
            None => Ok(bytes),
        }
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
        if let Some(class) = refusal.class {
            fields.insert("class".into(), class.into());
        }
        self.audit.record("egress", event, fields);
        refusal_response(&refusal)
    }
}

/// A secret bound elsewhere in the method, the URL or a header (name or
/// value) of `req`. The route's own header is replaced anyway and not
/// checked.
fn leaked_in_request(
    credentials: &Credentials,
    req: &Request<Incoming>,
    target: &Target,
    path: &str,
    replaced: Option<&HeaderName>,
) -> Option<Leak> {
    credentials
        .find_leak(req.method().as_str().as_bytes(), &target.host, "method")
        .or_else(|| credentials.find_leak(path.as_bytes(), &target.host, "url"))
        .or_else(|| {
            body::leak_in_headers(credentials, req.headers(), &target.host, replaced, "header")
        })
}

/// The one permit to read and inflate a compressed body.
fn inflating() -> &'static tokio::sync::Semaphore {
    static PERMIT: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMIT.get_or_init(|| tokio::sync::Semaphore::new(1))
}

/// Most of a refused request's body read and dropped, so the client is
/// not cut off while it still sends and reads the refusal whole.
const DRAIN_BYTES: usize = 1 << 20;

/// Reads and drops what is left of a refused request's body, up to
/// [`DRAIN_BYTES`] or a second; nothing of it goes anywhere.
async fn drain(body: Incoming) {
    let mut body = Limited::new(body, DRAIN_BYTES);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Whether an upgrade asks for WebSocket.
fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
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

pub(crate) fn leak_refusal(leak: &Leak) -> Refusal {
    Refusal {
        class: Some(LEAK_CLASS),
        ..Refusal::policy(format!("credential leak: {leak}"))
    }
}

/// The audit class of a refusal for a credential leak.
pub(crate) const LEAK_CLASS: &str = "credential_leak";

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
