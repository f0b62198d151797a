//! End to end, real TLS: the gate intercepts with the bottle's own CA,
//! verifies the origin against the test CA, injects the route's
//! credential, and keeps the real secret out of the agent's reach.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

#[test]
fn every_runtime_trusts_the_gate_without_flags() {
    let Some(world) = world() else { return };
    let script = [
        curl("curl", "https://allowed.test/curl"),
        "echo git=$(git ls-remote https://allowed.test/git/repo.git 2>&1 | grep -c refs/heads/main)\n".to_owned(),
        "echo urllib=$(python3 -c 'import urllib.request as u; print(u.urlopen(\"https://allowed.test/urllib\").status)' 2>&1 | tail -1)\n".to_owned(),
        "echo requests=$(python3 -c 'import requests; print(requests.get(\"https://allowed.test/requests\").status_code)' 2>&1 | tail -1)\n".to_owned(),
        "echo node=$(node -e 'fetch(\"https://allowed.test/node\").then(r => r.json()).then(j => console.log(j.path + \":\" + j.tls))' 2>&1 | tail -1)\n".to_owned(),
    ]
    .concat();
    let probe = world.probe("probe", &script);
    assert_eq!(probe.get("curl"), "200", "{}", probe.get("curl_err"));
    assert!(probe.get("curl_body").contains("\"tls\": true"));
    assert_eq!(probe.get("git"), "1", "git ls-remote over HTTPS lists main");
    assert_eq!(probe.get("urllib"), "200");
    assert_eq!(probe.get("requests"), "200");
    assert_eq!(
        probe.get("node"),
        "/node:true",
        "Node's fetch goes through the gate"
    );
}

#[test]
fn credentials_are_injected_only_on_their_route() {
    let Some(world) = world() else { return };
    let secret = world.secret();
    let script = [
        curl(
            "route",
            "-H 'Authorization: Bearer agent-placeholder' https://route.test/inject",
        ),
        curl(
            "elsewhere",
            "-H 'Authorization: Bearer agent-placeholder' https://allowed.test/elsewhere",
        ),
        curl(
            "cleartext",
            "-H 'Authorization: Bearer agent-placeholder' http://route.test/cleartext",
        ),
    ]
    .concat();
    let out = world
        .command()
        .args(["start", "probe", "-y", "--", "bash", "-c", &script])
        .output()
        .unwrap();
    let identity = identity_from(&stderr(&out)).expect("identity");
    let probe = Probe::new(out);
    assert_eq!(probe.get("route"), "200", "{}", probe.get("route_err"));
    assert_eq!(probe.get("elsewhere"), "200");

    let requests = world.origin_requests();
    let seen = |path: &str| -> Vec<String> {
        requests
            .iter()
            .filter(|r| r["path"] == path)
            .filter_map(|r| r["headers"]["authorization"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        seen("/inject"),
        vec![format!("Bearer {secret}")],
        "the route's host gets the real token, once"
    );
    assert_eq!(
        seen("/elsewhere"),
        vec!["Bearer agent-placeholder".to_owned()]
    );
    assert_eq!(
        seen("/cleartext"),
        vec!["Bearer agent-placeholder".to_owned()],
        "never over plain HTTP"
    );

    // The origin echoed the header back; the agent got it scrubbed.
    let out = stdout(&probe.output);
    assert!(!out.contains(&secret), "the agent saw the secret: {out}");
    assert!(
        probe.get("route_body").contains("Bearer xxxxxxxx"),
        "{}",
        probe.get("route_body")
    );

    // The audit log says a credential was injected, never its value.
    let audit =
        std::fs::read_to_string(world.state_root().join(&identity).join("audit.jsonl")).unwrap();
    assert!(!audit.contains(&secret), "the secret is in the audit log");
    let injected: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["path"] == "/inject")
        .collect();
    assert_eq!(injected.len(), 1, "{audit}");
    assert_eq!(injected[0]["injected"], "authorization");
    assert_eq!(injected[0]["host"], "route.test");
    assert_eq!(injected[0]["rule"], "route.test");
    assert_eq!(injected[0]["status"], 200);
}

#[test]
fn a_refreshed_token_is_what_the_gate_sends_next() {
    let Some(world) = world() else { return };
    let token = world.dir.path().join("token");
    let first = format!("bbtest-first-{}-Zq9", world.network);
    let second = format!("bbtest-second-{}-Zq9", world.network);
    std::fs::write(&token, &first).unwrap();
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["egress_proxy"]["routes"] = serde_json::json!([{
        "host": "route.test",
        "token_command": format!("cat {}", token.display()),
        "token_refresh": "10s"
    }]);
    world.write_manifest(&manifest);
    let script = [
        curl("before", "https://route.test/refresh-before"),
        "sleep 16\n".to_owned(),
        curl("after", "https://route.test/refresh-after"),
    ]
    .concat();
    let bottle = world
        .command()
        .args(["start", "probe", "-y", "--", "bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent = |path: &str| -> Vec<String> {
        world
            .origin_requests()
            .iter()
            .filter(|r| r["path"] == path)
            .filter_map(|r| r["headers"]["authorization"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        wait_until(std::time::Duration::from_secs(60), || !sent(
            "/refresh-before"
        )
        .is_empty()),
        "the first request never reached the origin"
    );
    // The host's token changes while the bottle runs (its own Claude
    // Code refreshed it, say): the next refresh picks it up.
    std::fs::write(&token, &second).unwrap();
    let out = bottle.wait_with_output().unwrap();
    let identity = identity_from(&stderr(&out)).expect("identity");
    let probe = Probe::new(out);
    assert_eq!(probe.get("after"), "200", "{}", probe.get("after_err"));
    assert_eq!(sent("/refresh-before"), vec![format!("Bearer {first}")]);
    assert_eq!(
        sent("/refresh-after"),
        vec![format!("Bearer {second}")],
        "the gate sends the refreshed token"
    );
    // The gate recorded the rotation, never a token; the agent saw
    // neither.
    let audit =
        std::fs::read_to_string(world.state_root().join(&identity).join("audit.jsonl")).unwrap();
    assert!(
        !audit.contains(&first) && !audit.contains(&second),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|l| l["rotated"] == "route.test" && l["event"] == "applied"),
        "{audit}"
    );
    let seen = stdout(&probe.output);
    assert!(!seen.contains(&first) && !seen.contains(&second), "{seen}");
}

#[test]
fn the_secret_is_nowhere_in_the_bottle() {
    let Some(world) = world() else { return };
    let secret = world.secret();
    let bottle = Running::spawn(
        world
            .command()
            .args(["start", "probe", "-y", "--rm", "--", "bash", "-c"])
            .arg(
                "curl -s -H 'Authorization: Bearer x' https://route.test/keep > /home/agent/response.json; \
                 cp /home/agent/response.json /workspace/; echo ID=$BOTTLE_IDENTITY; sleep 60",
            ),
    );
    let container = bottle.agent();
    assert!(
        world
            .origin_requests()
            .iter()
            .any(|r| r["path"] == "/keep"
                && r["headers"]["authorization"] == format!("Bearer {secret}")),
        "the route was used, so the gate held the secret"
    );

    // Every process's environment and command line, and every file.
    assert_nowhere_in(&container, &secret);
    let response = exec_in(&container, "agent", &["cat", "/workspace/response.json"])
        .output()
        .unwrap();
    let response = String::from_utf8_lossy(&response.stdout);
    assert!(
        response.contains("bbtest-origin"),
        "the search ran over real files: {response}"
    );

    drop(bottle);
}

#[test]
fn domain_fronting_is_refused() {
    let Some(world) = world() else { return };
    let script = [
        curl(
            "host_header",
            "-H 'Host: forbidden.test' https://allowed.test/fronted",
        ),
        curl(
            "sni",
            "--connect-to forbidden.test:443:allowed.test:443 https://forbidden.test/sni",
        ),
        curl(
            "connect_forbidden",
            "--connect-to allowed.test:443:forbidden.test:443 https://allowed.test/x",
        ),
    ]
    .concat();
    let probe = world.probe("probe", &script);
    assert_eq!(probe.get("host_header"), "403");
    assert!(
        probe.get("host_header_body").contains("domain fronting"),
        "{}",
        probe.get("host_header_body")
    );
    assert_ne!(
        probe.get("sni_rc"),
        "0",
        "a handshake naming another host must fail"
    );
    assert!(probe.get("connect_forbidden_err").contains("403"));
    let paths: Vec<String> = world
        .origin_requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    for path in ["/fronted", "/sni", "/x"] {
        assert!(
            !paths.iter().any(|p| p == path),
            "{path} reached the origin"
        );
    }
}

/// Python that opens a TLS connection to allowed.test:443 through the
/// bottle's proxy (CONNECT, then TLS trusting the bottle's CA): `tunnel()`.
const TUNNEL_PY: &str = r#"
import base64, os, socket, ssl, sys, time
def tunnel():
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(s, server_hostname="allowed.test")
"#;

const WEBSOCKET_CLIENT: &str = r#"
t = tunnel()
key = base64.b64encode(os.urandom(16)).decode()
t.sendall(("GET /ws HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += t.recv(1)
print("ws_status=" + head.split(b"\r\n")[0].decode().split(" ")[1])
msg = b"hello through the gate"
mask = os.urandom(4)
t.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
hdr = t.recv(2)
n = hdr[1] & 0x7F
data = b""
while len(data) < n:
    data += t.recv(n - len(data))
print("ws_echo=" + data.decode())
"#;

#[test]
fn http2_and_websockets_work_through_the_gate() {
    let Some(world) = world() else { return };
    let script = format!(
        "echo h2=$(curl -sS --http2 -o /tmp/h2 -w '%{{http_version}}' https://allowed.test/h2)\n\
         echo h2_upstream=$(python3 -c 'import json; print(json.load(open(\"/tmp/h2\"))[\"protocol\"])')\n\
         echo h1=$(curl -sS --http1.1 -o /dev/null -w '%{{http_version}}' https://allowed.test/h1)\n\
         python3 -c '{}' 2>&1\n",
        format!("{TUNNEL_PY}{WEBSOCKET_CLIENT}").replace('\'', "'\\''")
    );
    let probe = world.probe("probe", &script);
    assert_eq!(probe.get("h2"), "2", "the agent's leg speaks HTTP/2");
    assert_eq!(
        probe.get("h2_upstream"),
        "HTTP/2.0",
        "the upstream leg negotiated HTTP/2 too"
    );
    assert_eq!(probe.get("h1"), "1.1");
    assert_eq!(probe.get("ws_status"), "101");
    assert_eq!(probe.get("ws_echo"), "hello through the gate");
}

#[test]
fn a_secret_sent_elsewhere_is_blocked_in_every_encoding() {
    let Some(world) = world() else { return };
    let secret = world.secret();
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let b64 = |s: &str| {
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        out.stdin.as_ref().unwrap().write_all(s.as_bytes()).unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
    };
    let url_encoded: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let cases = [
        (
            "header",
            format!("-H 'X-Token: {secret}' https://allowed.test/h"),
        ),
        (
            "basic",
            format!(
                "-H 'Authorization: Basic {}' https://allowed.test/b",
                b64(&format!("me:{secret}"))
            ),
        ),
        ("query", format!("'https://allowed.test/q?t={url_encoded}'")),
        ("path", format!("https://allowed.test/p/{secret}")),
        (
            "body_hex",
            format!("--data '{hex}' https://allowed.test/bh"),
        ),
        (
            "body_b64",
            format!(
                "--data 'x={}' https://allowed.test/bb",
                b64(&format!("{{\"token\":\"{secret}\"}}"))
            ),
        ),
        (
            "body_raw",
            format!("--data-binary 'prefix {secret} suffix' https://allowed.test/br"),
        ),
        (
            "plain_http",
            format!("-H 'X-Token: {secret}' http://allowed.test/plain"),
        ),
    ];
    let script: String = cases.iter().map(|(name, args)| curl(name, args)).collect();
    let probe = world.probe("probe", &script);
    for (name, _) in &cases {
        assert_eq!(
            probe.get(name),
            "403",
            "{name}: {}",
            probe.get(&format!("{name}_body"))
        );
        assert!(
            probe
                .get(&format!("{name}_body"))
                .contains("credential leak"),
            "{name}: {}",
            probe.get(&format!("{name}_body"))
        );
    }
    let leaked: Vec<_> = world
        .origin_requests()
        .into_iter()
        .filter(|r| r.to_string().contains(&secret) || r.to_string().contains(&hex))
        .collect();
    assert!(leaked.is_empty(), "reached the origin: {leaked:?}");
}

/// The secret in the encodings the gate must see through, each sent a
/// different way. Every one is refused and none reaches the origin.
#[test]
fn every_encoding_and_compressed_body_is_refused_before_the_origin() {
    use base64::Engine;
    let Some(world) = world() else { return };
    world.write_manifest(&world.manifest(&["*.allowed.test"]));
    let secret = world.secret();
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let mixed_hex: String = hex
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let pct = |s: &str| -> String { s.bytes().map(|b| format!("%{b:02X}")).collect() };
    let json_u: String = secret
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let base32 = base32_lower(format!("x:{secret}").as_bytes());
    let gzip = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(format!("{{\"t\":\"{secret}\"}}").as_bytes())
            .unwrap();
        enc.finish().unwrap()
    };
    let deflate = {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(format!("token={secret}").as_bytes()).unwrap();
        enc.finish().unwrap()
    };
    let br = {
        let mut out = Vec::new();
        brotli::BrotliCompress(
            &mut format!("k: {secret}").as_bytes(),
            &mut out,
            &Default::default(),
        )
        .unwrap();
        out
    };
    let bomb = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b'a'; 80 << 20]).unwrap();
        enc.finish().unwrap()
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let files = format!(
        "echo {} | base64 -d > /tmp/gz; echo {} | base64 -d > /tmp/df; echo {} | base64 -d > /tmp/br; echo {} | base64 -d > /tmp/bomb\n",
        b64(&gzip),
        b64(&deflate),
        b64(&br),
        b64(&bomb)
    );
    let (label_a, label_b) = hex.split_at(40);
    // Line-wrapped base64 inside a JSON string (`\n` escapes), and JSON
    // escapes of URL-encoding.
    let wrapped: Vec<String> = b64(format!("id:{secret}").as_bytes())
        .as_bytes()
        .chunks(12)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let json_wrapped = serde_json::to_string(&wrapped.join("\n")).unwrap();
    let json_pct: String = secret.bytes().map(|b| format!("\\u0025{b:02x}")).collect();
    let files = format!("{files}printf '%s' '{secret}' | base64 -w 8 > /tmp/wrapped\n");
    let cases = [
        (
            "wrapped_base64",
            "--data-binary @/tmp/wrapped https://allowed.test/wb".to_owned(),
        ),
        (
            "json_wrapped_base64",
            format!("--data '{{\"v\":{json_wrapped}}}' https://allowed.test/jw"),
        ),
        (
            "json_then_url",
            format!("--data '{{\"v\":\"{json_pct}\"}}' https://allowed.test/jp"),
        ),
        (
            "header_name",
            format!("-H 'X-{secret}: 1' https://allowed.test/hn"),
        ),
        ("method", format!("-X '{secret}' https://allowed.test/m")),
        (
            "mixed_hex",
            format!("--data '{mixed_hex}' https://allowed.test/mh"),
        ),
        ("base32", format!("'https://allowed.test/b32?v={base32}'")),
        (
            "double_url",
            format!("'https://allowed.test/du?v={}'", pct(&pct(&secret))),
        ),
        (
            "partly_url",
            format!("'https://allowed.test/pu/{}'", secret.replace('-', "%2d")),
        ),
        (
            "json_u",
            format!("--data '{{\"v\":\"{json_u}\"}}' https://allowed.test/ju"),
        ),
        (
            "plain_json_u",
            format!("--data '{{\"v\":\"{json_u}\"}}' http://allowed.test/pj"),
        ),
        (
            "gzip",
            "-H 'Content-Encoding: gzip' --data-binary @/tmp/gz https://allowed.test/gz".to_owned(),
        ),
        (
            "deflate",
            "-H 'Content-Encoding: deflate' --data-binary @/tmp/df https://allowed.test/df"
                .to_owned(),
        ),
        (
            "br",
            "-H 'Content-Encoding: br' --data-binary @/tmp/br https://allowed.test/br".to_owned(),
        ),
        (
            "host_label",
            format!("https://{label_a}.{label_b}.allowed.test/hl"),
        ),
    ];
    let mut script = files;
    for (name, args) in &cases {
        script.push_str(&curl(name, args));
    }
    script.push_str(&curl(
        "zstd",
        "-H 'Content-Encoding: zstd' --data-binary 'opaque' https://allowed.test/zstd",
    ));
    script.push_str(&curl(
        "bomb",
        "-H 'Content-Encoding: gzip' --data-binary @/tmp/bomb https://allowed.test/bomb",
    ));
    let probe = world.probe_keeping_state("probe", &script);
    for (name, _) in &cases {
        let body = probe.get(&format!("{name}_body"));
        if *name == "host_label" {
            // Refused at CONNECT, before the name is resolved.
            assert!(
                probe.get(&format!("{name}_err")).contains("403"),
                "{name}: {}",
                probe.get(&format!("{name}_err"))
            );
            continue;
        }
        assert_eq!(probe.get(name), "403", "{name}: {body}");
        assert!(body.contains("credential leak"), "{name}: {body}");
    }
    assert_eq!(
        probe.get("zstd"),
        "403",
        "{} {}",
        probe.get("zstd_body"),
        probe.get("zstd_err")
    );
    assert!(probe.get("zstd_body").contains("cannot read it"));
    assert_eq!(probe.get("bomb"), "413", "{}", probe.get("bomb_body"));

    let paths: Vec<String> = world
        .origin_requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    for (name, args) in &cases {
        let path = args
            .split("allowed.test")
            .nth(1)
            .and_then(|p| p.split(['?', '\'', ' ']).next())
            .unwrap_or_default()
            .to_owned();
        assert!(
            !paths.iter().any(|p| p.starts_with(&path)),
            "{name}: {path} reached the origin"
        );
    }
    let logs = docker(&["logs", &world.origin]);
    assert!(
        !logs.contains(&secret) && !logs.contains(&hex),
        "the origin saw the secret"
    );
    // Nor does the audit log hold it, though the refused method and paths
    // carried it: every field is scrubbed before it is written.
    let mut audited = 0;
    for entry in std::fs::read_dir(world.state_root()).unwrap().flatten() {
        let Ok(audit) = std::fs::read_to_string(entry.path().join("audit.jsonl")) else {
            continue;
        };
        audited += audit.matches("credential_leak").count();
        for form in [&secret, &hex, &secret.replace('-', "%2d")] {
            assert!(!audit.contains(form.as_str()), "the audit log holds {form}");
        }
    }
    assert!(audited >= cases.len(), "{audited} leak refusals audited");
}

/// A secret streamed in two chunks a second apart: the first half never
/// leaves the gate, though what precedes it (beyond the window the gate
/// holds back) does.
#[test]
fn no_part_of_a_streamed_secret_reaches_the_origin() {
    let Some(world) = world() else { return };
    let secret = world.secret();
    let (a, b) = secret.split_at(secret.len() / 2);
    let client = format!(
        r#"{TUNNEL_PY}
t = tunnel()
t.sendall(b"POST /stream/split HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n")
def chunk(data):
    t.sendall(b"%x\r\n%s\r\n" % (len(data), data))
chunk(b"harmless start, " + b"." * 4000 + b" then {a}")
time.sleep(1.5)
chunk(b"{b} and the rest")
t.sendall(b"0\r\n\r\n")
reply = b""
try:
    while b"\r\n" not in reply:
        more = t.recv(4096)
        if not more:
            break
        reply += more
except Exception:
    pass
print("status=" + (reply.split(b" ")[1].decode() if reply else "closed"))
"#
    );
    let probe = world.probe(
        "probe",
        &format!("python3 -c '{}'", client.replace('\'', "'\\''")),
    );
    let status = probe.get("status");
    assert!(status == "403" || status == "closed", "{status}");
    let logs = docker(&["logs", &world.origin]);
    let chunks: Vec<&str> = logs.lines().filter(|l| l.starts_with("CHUNK ")).collect();
    assert!(
        chunks.iter().any(|c| c.contains("harmless start")),
        "the start of the body went on as it came: {chunks:?}"
    );
    assert!(
        !logs.contains(a),
        "the first half of the secret reached the origin: {chunks:?}"
    );
}

/// A server that publishes what it was sent hands the credential back on
/// another host, over plain HTTP, encoded; and a WebSocket frame carries
/// it both ways. The agent never reads it, and never sends it.
#[test]
fn published_credentials_are_scrubbed_and_websocket_frames_are_read() {
    let Some(world) = world() else { return };
    let secret = world.secret();
    let ws = r#"
def open_ws():
    t = tunnel()
    key = base64.b64encode(os.urandom(16)).decode()
    t.sendall(("GET /ws HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Extensions: permessage-deflate\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += t.recv(1)
    return t, head
def send(t, msg):
    mask = os.urandom(4)
    t.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
def recv(t):
    hdr = t.recv(2)
    if len(hdr) < 2:
        return None, b""
    n = hdr[1] & 0x7F
    data = b""
    while len(data) < n:
        more = t.recv(n - len(data))
        if not more:
            break
        data += more
    return hdr[0] & 0x0F, data
t, head = open_ws()
print("ws_ext=" + ("yes" if b"permessage-deflate" in head.lower() else "no"))
send(t, b"stored")
op, data = recv(t)
print("ws_stored=" + data.decode("latin-1"))
send(t, ("leak " + sys.argv[1]).encode())
op, data = recv(t)
print("ws_leak_op=%s" % op)
print("ws_leak_reason=" + data[2:].decode("latin-1"))
"#;
    let script = [
        curl("store", "-H 'Authorization: Bearer x' https://route.test/store"),
        curl("plain", "http://allowed.test/stored?enc=plain"),
        curl("json_u", "http://allowed.test/stored?enc=json_u"),
        curl("url", "https://allowed.test/stored?enc=url"),
        "curl -sS -D /tmp/h -o /dev/null http://allowed.test/stored; echo header=$(grep -i x-stored /tmp/h | tr -d '\\r')\n".to_owned(),
        format!(
            "python3 -c '{}' '{secret}'\n",
            format!("{TUNNEL_PY}{ws}").replace('\'', "'\\''")
        ),
    ]
    .concat();
    let probe = world.probe("probe", &script);
    assert_eq!(probe.get("store"), "200");
    let json_u: String = secret
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let url: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    for name in ["plain", "json_u", "url"] {
        let body = probe.get(&format!("{name}_body"));
        assert_eq!(probe.get(name), "200", "{name}: {body}");
        assert!(
            body.contains("xxxxxxxx"),
            "{name}: scrubbed in place: {body}"
        );
        for form in [&secret, &json_u, &url] {
            assert!(
                !body.contains(form.as_str()),
                "{name}: the agent read the secret: {body}"
            );
        }
    }
    assert!(
        !probe.get("header").contains(&url),
        "{}",
        probe.get("header")
    );
    assert_eq!(
        probe.get("ws_ext"),
        "no",
        "no compressed frames are negotiated"
    );
    assert!(
        probe.get("ws_stored").starts_with("stored: Bearer xxxx"),
        "{}",
        probe.get("ws_stored")
    );
    assert_eq!(
        probe.get("ws_leak_op"),
        "8",
        "the gate closed the connection"
    );
    assert!(probe.get("ws_leak_reason").contains("credential leak"));
    let logs = docker(&["logs", &world.origin]);
    let frames: Vec<&str> = logs.lines().filter(|l| l.starts_with("WS ")).collect();
    assert!(frames.iter().any(|f| f.contains("stored")), "{frames:?}");
    assert!(
        !frames.iter().any(|f| f.contains(&secret)),
        "the frame went out: {frames:?}"
    );
}

/// Base32 (RFC 4648) in lowercase, without padding.
fn base32_lower(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut bits = 0u32;
    let mut value = 0u32;
    for &b in data {
        value = (value << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((value >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((value << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[test]
fn an_untrusted_upstream_certificate_is_a_502() {
    let Some(world) = world() else { return };
    let probe = world.probe("probe", &curl("bad", "https://allowed.test:8444/"));
    assert_eq!(probe.get("bad"), "502");
    let body = probe.get("bad_body");
    assert!(
        body.starts_with("bottle gate: upstream error: TLS with allowed.test:8444 failed"),
        "{body}"
    );
    assert!(
        !body.contains("secret body"),
        "the body behind a bad certificate leaked"
    );
}

#[test]
fn bottles_never_share_a_ca() {
    let Some(world) = world() else { return };
    let leaf_script = "echo ID=$BOTTLE_IDENTITY; openssl s_client -proxy 127.0.0.1:3128 -connect allowed.test:443 \
                       -servername allowed.test </dev/null 2>/dev/null | openssl x509";
    let run = || {
        let out = world
            .command()
            .args(["start", "probe", "-y", "--", "bash", "-c", leaf_script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let identity = text
            .lines()
            .find_map(|l| l.strip_prefix("ID="))
            .unwrap()
            .to_owned();
        (
            identity,
            text[text.find("-----BEGIN").expect("a leaf certificate")..].to_owned(),
        )
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca =
        |id: &str| std::fs::read_to_string(world.state_root().join(id).join("ca.pem")).unwrap();
    let (ca_a, ca_b) = (file("a.pem", &ca(&a.0)), file("b.pem", &ca(&b.0)));
    assert_ne!(
        std::fs::read(&ca_a).unwrap(),
        std::fs::read(&ca_b).unwrap(),
        "two bottles, one CA"
    );
    let leaf_a = file("leaf-a.pem", &a.1);
    let verify = |ca: &std::path::Path, leaf: &std::path::Path| {
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(ca)
            .arg(leaf)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        verify(&ca_a, &leaf_a),
        "a leaf verifies against its own bottle's CA"
    );
    assert!(
        !verify(&ca_b, &leaf_a),
        "a leaf of one bottle is trusted by another"
    );
    // The CA key never went to the agent's side.
    let agent_side = std::fs::read_to_string(world.state_root().join(&a.0).join("ca.pem")).unwrap();
    assert!(!agent_side.contains("PRIVATE KEY"));
}
