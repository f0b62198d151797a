//! Inside an allowed CONNECT tunnel: TLS is terminated with a leaf for the
//! tunnel's host, and every request inside is checked again. Its `Host` or
//! `:authority` must name the host the tunnel was opened to (no domain
//! fronting), and the allowlist applies per request. A tunnel that does not
//! start with a TLS handshake is served as plain HTTP under the same rules.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bottle_manifest::host::{Host, normalize_host};
use bytes::{Buf, Bytes};
use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::Map;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_rustls::LazyConfigAcceptor;

use super::Egress;
use super::forward::{Body, Target, request_fields};
use super::proxy::target;
use super::upstream::Refusal;

/// How long the agent may take to start talking in a tunnel.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// First byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// The tunnel the agent opened with CONNECT.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub host: Host,
    pub port: u16,
}

impl Egress {
    /// Serves the agent's side of an allowed tunnel.
    pub(crate) async fn intercept(self: Arc<Self>, upgraded: Upgraded, tunnel: Tunnel) {
        let mut agent = TokioIo::new(upgraded);
        let mut first = vec![0u8; 1024];
        let n = match tokio::time::timeout(FIRST_BYTES_TIMEOUT, agent.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        first.truncate(n);
        let https = first[0] == TLS_HANDSHAKE;
        let stream = Prefixed {
            prefix: Bytes::from(first),
            inner: agent,
        };
        if https {
            let accepting = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
            let Ok(start) = accepting.await else { return };
            if let Some(sni) = start.client_hello().server_name()
                && normalize_host(sni).ok().as_ref() != Some(&tunnel.host)
            {
                self.refuse(
                    tunnel_fields(&tunnel, "TLS"),
                    Refusal::policy(format!(
                        "the TLS handshake names {sni} but the tunnel was opened to {} (domain fronting)",
                        tunnel.host
                    )),
                );
                return;
            }
            let config = match self.minter.server_config(&tunnel.host) {
                Ok(config) => config,
                Err(err) => {
                    tracing::error!(%err, host = %tunnel.host, "cannot mint a leaf certificate");
                    return;
                }
            };
            let Ok(tls) = start.into_stream(config).await else {
                return;
            };
            self.serve_tunnel(TokioIo::new(tls), tunnel, true).await;
        } else {
            self.serve_tunnel(TokioIo::new(stream), tunnel, false).await;
        }
    }

    async fn serve_tunnel<I>(self: Arc<Self>, io: I, tunnel: Tunnel, https: bool)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let egress = Arc::clone(&self);
        let tunnel = Arc::new(tunnel);
        let service = service_fn(move |req| {
            let egress = Arc::clone(&egress);
            let tunnel = Arc::clone(&tunnel);
            async move {
                Ok::<_, std::convert::Infallible>(egress.tunnel_request(req, &tunnel, https).await)
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        if let Err(err) = builder.serve_connection_with_upgrades(io, service).await {
            tracing::debug!(%err, "tunnel ended with an error");
        }
    }

    /// One request inside a tunnel.
    async fn tunnel_request(
        &self,
        req: Request<Incoming>,
        tunnel: &Tunnel,
        https: bool,
    ) -> Response<Body> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut fields = tunnel_fields(tunnel, req.method().as_str());
        fields.insert("path".into(), crate::audit::redact_query(&path).into());
        let named = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        let Some(named) = named else {
            return self.refuse(
                fields,
                Refusal::agent("the request names no host (Host header or :authority)"),
            );
        };
        let (host, port) = match target(&named) {
            Ok(pair) => pair,
            Err(reason) => return self.refuse(fields, Refusal::agent(reason)),
        };
        let same_host = normalize_host(&host).ok().as_ref() == Some(&tunnel.host);
        if !same_host || port.is_some_and(|p| p != tunnel.port) {
            return self.refuse(
                fields,
                Refusal::policy(format!(
                    "the request names {named} but the tunnel was opened to {}:{} (domain fronting)",
                    tunnel.host, tunnel.port
                )),
            );
        }
        // The allowlist applies to every request, not only to the tunnel.
        let allowed = match self
            .live
            .policy()
            .check_host(tunnel.host.clone(), tunnel.port, 443)
        {
            Ok(allowed) => allowed,
            Err(denial) => return self.refuse(fields, denial.into()),
        };
        let target = Target {
            https,
            host: tunnel.host.clone(),
            port: tunnel.port,
            rule: allowed.rule,
            tunnel: true,
        };
        self.forward(req, target).await
    }
}

fn tunnel_fields(tunnel: &Tunnel, method: &str) -> Map<String, serde_json::Value> {
    let target = Target {
        https: true,
        host: tunnel.host.clone(),
        port: tunnel.port,
        rule: String::new(),
        tunnel: true,
    };
    let mut fields = request_fields(method, &target, "/");
    fields.remove("rule");
    fields.remove("path");
    fields
}

/// A stream whose first bytes were already read (to tell TLS from plain
/// HTTP) and are handed out again before the rest.
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
