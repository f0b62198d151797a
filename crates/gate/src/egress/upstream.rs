//! Connections from the gate to the outside: resolved and checked by the
//! policy, then TCP, then (for `https`) TLS verified against the system
//! roots and the bottle's extra CA. Pooled per upstream, HTTP/1.1 or
//! HTTP/2 as the upstream's ALPN decides.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bottle_manifest::host::Host;
use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::live::Live;
use super::policy::{Allowed, Denial, Policy};

/// How long connecting to an upstream may take, per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Errors of request bodies and the client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// Who an error is to be blamed on, as the agent is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The bottle's policy refused it.
    Policy,
    /// The agent's request is malformed or not one the gate serves.
    Agent,
    /// The upstream could not be resolved, reached, trusted or understood.
    Upstream,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Policy => "policy",
            Origin::Agent => "agent",
            Origin::Upstream => "upstream",
        }
    }
}

/// A refusal or failure on the way out: what the agent gets told.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub origin: Origin,
    pub status: StatusCode,
    pub reason: String,
    /// A class of refusal the audit log counts on its own
    /// (`credential_leak`), so ordinary refusals cannot crowd it out.
    pub class: Option<&'static str>,
}

impl Refusal {
    pub fn policy(reason: impl fmt::Display) -> Refusal {
        Refusal {
            origin: Origin::Policy,
            status: StatusCode::FORBIDDEN,
            reason: reason.to_string(),
            class: None,
        }
    }

    pub fn agent(reason: impl fmt::Display) -> Refusal {
        Refusal {
            origin: Origin::Agent,
            status: StatusCode::BAD_REQUEST,
            reason: reason.to_string(),
            class: None,
        }
    }

    pub fn upstream(reason: impl fmt::Display) -> Refusal {
        Refusal {
            origin: Origin::Upstream,
            status: StatusCode::BAD_GATEWAY,
            reason: reason.to_string(),
            class: None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refusal {}

impl From<Denial> for Refusal {
    fn from(d: Denial) -> Refusal {
        Refusal::policy(d)
    }
}

/// Checks `host:port`, resolves it, checks every address, and connects.
pub async fn open(
    policy: &Policy,
    host: &str,
    port: u16,
    default_port: u16,
) -> Result<(Allowed, TcpStream), Refusal> {
    let allowed = policy.check_target(host, port, default_port)?;
    let addresses: Vec<SocketAddr> = match &allowed.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|err| Refusal::upstream(format!("cannot resolve {name}: {err}")))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(Refusal::upstream(format!(
            "{} has no address",
            allowed.host
        )));
    }
    // Every address must pass: a name that also points somewhere private
    // is not one to trust with the rest.
    for address in &addresses {
        policy.check_address(&allowed, address.ip())?;
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
    Err(Refusal::upstream(last_error))
}

fn display_addr(address: SocketAddr) -> String {
    match address.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", address.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", address.port()),
    }
}

/// The TLS settings for upstreams: system roots plus the bottle's extra CA.
pub fn client_tls(
    extra_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let pem = fs_err::read(path)?;
        let certs: Vec<CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a PEM certificate file: {e}", path.display()),
                    )
                })?;
        if certs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: holds no certificate", path.display()),
            ));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Opens checked upstream connections for the pooled client.
#[derive(Clone)]
pub struct Connector {
    live: Arc<Live>,
    tls: Arc<rustls::ClientConfig>,
}

impl Connector {
    pub fn new(live: Arc<Live>, tls: Arc<rustls::ClientConfig>) -> Connector {
        Connector { live, tls }
    }

    async fn connect(self, uri: Uri) -> Result<TokioIo<Stream>, Refusal> {
        let https = uri.scheme_str() == Some("https");
        let (default_port, scheme_port) = if https { (443, 443) } else { (80, 80) };
        let host = uri
            .host()
            .ok_or_else(|| Refusal::agent("the request names no host"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(scheme_port);
        let (allowed, tcp) = open(&self.live.policy(), &host, port, default_port).await?;
        if !https {
            return Ok(TokioIo::new(Stream::Plain(tcp)));
        }
        let name = match &allowed.host {
            Host::Name(name) => ServerName::try_from(name.clone())
                .map_err(|e| Refusal::agent(format!("{name} is not a TLS server name: {e}")))?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                Refusal::upstream(format!(
                    "TLS with {}:{port} failed, so nothing was sent: {e}",
                    allowed.host
                ))
            })?;
        Ok(TokioIo::new(Stream::Tls(Box::new(tls))))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = Refusal;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Refusal>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A connection to an upstream, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(_) => Connected::new(),
            Stream::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            Stream::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// TLS settings for upstreams, built once (reading the system roots is not
/// free) and shared by every worker's clients.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Offers HTTP/2 and HTTP/1.1.
    any: Arc<rustls::ClientConfig>,
    /// Offers HTTP/1.1 only.
    http1: Arc<rustls::ClientConfig>,
}

impl UpstreamTls {
    pub fn new(extra_ca: Option<&Path>) -> Result<UpstreamTls, io::Error> {
        Ok(UpstreamTls {
            any: client_tls(extra_ca, &[b"h2", b"http/1.1"])?,
            http1: client_tls(extra_ca, &[b"http/1.1"])?,
        })
    }
}

/// The pooled clients: one that speaks what ALPN picks, one that keeps to
/// HTTP/1.1 (for HTTP/1.1 agents and upgrades such as WebSocket).
pub struct Upstreams {
    pub any: Client<Connector, UpstreamBody>,
    pub http1: Client<Connector, UpstreamBody>,
}

impl Upstreams {
    pub fn new(live: Arc<Live>, tls: &UpstreamTls) -> Upstreams {
        let build = |config: &Arc<rustls::ClientConfig>| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .build(Connector::new(Arc::clone(&live), Arc::clone(config)))
        };
        Upstreams {
            any: build(&tls.any),
            http1: build(&tls.http1),
        }
    }
}

/// The refusal behind a client error, if the connector made one.
pub fn refusal_of(err: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        source = e.source();
    }
    None
}
