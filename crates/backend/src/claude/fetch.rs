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
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| {
        format!(
            "{host}:{port}: no connection in {}s",
            CONNECT_TIMEOUT.as_secs()
        )
    })?
    .map_err(|e| format!("{host}:{port}: {e}"))?;
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
}
