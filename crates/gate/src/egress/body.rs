//! Bodies on their way through the gate while it holds credentials:
//! requests scanned for secrets before a byte of one goes out, responses
//! scrubbed of them before the agent reads a byte.
//!
//! Both stream. A chunk is passed on except for its last bytes — as many
//! as any encoded secret needs in any view ([`Credentials::hold_back`]) —
//! which wait for the next chunk, so no part of a secret that would later
//! be found ever leaves, and the timing says nothing about whether the
//! bytes begin one. Compressed request bodies (`gzip`, `deflate`, `br`) are
//! read whole, up to a bound, and inflated, up to a bound, so what they
//! carry is scanned too; an encoding the gate cannot read is refused.

use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bottle_manifest::host::Host;
use bytes::Bytes;
use http::HeaderMap;
use http::header::{self, HeaderValue};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::credentials::{Credentials, Leak};
use super::upstream::BoxError;

/// Largest compressed request body read to be inflated and scanned.
pub const MAX_COMPRESSED_BODY: usize = 8 << 20;
/// Largest inflated request body scanned; past it the request is refused.
pub const MAX_INFLATED_BODY: usize = 64 << 20;

/// A content coding the gate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// zlib, or raw deflate as some clients send it.
    Deflate,
    Brotli,
}

/// The codings of a body, in the order they were applied, `identity`
/// left out; an error names a coding the gate cannot read.
pub fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, String> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| "a Content-Encoding that is not text".to_owned())?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            out.push(match coding.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                other => return Err(format!("content-encoding {other:?}")),
            });
        }
    }
    Ok(out)
}

/// The transfer codings of an HTTP/1 message, lowercased, in order;
/// anything that is not text counts as one the gate cannot read.
pub fn transfer_codings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text
                .split(',')
                .map(|c| {
                    // Parameters (`;q=…`) do not change the coding.
                    c.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase()
                })
                // `identity` (an obsolete spelling of none) changes nothing.
                .filter(|c| !c.is_empty() && c != "identity")
                .collect::<Vec<_>>(),
            Err(_) => vec!["(not text)".to_owned()],
        })
        .collect()
}

/// Why a compressed body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inflate {
    /// It inflates past [`MAX_INFLATED_BODY`].
    TooLarge,
    /// It is not what its Content-Encoding says.
    Corrupt(String),
}

/// `bytes` with `codings` undone (last applied, first undone), reading at
/// most `limit` bytes of output.
pub fn inflate(bytes: &[u8], codings: &[Coding], limit: usize) -> Result<Vec<u8>, Inflate> {
    let mut data = bytes.to_vec();
    for coding in codings.iter().rev() {
        let reader: Box<dyn Read + '_> = match coding {
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&data[..])),
            // A zlib stream starts with a header whose first 16 bits are
            // a multiple of 31 and whose method is 8; anything else is
            // raw deflate.
            Coding::Deflate
                if data.len() >= 2
                    && data[0] & 0x0f == 8
                    && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0 =>
            {
                Box::new(flate2::read::ZlibDecoder::new(&data[..]))
            }
            Coding::Deflate => Box::new(flate2::read::DeflateDecoder::new(&data[..])),
            Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(&data[..], 4096)),
        };
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Inflate::Corrupt(format!("{coding:?}: {e}").to_lowercase()))?;
        if out.len() > limit {
            return Err(Inflate::TooLarge);
        }
        data = out;
    }
    Ok(data)
}

/// Headers checked for secrets: names and values. `skip` is the route's
/// own header, which the gate replaces anyway.
pub fn leak_in_headers(
    credentials: &Credentials,
    headers: &HeaderMap,
    host: &Host,
    skip: Option<&header::HeaderName>,
    place: &str,
) -> Option<Leak> {
    for (name, value) in headers {
        if Some(name) == skip {
            continue;
        }
        let leak = credentials
            .find_leak_any_case(name.as_str().as_bytes(), host, &format!("{place} name"))
            .or_else(|| credentials.find_leak(value.as_bytes(), host, &format!("{place} {name}")));
        if leak.is_some() {
            return leak;
        }
    }
    None
}

/// Every header value (and name) with the secrets overwritten.
pub fn scrub_headers(credentials: &Credentials, headers: &mut HeaderMap) {
    let mut renamed = Vec::new();
    for (name, value) in headers.iter_mut() {
        let mut bytes = value.as_bytes().to_vec();
        if credentials.scrub(&mut bytes)
            && let Ok(clean) = HeaderValue::from_bytes(&bytes)
        {
            *value = clean;
        }
        // Header names arrive lowercased: a secret matches in any case.
        if credentials.holds_any_case(name.as_str().as_bytes()) {
            renamed.push(name.clone());
        }
    }
    // A header whose name is a secret says nothing the agent needs.
    for name in renamed {
        headers.remove(name);
    }
}

/// Splits `window` into what may go on now and the last `hold` bytes,
/// which wait.
fn release(window: &mut Vec<u8>, hold: usize) -> Vec<u8> {
    let rest = window.split_off(window.len() - hold);
    std::mem::replace(window, rest)
}

/// What an inspected body does with a secret it finds.
enum Mode {
    /// A request: fail, before any part of the secret goes out, when it
    /// carries a secret bound for another host than `host`.
    Refuse {
        host: Host,
        /// The leak found, for the refusal the agent reads.
        found: Arc<OnceLock<Leak>>,
    },
    /// A response: overwrite every secret (same length).
    Scrub,
}

/// A body passed on chunk by chunk, holding back only the bytes that
/// could begin a secret, and checked or scrubbed as its [`Mode`] says.
pub struct Inspected<B> {
    inner: B,
    credentials: Arc<Credentials>,
    mode: Mode,
    /// Bytes seen but held back: they could begin a secret.
    held: Vec<u8>,
    ended: bool,
    /// Trailers that arrived while bytes were held back.
    trailers: Option<Frame<Bytes>>,
}

/// A request body checked for secrets bound elsewhere.
pub fn scanned<B>(
    inner: B,
    credentials: Arc<Credentials>,
    host: Host,
    found: Arc<OnceLock<Leak>>,
) -> Inspected<B> {
    Inspected::new(inner, credentials, Mode::Refuse { host, found })
}

/// A response body with every secret overwritten.
pub fn scrubbed<B>(inner: B, credentials: Arc<Credentials>) -> Inspected<B> {
    Inspected::new(inner, credentials, Mode::Scrub)
}

impl<B> Inspected<B> {
    fn new(inner: B, credentials: Arc<Credentials>, mode: Mode) -> Self {
        Inspected {
            inner,
            credentials,
            mode,
            held: Vec::new(),
            ended: false,
            trailers: None,
        }
    }

    /// Checks or scrubs what is held; returns how many of its last bytes
    /// wait for more. A leak is an error.
    fn inspect(&mut self) -> Result<usize, BoxError> {
        match &self.mode {
            Mode::Refuse { host, found } => {
                let (leak, hold) = self
                    .credentials
                    .find_leak_and_hold(&self.held, host, "body");
                if let Some(leak) = leak {
                    let _ = found.set(leak);
                    return Err("credential leak in the request body".into());
                }
                Ok(hold)
            }
            Mode::Scrub => Ok(self.credentials.scrub_and_hold(&mut self.held)),
        }
    }

    fn inspect_trailers(&self, frame: &mut Frame<Bytes>) -> Result<(), BoxError> {
        let Some(trailers) = frame.trailers_mut() else {
            return Ok(());
        };
        match &self.mode {
            Mode::Refuse { host, found } => {
                if let Some(leak) =
                    leak_in_headers(&self.credentials, trailers, host, None, "trailer")
                {
                    let _ = found.set(leak);
                    return Err("credential leak in the request's trailers".into());
                }
            }
            Mode::Scrub => scrub_headers(&self.credentials, trailers),
        }
        Ok(())
    }
}

impl<B> HttpBody for Inspected<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
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
                    // Inspected whole already: nothing follows it now.
                    let rest = std::mem::take(&mut this.held);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        let hold = match this.inspect() {
                            Ok(hold) => hold,
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        };
                        let ready = release(&mut this.held, hold);
                        if !ready.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(ready)))));
                        }
                    }
                    Err(mut frame) => {
                        if let Err(e) = this.inspect_trailers(&mut frame) {
                            return Poll::Ready(Some(Err(e)));
                        }
                        this.trailers = Some(frame);
                        this.ended = true;
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty()
            && self.trailers.is_none()
            && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // Nothing is added or removed, scrubbing keeps the length.
        let inner = self.inner.size_hint();
        let held = self.held.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn transfer_codings_are_read_whole() {
        let mut headers = HeaderMap::new();
        for value in ["gzip, Chunked", "chunked;ext=1"] {
            headers.append(header::TRANSFER_ENCODING, value.parse().unwrap());
        }
        assert_eq!(transfer_codings(&headers), ["gzip", "chunked", "chunked"]);
        let mut plain = HeaderMap::new();
        plain.insert(header::TRANSFER_ENCODING, "identity".parse().unwrap());
        assert!(transfer_codings(&plain).is_empty());
    }
    use crate::egress::credentials::{Route, Secret};
    use http_body_util::{BodyExt, StreamBody};
    use std::io::Write;

    const SECRET: &str = "bbtest-unit-secret-42";

    fn creds() -> Arc<Credentials> {
        Arc::new(
            Credentials::new(vec![Route::whole_host(
                Host::Name("route.test".into()),
                header::AUTHORIZATION,
                "Bearer".into(),
                Secret::new(SECRET.into()),
            )])
            .unwrap(),
        )
    }

    type Chunks = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;

    fn chunks(parts: Vec<Vec<u8>>) -> Chunks {
        let frames: Vec<_> = parts
            .into_iter()
            .map(|p| Ok(Frame::data(Bytes::from(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// What a body passes on before it ends or fails.
    async fn sent<B>(mut body: B) -> (Vec<u8>, bool)
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => out.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
                Err(_) => return (out, false),
            }
        }
        (out, true)
    }

    #[tokio::test]
    async fn no_part_of_a_secret_goes_out_before_it_is_found() {
        let body = format!("{{\"q\": \"{SECRET}\"}}");
        for cut in 1..body.len() {
            let (a, b) = body.as_bytes().split_at(cut);
            let found = Arc::new(OnceLock::new());
            let scanned = scanned(
                chunks(vec![a.to_vec(), b.to_vec()]),
                creds(),
                Host::Name("other.test".into()),
                Arc::clone(&found),
            );
            let (out, ok) = sent(scanned).await;
            assert!(!ok, "cut {cut}: passed");
            assert!(found.get().is_some());
            let out = String::from_utf8_lossy(&out);
            assert!(!out.contains("bbt"), "cut {cut}: sent {out:?}");
        }
    }

    #[tokio::test]
    async fn clean_bodies_pass_whole() {
        let parts = vec![
            b"hello ".to_vec(),
            b"bbtest-unit-".to_vec(),
            b"not the secret".to_vec(),
        ];
        let scanned = scanned(
            chunks(parts),
            creds(),
            Host::Name("other.test".into()),
            Arc::new(OnceLock::new()),
        );
        let (out, ok) = sent(scanned).await;
        assert!(ok);
        assert_eq!(out, b"hello bbtest-unit-not the secret");
    }

    #[tokio::test]
    async fn responses_are_scrubbed_across_chunks() {
        let text = format!("echo: {SECRET} and {}", SECRET.replace('-', "%2D"));
        for cut in 1..text.len() {
            let (a, b) = text.as_bytes().split_at(cut);
            let scrubbed = scrubbed(chunks(vec![a.to_vec(), b.to_vec()]), creds());
            let (out, ok) = sent(scrubbed).await;
            assert!(ok);
            assert_eq!(out.len(), text.len());
            let out = String::from_utf8_lossy(&out);
            assert!(!out.contains("secret"), "cut {cut}: {out}");
        }
    }

    #[test]
    fn compressed_bodies_are_read_with_a_bound() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(SECRET.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            inflate(&gz, &[Coding::Gzip], 1024).unwrap(),
            SECRET.as_bytes()
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(SECRET.as_bytes()).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(
            inflate(&zlib, &[Coding::Deflate], 1024).unwrap(),
            SECRET.as_bytes()
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(SECRET.as_bytes()).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            inflate(&raw, &[Coding::Deflate], 1024).unwrap(),
            SECRET.as_bytes()
        );
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &gz[..], &mut br, &Default::default()).unwrap();
        assert_eq!(
            inflate(&br, &[Coding::Gzip, Coding::Brotli], 1024).unwrap(),
            SECRET.as_bytes()
        );
        // A bomb stops at the bound.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert_eq!(
            inflate(&bomb, &[Coding::Gzip], 1 << 20),
            Err(Inflate::TooLarge)
        );
        assert!(matches!(
            inflate(b"not gzip", &[Coding::Gzip], 1024),
            Err(Inflate::Corrupt(_))
        ));
    }

    #[test]
    fn unknown_codings_are_named() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip, zstd"),
        );
        assert_eq!(
            codings(&headers),
            Err("content-encoding \"zstd\"".to_owned())
        );
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity, X-GZIP"),
        );
        assert_eq!(codings(&headers), Ok(vec![Coding::Gzip]));
    }
}
