//! The egress proxy against hostile and malformed requests, over its real
//! Unix socket, with raw bytes (no HTTP client to tidy them up).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bottle_gate::audit::Audit;
use bottle_gate::ca::{LeafMinter, mint_ca};
use bottle_gate::config::EgressConfig;
use bottle_gate::egress::credentials::Credentials;
use bottle_gate::egress::upstream::{UpstreamTls, Upstreams};
use bottle_gate::egress::{Egress, Live, Policy};
use bottle_gate::supervise::control::{self, Change};
use bottle_manifest::host::HostRule;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

struct Gate {
    dir: tempfile::TempDir,
    live: Arc<Live>,
    audit: Arc<Audit>,
}

impl Gate {
    async fn start(allow: &[&str]) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        bottle_gate::install_crypto_provider();
        let rules = allow.iter().map(|r| HostRule::parse(r).unwrap()).collect();
        let live = Arc::new(Live::new(
            Policy::new(rules, &EgressConfig::default()),
            Credentials::none(),
        ));
        let audit = Arc::new(Audit::open(&dir.path().join("audit.jsonl")).unwrap());
        let ca = mint_ca("test-gate").unwrap();
        let minter = LeafMinter::new(&ca.cert_pem, &ca.key_pem).unwrap();
        let upstreams = Upstreams::new(Arc::clone(&live), &UpstreamTls::new(None).unwrap());
        let egress = Egress::new(
            Arc::clone(&live),
            Arc::new(minter),
            upstreams,
            Arc::clone(&audit),
        );
        let listener = UnixListener::bind(dir.path().join("egress.sock")).unwrap();
        tokio::spawn(Arc::new(egress).serve(listener));
        Gate { dir, live, audit }
    }

    /// Sends `request` as is; returns everything the gate answers until it
    /// closes or goes quiet.
    async fn send(&self, request: &[u8]) -> String {
        let mut stream = UnixStream::connect(self.dir.path().join("egress.sock"))
            .await
            .unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap()
    }
}

fn status(answer: &str) -> &str {
    answer.split_whitespace().nth(1).unwrap_or("none")
}

#[tokio::test]
async fn denials_name_the_reason() {
    let gate = Gate::start(&["allowed.test"]).await;
    let answer = gate
        .send(b"GET http://forbidden.test/ HTTP/1.1\r\nHost: forbidden.test\r\n\r\n")
        .await;
    assert_eq!(status(&answer), "403");
    assert!(
        answer.contains("blocked by bottle policy: host forbidden.test is not in the allowlist")
    );
    assert!(answer.contains("x-bottle-error: policy"));

    let answer = gate
        .send(b"CONNECT forbidden.test:443 HTTP/1.1\r\nHost: forbidden.test:443\r\n\r\n")
        .await;
    assert_eq!(status(&answer), "403");
    assert!(answer.contains("x-bottle-reason: blocked by bottle policy: host forbidden.test"));
    assert!(gate.audit().contains("\"decision\":\"deny\""));
}

#[tokio::test]
async fn a_host_header_cannot_choose_the_target() {
    let gate = Gate::start(&["allowed.test"]).await;
    // Origin form with an allowed Host: the gate never guesses a target.
    let answer = gate
        .send(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .await;
    assert_eq!(status(&answer), "400");
    assert!(answer.contains("absolute form"));
}

#[tokio::test]
async fn malformed_requests_get_errors_not_hangs() {
    let gate = Gate::start(&["allowed.test"]).await;
    for (request, want) in [
        (&b"CONNECT allowed.test HTTP/1.1\r\n\r\n"[..], "400"),
        (
            b"GET https://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            "400",
        ),
        (b"GET ftp://allowed.test/ HTTP/1.1\r\n\r\n", "400"),
        (b"NONSENSE\r\n\r\n", "400"),
        (b"GET http://allowed.test:99999/ HTTP/1.1\r\n\r\n", "400"),
        (b"GET http://a..b/ HTTP/1.1\r\n\r\n", "403"),
        (b"GET http://0x7f.1/ HTTP/1.1\r\n\r\n", "403"),
        (b"GET http://[::ffff:127.0.0.1]/ HTTP/1.1\r\n\r\n", "403"),
        (b"CONNECT 2130706433:443 HTTP/1.1\r\n\r\n", "403"),
        (b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n", "403"),
        (
            b"GET http://allowed.test%2eevil.test/ HTTP/1.1\r\n\r\n",
            "400",
        ),
        (
            b"GET http://evil.test@allowed.test/ HTTP/1.1\r\n\r\n",
            "400",
        ),
    ] {
        let answer = gate.send(request).await;
        let line = String::from_utf8_lossy(request);
        assert_eq!(status(&answer), want, "{line:?} got {answer:?}");
    }
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let gate = Gate::start(&["allowed.test"]).await;
    let mut request = b"GET http://allowed.test/ HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        request.extend_from_slice(format!("x-h{i}: {}\r\n", "a".repeat(100)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let answer = gate.send(&request).await;
    assert!(
        matches!(status(&answer), "431" | "400" | "none"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn loopback_is_never_a_destination() {
    // Even a rule naming the address does not open the gate's own namespace.
    let gate = Gate::start(&["127.0.0.1:8080", "localhost:8080"]).await;
    let answer = gate
        .send(b"GET http://127.0.0.1:8080/ HTTP/1.1\r\n\r\n")
        .await;
    assert_eq!(status(&answer), "403", "{answer}");
    assert!(answer.contains("loopback"));
    let answer = gate
        .send(b"GET http://localhost:8080/ HTTP/1.1\r\n\r\n")
        .await;
    assert_eq!(status(&answer), "403", "{answer}");
}

#[tokio::test]
async fn an_approval_reaches_the_next_request_through_the_control_socket() {
    let gate = Gate::start(&["allowed.test"]).await;
    let socket = gate.dir.path().join("control.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(control::serve(
        listener,
        Arc::clone(&gate.live),
        Arc::clone(&gate.audit),
    ));
    let request = b"GET http://forbidden.test/ HTTP/1.1\r\nHost: forbidden.test\r\n\r\n";
    assert!(gate.send(request).await.contains("not in the allowlist"));

    // Garbage on the control socket changes nothing.
    let mut raw = UnixStream::connect(&socket).await.unwrap();
    raw.write_all(b"{\"op\":\"allow\",\"rule\":\"*\"}\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.contains("\"ok\":false"), "{answer}");
    let bad = Change::Allow {
        rule: "*".into(),
        request: "r-000001".into(),
        decided_by: "tester".into(),
    };
    assert!(!control::send(&socket, &bad).await.unwrap().ok);
    assert!(gate.send(request).await.contains("not in the allowlist"));

    let change = Change::Allow {
        rule: "forbidden.test".into(),
        request: "r-000002".into(),
        decided_by: "tester".into(),
    };
    let reply = control::send(&socket, &change).await.unwrap();
    assert!(reply.ok, "{}", reply.message);
    // Allowed now: whatever happens next (no such host here), the
    // allowlist no longer refuses it.
    let answer = gate.send(request).await;
    assert!(!answer.contains("not in the allowlist"), "{answer}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let audit = gate.audit();
    assert!(audit.contains("\"event\":\"applied\"") && audit.contains("\"decided_by\":\"tester\""));
}
