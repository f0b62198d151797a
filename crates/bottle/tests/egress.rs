//! End to end: a real bottle on real Docker, probing its only way out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

#[test]
fn allowlist_decides_what_leaves() {
    let Some(world) = world() else { return };
    let script = [
        curl("allowed", "http://allowed.test/hello?token=abc"),
        curl("upper", "http://ALLOWED.TEST./"),
        curl("forbidden", "http://forbidden.test/"),
        curl("port", "http://allowed.test:8443/"),
        curl("tunnel", "https://allowed.test/tunnelled"),
        curl("plain_tunnel", "-p http://allowed.test:80/plain"),
        curl("tunnel_bad_port", "https://allowed.test:8443/"),
        curl("tunnel_forbidden", "https://forbidden.test/"),
        curl("explicit_port", "http://other.allowed.test:8080/"),
        curl("transfer_coding", "http://allowed.test:8081/te"),
        curl(
            "origin_form",
            "--noproxy '*' --connect-to ::127.0.0.1:3128 http://allowed.test/",
        ),
    ]
    .concat();
    let probe = world.probe("probe", &script);
    assert!(probe.output.status.success(), "{}", stderr(&probe.output));

    assert_eq!(probe.get("allowed"), "200");
    assert!(probe.get("allowed_body").contains("bbtest-origin"));
    assert!(
        probe
            .get("allowed_body")
            .contains("\"path\": \"/hello?token=abc\"")
    );
    assert_eq!(
        probe.get("upper"),
        "200",
        "case and trailing dot are normalised"
    );

    assert_eq!(probe.get("forbidden"), "403");
    assert_eq!(
        probe.get("forbidden_body"),
        "blocked by bottle policy: host forbidden.test is not in the allowlist"
    );
    assert_eq!(probe.get("port"), "403");
    assert!(
        probe
            .get("port_body")
            .contains("port 8443 of allowed.test is not allowed")
    );

    assert_eq!(
        probe.get("tunnel"),
        "200",
        "CONNECT allowed.test:443 is intercepted and forwarded"
    );
    assert!(probe.get("tunnel_body").contains("\"port\": 443"));
    assert!(probe.get("tunnel_body").contains("\"tls\": true"));
    assert_eq!(
        probe.get("plain_tunnel"),
        "200",
        "plain HTTP inside CONNECT is served too"
    );
    assert!(probe.get("plain_tunnel_body").contains("\"tls\": false"));
    assert_ne!(probe.get("tunnel_bad_port_rc"), "0");
    assert!(
        probe.get("tunnel_bad_port_err").contains("403"),
        "{}",
        probe.get("tunnel_bad_port_err")
    );
    assert!(probe.get("tunnel_forbidden_err").contains("403"));

    // Neither the agent's 8080 rule nor "allowed.test" reaches port 8080 of
    // another name: the origin does not listen there, so 502 means allowed.
    assert_eq!(probe.get("explicit_port"), "502");
    assert!(
        probe
            .get("explicit_port_body")
            .starts_with("bottle gate: upstream error:")
    );

    // A body still under a transfer coding is not passed on as if it
    // were plain.
    assert_eq!(probe.get("transfer_coding"), "502");
    assert!(
        probe
            .get("transfer_coding_body")
            .contains("transfer-coding \"gzip, chunked\""),
        "{}",
        probe.get("transfer_coding_body")
    );

    assert_eq!(
        probe.get("origin_form"),
        "400",
        "a request in origin form is not proxied"
    );
    assert!(
        std::fs::read_dir(world.state_root()).map_or(true, |mut d| d.next().is_none()),
        "--rm removes the state directory"
    );
}

/// With `--rm` the state is gone, so the audit test keeps its bottle.
#[test]
fn audit_log_records_every_decision() {
    let Some(world) = world() else { return };
    let out = world
        .command()
        .args(["start", "probe", "-y", "--", "bash", "-c"])
        .arg(curl("a", "http://allowed.test/p?secret=xyz") + &curl("b", "http://forbidden.test/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let identity = identity_from(&stderr(&out)).expect("identity on stderr");
    let log =
        std::fs::read_to_string(world.state_root().join(&identity).join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let allowed = lines
        .iter()
        .find(|l| l["host"] == "allowed.test")
        .expect("allowed request logged");
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["rule"], "allowed.test");
    assert_eq!(allowed["path"], "/p?secret=");
    assert!(!log.contains("xyz"), "query values never reach the log");
    let denied = lines
        .iter()
        .find(|l| l["host"] == "forbidden.test")
        .expect("denied request logged");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["status"], 403);
    // The gate was stopped, not killed: it wrote out what it had queued.
    assert!(
        lines
            .iter()
            .any(|l| l["role"] == "gate" && l["event"] == "stop" && l["serves"] == "egress"),
        "the egress gate records its stop:\n{log}"
    );
    // Containers and network are gone; the state directory and the
    // workspace volume stay, for resume.
    assert_eq!(running_parts(&identity), Vec::<String>::new());
    assert_eq!(
        world.parts(&identity).len(),
        2,
        "the workspace and home volumes are kept"
    );
    let metadata: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.state_root().join(&identity).join("metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["state"], "stopped");
}

/// A command that ends at once: its gate, started moments before, is
/// still stopped (it writes its `stop` record), not killed after the
/// grace with its audit queue.
#[test]
fn a_gate_stopped_just_after_it_started_records_its_stop() {
    let Some(world) = world() else { return };
    for _ in 0..3 {
        let out = world
            .command()
            .args(["start", "probe", "-y", "--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let identity = identity_from(&stderr(&out)).expect("identity on stderr");
        let log = std::fs::read_to_string(world.state_root().join(&identity).join("audit.jsonl"))
            .unwrap();
        assert!(
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|l| l["role"] == "gate" && l["event"] == "stop"),
            "the egress gate records its stop:\n{log}"
        );
    }
}

#[test]
fn no_route_out_but_the_gate() {
    let Some(world) = world() else { return };
    // A listener on the host side of the Docker bridges that would answer
    // if anything reached it.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let watcher = std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            if let Ok((mut s, _)) = listener.accept() {
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = s.read(&mut [0u8; 16]);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // Every address of the host outside loopback: the bridges' gateways
    // and the machine's own interfaces.
    let host_addresses = host_ipv4_addresses();
    assert!(
        host_addresses.contains(&world.gateway),
        "{host_addresses:?}"
    );
    let (origin, gateway) = (&world.origin_ip, &world.gateway);
    let script = format!(
        "curl -sS -m 5 --noproxy '*' http://allowed.test/ >/dev/null 2>&1; echo noproxy_rc=$?\n\
         curl -sS -m 5 --noproxy '*' http://{origin}/ >/dev/null 2>&1; echo noproxy_ip_rc=$?\n\
         curl -sS -m 5 --noproxy '*' http://{gateway}:{port}/ >/dev/null 2>&1; echo gateway_rc=$?\n\
         echo gateway_proxied=$(curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://{gateway}:{port}/)\n\
         for a in {all}; do curl -sS -m 3 --noproxy '*' http://$a:{port}/ >/dev/null 2>&1 && echo reached=$a; \
           echo proxied_$a=$(curl -sS -m 3 -o /dev/null -w '%{{http_code}}' http://$a:{port}/); done\n\
         (exec 3<>/dev/tcp/{origin}/80) 2>/dev/null; echo devtcp_rc=$?\n\
         curl -sS -m 3 --noproxy '*' http://127.0.0.1:{port}/ >/dev/null 2>&1; echo loopback_rc=$?\n\
         python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)' 2>/dev/null; echo raw_rc=$?\n\
         python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)' 2>/dev/null; echo packet_rc=$?\n\
         echo loopback_proxied=$(curl -sS -m 3 -o /dev/null -w '%{{http_code}}' -x http://127.0.0.1:3128 --noproxy '' http://127.0.0.1:{port}/)\n\
         for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock; do [ -e $s ] && echo socket_seen=$s; done\n\
         curl -sS -m 3 --unix-socket /var/run/docker.sock http://engine/version >/dev/null 2>&1; echo engine_rc=$?\n\
         echo homes=$(ls /home | tr '\\n' ' '); ls /root >/dev/null 2>&1; echo root_rc=$?\n\
         getent hosts allowed.test; echo getent_rc=$?\n\
         echo addrs=$(ip -o addr | awk '{{print $2\"/\"$4}}' | tr '\\n' ' ')\n\
         echo routes=$( (ip route; ip -6 route) 2>/dev/null | grep -v 'dev lo' | grep -c . )\n\
         echo links=$(ip -o link | awk -F': ' '{{print $2}}' | tr '\\n' ' ')\n",
        all = host_addresses.join(" ")
    );
    let probe = world.probe("probe", &script);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();

    for key in [
        "noproxy_rc",
        "noproxy_ip_rc",
        "gateway_rc",
        "devtcp_rc",
        "loopback_rc",
        "raw_rc",
        "packet_rc",
        "engine_rc",
        "root_rc",
    ] {
        assert_ne!(probe.get(key), "0", "{key}: a direct connection succeeded");
    }
    assert_eq!(
        probe.get("gateway_proxied"),
        "403",
        "IP literals are refused by the gate: {}",
        stdout(&probe.output)
    );
    assert!(
        !probe.values.contains_key("reached"),
        "reached the host directly: {}",
        probe.get("reached")
    );
    for address in &host_addresses {
        assert_eq!(
            probe.get(&format!("proxied_{address}")),
            "403",
            "{address} through the gate"
        );
    }
    assert_eq!(
        probe.get("loopback_proxied"),
        "403",
        "the host's loopback through the gate"
    );
    assert!(
        !probe.values.contains_key("socket_seen"),
        "an engine's socket is in the bottle: {}",
        probe.get("socket_seen")
    );
    assert_eq!(probe.get("homes"), "agent", "no home but the agent's");
    assert_eq!(probe.get("getent_rc"), "2", "the bottle has no DNS");
    assert!(
        probe
            .get("addrs")
            .split_whitespace()
            .all(|a| a.starts_with("lo/")),
        "only loopback addresses: {}",
        probe.get("addrs")
    );
    assert_eq!(probe.get("links"), "lo", "only the loopback interface");
    assert_eq!(probe.get("routes"), "0", "no route but through loopback");
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "the host-side listener was reached"
    );
}

/// A descriptor the launcher was started with (a file, a socket) does not
/// reach the bottle: only the standard streams do.
#[test]
fn an_inherited_descriptor_stays_outside() {
    let Some(world) = world() else { return };
    let file = std::fs::File::open(world.manifest_path()).unwrap();
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let probe = world.probe(
        "probe",
        &format!("readlink /proc/self/fd/{fd} >/dev/null 2>&1; echo inherited_rc=$?\necho fds=$(ls /proc/self/fd | tr '\\n' ' ')\n"),
    );
    drop(file);
    assert_ne!(
        probe.get("inherited_rc"),
        "0",
        "fd {fd} reached the bottle: {}",
        probe.get("fds")
    );
}

#[test]
fn ip_literals_and_odd_spellings_are_refused() {
    let Some(world) = world() else { return };
    let ip = &world.origin_ip;
    let octets: Vec<u32> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    let n = octets.iter().fold(0u32, |acc, o| (acc << 8) | o);
    let spellings = [
        ip.clone(),
        n.to_string(),
        format!("{n:#x}"),
        format!("0{n:o}"),
        octets
            .iter()
            .map(|o| format!("{o:#x}"))
            .collect::<Vec<_>>()
            .join("."),
        octets
            .iter()
            .map(|o| format!("0{o:o}"))
            .collect::<Vec<_>>()
            .join("."),
        format!(
            "{}.{}.{}",
            octets[0],
            octets[1],
            (octets[2] << 8) | octets[3]
        ),
        format!("[::ffff:{ip}]"),
        format!("{ip}."),
    ];
    let script: String = spellings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "echo s{i}=$(curl -sS -m 5 -g -o /dev/null -w '%{{http_code}}' 'http://{s}/' 2>&1)\n\
                 echo c{i}=$(curl -sS -m 5 -g -p -o /dev/null -w '%{{http_code}}' 'http://{s}:443/' 2>&1 | grep -o 'response [0-9]*')\n"
            )
        })
        .collect();
    let probe = world.probe("probe", &script);
    for (i, spelled) in spellings.iter().enumerate() {
        assert_eq!(
            probe.get(&format!("s{i}")),
            "403",
            "http://{spelled}/ was not refused"
        );
        assert_eq!(
            probe.get(&format!("c{i}")),
            "response 403",
            "CONNECT {spelled}:443 was not refused"
        );
    }
}

#[test]
fn a_dead_gate_closes_the_only_door() {
    let Some(world) = world() else { return };
    let child = world
        .command()
        .args(["start", "killgate", "-y", "--rm", "--", "bash", "-c"])
        .arg(
            "echo first=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' http://allowed.test/)\n\
             for i in $(seq 1 100); do [ -e /tmp/go ] && break; sleep 0.2; \
               curl -sS -m 2 -o /dev/null http://allowed.test/ 2>/dev/null || break; done\n\
             echo second=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' http://allowed.test/ 2>/dev/null)\n\
             curl -sS -m 5 --noproxy '*' http://allowed.test/ >/dev/null 2>&1; echo direct_rc=$?\n",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the gate of this world's bottle, then kill it.
    let mut gate = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            gate = world.running("killgate", "gate");
            gate.is_some()
        }),
        "the gate never ran"
    );
    std::thread::sleep(Duration::from_millis(1500));
    world.kill(&gate.unwrap().1);
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("first=200"), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("second=000"),
        "a request after the gate died got an answer: {text}"
    );
    assert!(
        text.contains("direct_rc=") && !text.contains("direct_rc=0"),
        "{text}"
    );
}

#[test]
fn sigint_tears_everything_down() {
    let Some(world) = world() else { return };
    let child = world
        .command()
        .args(["start", "sigint", "-y", "--rm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut agent = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            // This world's bottle: the one whose state is under its root.
            agent = world.running("sigint", "agent");
            agent.is_some()
        }),
        "the agent never ran"
    );
    let identity = agent.unwrap().0;
    assert!(world.state_root().join(&identity).is_dir());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(world.parts(&identity), Vec::<String>::new());
    assert!(
        !world.state_root().join(&identity).exists(),
        "--rm leaves no state directory"
    );
}

/// The host's IPv4 addresses outside loopback.
fn host_ipv4_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .filter(|a| !a.starts_with("127."))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_bottle_of_its_own_network_leaves_nothing_behind() {
    let Some(world) = world() else { return };
    if docker_only("a gate network made for the bottle") {
        return;
    }
    // No gate_network: the gate gets a network made for this bottle.
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]
        .as_object_mut()
        .unwrap()
        .remove("gate_network");
    world.write_manifest(&manifest);
    let out = world
        .command()
        .args(["start", "probe", "-y", "--", "bash", "-c", "echo $BOTTLE_IDENTITY; echo code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' http://allowed.test/)"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let identity = identity_from(&stderr(&out)).unwrap();
    assert!(stdout(&out).contains(&identity), "BOTTLE_IDENTITY is set");
    // allowed.test only exists on the test's network: from a network of its
    // own the gate cannot resolve it and answers 502, with no fallback.
    assert!(stdout(&out).contains("code=502"), "{}", stdout(&out));
    assert!(
        wait_until(Duration::from_secs(15), || running_parts(&identity)
            .is_empty()),
        "left behind: {:?}",
        world.parts(&identity)
    );
    assert!(
        world
            .state_root()
            .join(&identity)
            .join("audit.jsonl")
            .is_file(),
        "without --rm the state stays"
    );
}

#[test]
fn the_shim_passes_signals_on_and_reaps_orphans() {
    let Some(world) = world() else { return };
    // A signal to pid 1 (the shim) reaches the command, whose status is
    // the bottle's.
    let out = world.bottle(
        "probe",
        &[
            "bash",
            "-c",
            "trap 'echo trapped; exit 7' TERM; kill -TERM 1; sleep 10 & wait",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stdout(&out).contains("trapped"));
    // Orphans are re-parented to the shim and reaped: no zombies remain.
    let probe = world.probe(
        "probe",
        "for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 1; echo zombies=$(ps -eo stat= | grep -c '^Z')\necho pid1=$(ps -o comm= -p 1)",
    );
    assert_eq!(probe.get("zombies"), "0");
    assert_eq!(probe.get("pid1"), "bottle");
}
