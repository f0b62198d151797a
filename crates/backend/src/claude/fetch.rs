//! An HTTPS download to a file, its SHA-256 taken on the way: enough
//! client for a package index and its file host, and no more.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Redirects followed before giving up (a file host sends one or two).
const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the next bytes of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a whole download may take (170 MiB at 200 KiB/s).
const DEADLINE: Duration = Duration::from_secs(15 * 60);

/// GETs `url` (https only) into the new file `to`: exactly `size` bytes,
/// or an error (a server sending more is cut off there), within
/// [`DEADLINE`]; `progress(done)` is called as it goes. Returns the
/// file's SHA-256.
pub async fn download(
    url: &str,
    to: &Path,
    size: u64,
    progress: impl FnMut(u64),
) -> Result<String, String> {
    tokio::time::timeout(DEADLINE, download_within(url, to, size, progress))
        .await
        .map_err(|_| format!("{url}: not fetched in {} minutes", DEADLINE.as_secs() / 60))?
}

async fn download_within(
    url: &str,
    to: &Path,
    size: u64,
    mut progress: impl FnMut(u64),
) -> Result<String, String> {
    let mut response = get(url, None).await?;
    let announced: Option<u64> = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    if let Some(announced) = announced
        && announced != size
    {
        return Err(format!(
            "{url}: the server offers {announced} bytes, the pin says {size}"
        ));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .await
        .map_err(|e| format!("{}: {e}", to.display()))?;
    let mut hash = Sha256::new();
    let mut done = 0u64;
    let body = response.body_mut();
    loop {
        let frame = match tokio::time::timeout(READ_TIMEOUT, body.frame()).await {
            Err(_) => return Err(format!("{url}: no data for {}s", READ_TIMEOUT.as_secs())),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(|e| format!("{url}: {e}"))?,
        };
        if let Ok(data) = frame.into_data() {
            done += data.len() as u64;
            if done > size {
                return Err(format!("{url}: more than the {size} bytes the pin says"));
            }
            hash.update(&data);
            file.write_all(&data)
                .await
                .map_err(|e| format!("{}: {e}", to.display()))?;
            progress(done);
        }
    }
    file.flush()
        .await
        .map_err(|e| format!("{}: {e}", to.display()))?;
    if done != size {
        return Err(format!(
            "{url}: the answer ended after {done} of {size} bytes"
        ));
    }
    Ok(hex(&hash.finalize()))
}

/// GETs `url` into memory (an index page), at most `limit` bytes.
pub async fn text(url: &str, accept: &str, limit: usize) -> Result<String, String> {
    let response = get(url, Some(accept)).await?;
    let body = http_body_util::Limited::new(response.into_body(), limit);
    let body = tokio::time::timeout(READ_TIMEOUT, body.collect())
        .await
        .map_err(|_| format!("{url}: no answer for {}s", READ_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{url}: {e} (more than {limit} bytes?)"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: the answer is not UTF-8"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A successful answer to GET `url`, redirects followed.
async fn get(url: &str, accept: Option<&str>) -> Result<hyper::Response<Incoming>, String> {
    let mut uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    for _ in 0..=MAX_REDIRECTS {
        let response = get_once(&uri, accept).await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("{uri}: {status} without a Location"))?;
            uri = resolve(&uri, location)?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("{uri}: {status}"));
        }
        return Ok(response);
    }
    Err(format!("{url}: more than {MAX_REDIRECTS} redirects"))
}

/// `location` read against `base` (absolute, or a path on the same host).
fn resolve(base: &Uri, location: &str) -> Result<Uri, String> {
    if location.starts_with('/') {
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        return format!("https://{authority}{location}")
            .parse()
            .map_err(|e| format!("redirect to {location}: {e}"));
    }
    location
        .parse()
        .map_err(|e| format!("redirect to {location}: {e}"))
}

async fn get_once(uri: &Uri, accept: Option<&str>) -> Result<hyper::Response<Incoming>, String> {
    if uri.scheme_str() != Some("https") {
        return Err(format!("{uri}: only https is fetched"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{uri}: no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = match Proxy::from_env(&host)? {
        Some(proxy) => proxy.tunnel(&host, port).await?,
        None => connect(&host, port).await?,
    };
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(client_config()?)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{host}: TLS: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::get(path).header(http::header::HOST, &host).header(
        http::header::USER_AGENT,
        concat!("bot-bottle/", env!("CARGO_PKG_VERSION")),
    );
    if let Some(accept) = accept {
        request = request.header(http::header::ACCEPT, accept);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{uri}: {e}"))?;
    tokio::time::timeout(READ_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| format!("{uri}: no answer for {}s", READ_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{uri}: {e}"))
}

async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| {
        format!(
            "{host}:{port}: no connection in {}s",
            CONNECT_TIMEOUT.as_secs()
        )
    })?
    .map_err(|e| format!("{host}:{port}: {e}"))
}

/// The host's HTTPS proxy (`HTTPS_PROXY`, `https_proxy`), as curl and pip
/// read it: `http://[user:password@]host[:port]`, skipped for hosts that
/// `NO_PROXY` names. The download goes through it with CONNECT, so TLS is
/// still end to end (or to an inspecting proxy the system trusts).
#[derive(Debug, PartialEq)]
struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization` value, from the URL's user and password.
    authorization: Option<String>,
}

impl Proxy {
    fn from_env(target: &str) -> Result<Option<Proxy>, String> {
        let var = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let Some(url) = var(["https_proxy", "HTTPS_PROXY"]) else {
            return Ok(None);
        };
        if var(["no_proxy", "NO_PROXY"]).is_some_and(|list| bypasses(&list, target)) {
            return Ok(None);
        }
        Proxy::parse(&url).map(Some)
    }

    fn parse(url: &str) -> Result<Proxy, String> {
        let bad = |why: &str| {
            format!("HTTPS_PROXY={url:?}: {why}; give it as http://host:port (or unset it)")
        };
        let uri: Uri = if url.contains("://") {
            url.parse().map_err(|_| bad("not a URL"))?
        } else {
            format!("http://{url}")
                .parse()
                .map_err(|_| bad("not a URL"))?
        };
        if uri.scheme_str() != Some("http") {
            return Err(bad("only an http:// proxy is supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let authorization = authority.as_str().rsplit_once('@').map(|(user, _)| {
            use base64::Engine as _;
            let user = percent_decode(user);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user)
            )
        });
        Ok(Proxy {
            host,
            port: authority.port_u16().unwrap_or(80),
            authorization,
        })
    }

    /// A TCP stream to `host:port` through the proxy.
    async fn tunnel(&self, host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
        use tokio::io::AsyncReadExt;
        let mut tcp = connect(&self.host, self.port)
            .await
            .map_err(|e| format!("the HTTPS proxy {e}"))?;
        let mut request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        if let Some(auth) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        let proxy = format!("the HTTPS proxy {}:{}", self.host, self.port);
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{proxy}: {e}"))?;
        // Read the answer's head byte by byte: what follows it is the
        // tunnel, and must not be read here.
        let mut head = Vec::new();
        let read = async {
            while !head.ends_with(b"\r\n\r\n") {
                if head.len() > 16 * 1024 {
                    return Err(format!("{proxy}: an answer to CONNECT with no end"));
                }
                let mut byte = [0u8];
                if tcp
                    .read(&mut byte)
                    .await
                    .map_err(|e| format!("{proxy}: {e}"))?
                    == 0
                {
                    return Err(format!("{proxy}: closed the connection on CONNECT"));
                }
                head.push(byte[0]);
            }
            Ok(())
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| {
                format!(
                    "{proxy}: no answer to CONNECT for {}s",
                    READ_TIMEOUT.as_secs()
                )
            })??;
        let status = String::from_utf8_lossy(&head);
        let status = status.lines().next().unwrap_or_default();
        match status.split_whitespace().nth(1) {
            Some(code) if code.starts_with('2') => Ok(tcp),
            Some("407") => Err(format!(
                "{proxy} wants a login ({status}): put it in HTTPS_PROXY as http://user:password@host:port"
            )),
            _ => Err(format!("{proxy} refused CONNECT {host}:{port}: {status}")),
        }
    }
}

/// Whether a `NO_PROXY` list (`*`, `host`, `.domain`, `domain`) names `host`.
fn bypasses(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let entry = entry
                .split(':')
                .next()
                .unwrap_or(entry)
                .to_ascii_lowercase();
            entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
        })
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// TLS with the system's roots (a host behind an inspecting proxy trusts
/// that proxy there too).
fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no trusted certificates on this system: install ca-certificates".to_owned());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_redirect_is_read_against_its_host() {
        let base: Uri = "https://pypi.example/simple/x/".parse().unwrap();
        assert_eq!(
            resolve(&base, "/files/a.whl").unwrap().to_string(),
            "https://pypi.example/files/a.whl"
        );
        assert_eq!(
            resolve(&base, "https://files.example/a.whl")
                .unwrap()
                .to_string(),
            "https://files.example/a.whl"
        );
    }

    #[test]
    fn proxies_are_read_as_curl_reads_them() {
        assert_eq!(
            Proxy::parse("http://proxy.corp:3128").unwrap(),
            Proxy {
                host: "proxy.corp".into(),
                port: 3128,
                authorization: None
            }
        );
        let with_login = Proxy::parse("proxy.corp:8080").unwrap();
        assert_eq!(
            (with_login.host.as_str(), with_login.port),
            ("proxy.corp", 8080)
        );
        let login = Proxy::parse("http://me:p%40ss@proxy.corp").unwrap();
        assert_eq!(login.port, 80);
        // base64("me:p@ss")
        assert_eq!(login.authorization.as_deref(), Some("Basic bWU6cEBzcw=="));
        let err = Proxy::parse("socks5://proxy.corp:1080").unwrap_err();
        assert!(err.contains("only an http:// proxy"), "{err}");
    }

    #[test]
    fn no_proxy_names_hosts_and_domains() {
        assert!(bypasses(
            "localhost, .pythonhosted.org",
            "files.pythonhosted.org"
        ));
        assert!(bypasses("pypi.org", "pypi.org"));
        assert!(bypasses("*", "pypi.org"));
        assert!(bypasses("*.pypi.org:443", "x.pypi.org"));
        assert!(!bypasses("pypi.org", "evilpypi.org"));
        assert!(!bypasses("", "pypi.org"));
    }

    /// A proxy on loopback that records the CONNECT it gets and answers
    /// `answer`.
    async fn proxy_answering(answer: &'static str) -> (Proxy, tokio::task::JoinHandle<String>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer.as_bytes()).await.unwrap();
            conn.write_all(b"tunnelled").await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let proxy = Proxy {
            host: "127.0.0.1".into(),
            port,
            authorization: Some("Basic dTpw".into()),
        };
        (proxy, seen)
    }

    #[tokio::test]
    async fn a_tunnel_goes_through_connect_and_keeps_what_follows() {
        use tokio::io::AsyncReadExt;
        let (proxy, seen) = proxy_answering("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let mut tcp = proxy.tunnel("pypi.org", 443).await.unwrap();
        let head = seen.await.unwrap();
        assert!(
            head.starts_with("CONNECT pypi.org:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{head}"
        );
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"tunnelled");
    }

    #[tokio::test]
    async fn a_proxy_wanting_a_login_says_so() {
        let (proxy, _seen) =
            proxy_answering("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let err = proxy.tunnel("pypi.org", 443).await.unwrap_err();
        assert!(
            err.contains("wants a login") && err.contains("http://user:password@host:port"),
            "{err}"
        );
    }
}
