//! Property tests of the gate's parsers that face the agent: the leak
//! detector (a secret is found however it is encoded and wherever it is
//! cut), git's update lines, supervise requests, and raw HTTP sent to the
//! egress proxy and the supervise server. None may panic or hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bottle_gate::egress::leak::Detector;
use bottle_gate::git::policy::Update;
use bottle_gate::supervise::requests::{Ask, check_fragment, printable};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Counts panics in any thread (a task that panics inside a server would
/// otherwise only drop its connection).
fn count_panics() -> &'static AtomicUsize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
    &PANICS
}

/// How a secret is written: a form, its lines maybe wrapped, then up to
/// two layers of escaping in any order.
#[derive(Debug, Clone)]
struct Encoding {
    form: Form,
    /// Line width of a wrapped form (`base64` wraps at 76).
    wrap: Option<(usize, bool)>,
    layers: Vec<Layer>,
}

#[derive(Debug, Clone)]
enum Form {
    Verbatim,
    Hex { upper: Vec<bool> },
    Base64 { url: bool, prefix: usize },
    Base32 { prefix: usize, lower: bool },
}

#[derive(Debug, Clone)]
enum Layer {
    /// URL-encoding: every byte, or all but letters and digits.
    Percent { all: bool },
    /// `\uXXXX` for every character.
    JsonU,
    /// A JSON string's own escapes (`\n`, `\"`, `\\`).
    JsonString,
}

fn encoding() -> impl Strategy<Value = Encoding> {
    let form = prop_oneof![
        Just(Form::Verbatim),
        prop::collection::vec(any::<bool>(), 1..8).prop_map(|upper| Form::Hex { upper }),
        (any::<bool>(), 0usize..6).prop_map(|(url, prefix)| Form::Base64 { url, prefix }),
        (0usize..6, any::<bool>()).prop_map(|(prefix, lower)| Form::Base32 { prefix, lower }),
    ];
    let layer = prop_oneof![
        any::<bool>().prop_map(|all| Layer::Percent { all }),
        Just(Layer::JsonU),
        Just(Layer::JsonString),
    ];
    (
        form,
        prop::option::of((1usize..80, any::<bool>())),
        prop::collection::vec(layer, 0..=2),
    )
        .prop_map(|(form, wrap, layers)| Encoding {
            wrap: wrap.filter(|_| !matches!(form, Form::Verbatim)),
            form,
            layers,
        })
}

fn encode(secret: &str, how: &Encoding) -> String {
    let mut text = match &how.form {
        Form::Verbatim => secret.to_owned(),
        Form::Hex { upper } => secret
            .bytes()
            .enumerate()
            .map(|(i, b)| {
                let h = format!("{b:02x}");
                if upper[i % upper.len()] {
                    h.to_uppercase()
                } else {
                    h
                }
            })
            .collect(),
        Form::Base64 { url, prefix } => {
            let text = format!("{}{secret}!", "p".repeat(*prefix));
            if *url {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
            } else {
                base64::engine::general_purpose::STANDARD.encode(text)
            }
        }
        Form::Base32 { prefix, lower } => {
            let text = format!("{}{secret}!", "p".repeat(*prefix));
            let out = base32(text.as_bytes());
            if *lower { out.to_lowercase() } else { out }
        }
    };
    if let Some((width, crlf)) = how.wrap {
        let chars: Vec<char> = text.chars().collect();
        let lines: Vec<String> = chars.chunks(width).map(|c| c.iter().collect()).collect();
        text = lines.join(if crlf { "\r\n" } else { "\n" });
    }
    for layer in &how.layers {
        text = match layer {
            Layer::Percent { all } => text
                .bytes()
                .map(|b| {
                    if !all && b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect(),
            Layer::JsonU => text
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect(),
            Layer::JsonString => {
                let quoted = serde_json::to_string(&text).unwrap();
                quoted[1..quoted.len() - 1].to_owned()
            }
        };
    }
    text
}

fn base32(data: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut bits, mut value) = (String::new(), 0u32, 0u64);
    for &b in data {
        value = (value << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(A[((value >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((value << (5 - bits)) & 31) as usize] as char);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A secret in any supported encoding, inside any text, is found;
    /// cut anywhere into two chunks, nothing before the held-back tail
    /// holds it and the held-back tail plus the rest does.
    #[test]
    fn secrets_are_found_however_encoded_and_cut(
        secret in "[A-Za-z0-9_\\-+/=.]{8,40}",
        before in "[ -~]{0,30}",
        after in "[ -~]{0,30}",
        how in encoding(),
        cut in any::<prop::sample::Index>(),
    ) {
        let d = Detector::new(&[secret.as_bytes()]).unwrap();
        // Spaces around the encoded secret: an escape cut off at the end of
        // `before` would otherwise swallow its first character, and what
        // any decoder then reads is no longer the secret.
        let text = format!("{before} {} {after}", encode(&secret, &how));
        prop_assert!(d.first(text.as_bytes()).is_some(), "missed {:?} in {:?}", how, text);
        let cut = cut.index(text.len() + 1);
        let (a, b) = text.as_bytes().split_at(cut);
        if d.first(a).is_none() {
            // What a stream holds back: never less than what could begin
            // the secret, whatever the bytes.
            let held = d.hold_back(a);
            prop_assert!(d.pending(a) <= held);
            prop_assert!(held <= a.len());
            prop_assert!(d.first(&a[..a.len() - held]).is_none());
            let mut rest = a[a.len() - held..].to_vec();
            rest.extend_from_slice(b);
            prop_assert!(d.first(&rest).is_some(), "lost across the cut at {}: {:?}", cut, how);
        }
        // Scrubbing removes every form of it and keeps the length.
        let mut bytes = text.clone().into_bytes();
        d.scrub(&mut bytes);
        prop_assert_eq!(bytes.len(), text.len());
        prop_assert!(d.first(&bytes).is_none(), "scrubbed text still holds it: {:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn the_detector_never_panics(secret in ".{1,40}", input in prop::collection::vec(any::<u8>(), 0..400)) {
        let d = Detector::new(&[secret.as_bytes()]).unwrap();
        let _ = d.hits(&input);
        let held = d.hold_back(&input);
        prop_assert!(d.pending(&input) <= held && held <= input.len());
        let mut copy = input.clone();
        d.scrub(&mut copy);
        prop_assert_eq!(copy.len(), input.len());
    }

    #[test]
    fn update_lines_are_parsed_strictly(line in "[0-9a-fA-Z /\\-\\.]{0,140}") {
        if let Some(update) = Update::parse(&line) {
            prop_assert!(update.refname.starts_with("refs/"));
            prop_assert!(matches!(update.old.len(), 40 | 64));
            prop_assert_eq!(update.old.len(), update.new.len());
        }
    }

    #[test]
    fn asks_are_checked_without_panicking(host in ".{0,60}", header in ".{0,30}", port in proptest::option::of(any::<u16>()), fragment in ".{0,200}") {
        let _ = Ask::Egress { host: host.clone(), port }.checked();
        let _ = Ask::Route { host, header }.checked();
        let _ = Ask::Image { fragment: fragment.clone() }.checked();
        let _ = check_fragment(&fragment);
        let shown = printable(&fragment, false);
        prop_assert!(!shown.chars().any(char::is_control));
    }
}

/// A request head built from pieces a hostile agent would try.
fn request_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("CONNECT"),
        Just("POST"),
        Just("OPTIONS"),
        Just("G\u{0}T"),
        Just("bbtest-secret-zz-0042"),
    ];
    let target = prop_oneof![
        Just("http://allowed.test/".to_owned()),
        Just("allowed.test:443".to_owned()),
        Just("*".to_owned()),
        Just("/".to_owned()),
        Just("http://[::1]:80/".to_owned()),
        Just("http://user@allowed.test/".to_owned()),
        Just("http://0x7f.1/".to_owned()),
        "[ -~]{0,40}",
    ];
    let header = prop_oneof![
        Just("Host: allowed.test".to_owned()),
        Just("Content-Length: 5".to_owned()),
        Just("Content-Length: -1".to_owned()),
        Just("Transfer-Encoding: chunked".to_owned()),
        Just("Content-Encoding: gzip".to_owned()),
        Just("Upgrade: websocket".to_owned()),
        Just("Connection: Upgrade, close".to_owned()),
        Just("X-Leak: bbtest-secret-zz-0042".to_owned()),
        "[ -~]{0,60}",
    ];
    (
        method,
        target,
        prop::collection::vec(header, 0..6),
        "[ -~\r\n]{0,40}",
    )
        .prop_map(|(m, t, headers, body)| {
            let mut out = format!("{m} {t} HTTP/1.1\r\n");
            for h in headers {
                out.push_str(&h);
                out.push_str("\r\n");
            }
            out.push_str("\r\n");
            out.push_str(&body);
            out.into_bytes()
        })
}

/// The egress proxy answers or closes for any head, within its timeouts,
/// without a panic; it serves a good request afterwards.
#[test]
fn the_proxy_survives_any_request_head() {
    let panics = count_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let egress = gate_with_a_route(dir.path());
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(egress.serve(listener));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(150));
        let heads: Vec<Vec<u8>> = (0..150)
            .map(|_| request_head().new_tree(&mut runner).unwrap().current())
            .collect();
        for head in heads {
            let answer = exchange(&socket, &head).await;
            assert!(
                answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
                "not HTTP: {:?} for {:?}",
                String::from_utf8_lossy(&answer),
                String::from_utf8_lossy(&head)
            );
        }
        let good = exchange(&socket, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            good.starts_with(b"HTTP/1.1 200"),
            "the gate stopped serving"
        );
    });
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a handler panicked");
}

/// Sends `bytes`, reads what comes back until the gate closes or is quiet
/// for 200 ms; a gate that hangs past 20 s fails.
async fn exchange(socket: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the gate hung");
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    answer
}

fn gate_with_a_route(dir: &std::path::Path) -> Arc<bottle_gate::egress::Egress> {
    use bottle_gate::egress::credentials::{Credentials, Route, Secret};
    use bottle_gate::egress::upstream::{UpstreamTls, Upstreams};
    use bottle_gate::egress::{Egress, Live, Policy};
    use bottle_manifest::host::{Host, HostRule};
    bottle_gate::install_crypto_provider();
    let rules = ["allowed.test", "route.test"]
        .iter()
        .map(|r| HostRule::parse(r).unwrap())
        .collect();
    let live = Arc::new(Live::new(
        Policy::new(rules, &bottle_gate::config::EgressConfig::default()),
        Credentials::new(vec![Route::whole_host(
            Host::Name("route.test".into()),
            http::header::AUTHORIZATION,
            "Bearer".into(),
            Secret::new("bbtest-secret-zz-0042".into()),
        )])
        .unwrap(),
    ));
    let audit = Arc::new(bottle_gate::audit::Audit::open(&dir.join("audit.jsonl")).unwrap());
    let ca = bottle_gate::ca::mint_ca("props").unwrap();
    let minter = bottle_gate::ca::LeafMinter::new(&ca.cert_pem, &ca.key_pem).unwrap();
    let upstreams = Upstreams::new(Arc::clone(&live), &UpstreamTls::new(None).unwrap());
    Arc::new(Egress::new(live, Arc::new(minter), upstreams, audit))
}

/// The supervise server answers any body posted to it, without a panic.
#[test]
fn the_supervise_server_survives_any_body() {
    use bottle_gate::supervise::requests::Store;
    use bottle_gate::supervise::tools::Shared;
    let panics = count_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("supervise.sock");
        let live = Arc::new(bottle_gate::egress::Live::new(
            bottle_gate::egress::Policy::new(Vec::new(), &bottle_gate::config::EgressConfig::default()),
            bottle_gate::egress::credentials::Credentials::none(),
        ));
        let shared = Arc::new(Shared {
            identity: "props-x".into(),
            store: Store::new(dir.path().join("requests")),
            live,
            audit: Arc::new(bottle_gate::audit::Audit::open(&dir.path().join("audit.jsonl")).unwrap()),
            config: bottle_gate::config::SuperviseConfig {
                dir: dir.path().to_owned(),
                image: "x".into(),
                remotes: Vec::new(),
                image_changes: None,
            },
        });
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(bottle_gate::supervise::serve(listener, shared));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(100));
        let bodies = prop_oneof![
            "[ -~]{0,200}".prop_map(String::into_bytes),
            Just(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"p","version":"1"}}}"#.to_vec()),
            Just(br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"request_egress","arguments":{"host":"*","reason":"x"}}}"#.to_vec()),
            Just(br#"[{"jsonrpc":"2.0"},{}]"#.to_vec()),
            prop::collection::vec(any::<u8>(), 0..300),
        ];
        for _ in 0..100 {
            let body = bodies.new_tree(&mut runner).unwrap().current();
            let mut head = format!(
                "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:7777\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            head.extend_from_slice(&body);
            let answer = exchange(&socket, &head).await;
            assert!(
                answer.starts_with(b"HTTP/1.1 "),
                "no HTTP answer to {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    });
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a handler panicked");
}
