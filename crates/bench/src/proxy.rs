//! `bottle-bench proxy`: the gate against a direct connection and against
//! mitmproxy, all intercepting TLS to the same local nginx origin, all
//! driven by the same client in one run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::{Stats, emit, ms, stats, verdict};

pub(crate) const ORIGIN_IMAGE: &str = "bot-bottle-test/origin:latest";
const MITM_IMAGE: &str = "bot-bottle-bench/mitmproxy:latest";
pub(crate) const HOST: &str = "allowed.test";
const BIG_MIB: usize = 100;

/// How the client reaches the origin.
#[derive(Clone)]
enum Path_ {
    Direct { origin: String },
    Gate { socket: PathBuf },
    Mitm { proxy: String },
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    path: Path_,
    tls: Arc<rustls::ClientConfig>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Target {
    /// A keep-alive HTTP/1.1 connection to the origin over TLS.
    async fn connect(&self) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
        let stream: Box<dyn Io> = match &self.path {
            Path_::Direct { origin } => {
                Box::new(TcpStream::connect(format!("{origin}:443")).await?)
            }
            Path_::Gate { socket } => connect_through(UnixStream::connect(socket).await?).await?,
            Path_::Mitm { proxy } => connect_through(TcpStream::connect(proxy).await?).await?,
        };
        let name = ServerName::try_from(HOST)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, stream)
            .await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

/// `CONNECT allowed.test:443` on a proxy stream.
async fn connect_through<S: Io + 'static>(mut stream: S) -> anyhow::Result<Box<dyn Io>> {
    stream
        .write_all(format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            bail!("the proxy closed the connection");
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        bail!("CONNECT refused: {}", String::from_utf8_lossy(&head));
    }
    Ok(Box::new(stream))
}

async fn get(sender: &mut http1::SendRequest<Empty<Bytes>>, path: &str) -> anyhow::Result<usize> {
    let req = http::Request::get(path)
        .header(http::header::HOST, HOST)
        .body(Empty::new())?;
    let mut response = sender.send_request(req).await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
    }
    let mut n = 0;
    while let Some(frame) = response.body_mut().frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len();
        }
    }
    Ok(n)
}

struct Load {
    rps: f64,
    latency: Stats,
}

/// The median of each figure over the rounds: req/s with 1 and with 8
/// clients, the 1-client latency (median and p90) and the download.
fn median_round(mut rounds: Vec<(Load, Load, f64)>) -> (Load, Load, f64) {
    fn mid<T: Copy>(mut values: Vec<T>, key: impl Fn(&T) -> f64) -> T {
        values.sort_by(|a, b| key(a).total_cmp(&key(b)));
        values[values.len() / 2]
    }
    let one_rps = mid(rounds.iter().map(|r| r.0.rps).collect(), |v| *v);
    let eight_rps = mid(rounds.iter().map(|r| r.1.rps).collect(), |v| *v);
    let median = mid(rounds.iter().map(|r| r.0.latency.median).collect(), |d| {
        d.as_secs_f64()
    });
    let p90 = mid(rounds.iter().map(|r| r.0.latency.p90).collect(), |d| {
        d.as_secs_f64()
    });
    let mib = mid(rounds.iter().map(|r| r.2).collect(), |v| *v);
    let (mut one, mut eight, _) = rounds.swap_remove(0);
    one.rps = one_rps;
    one.latency.median = median;
    one.latency.p90 = p90;
    eight.rps = eight_rps;
    (one, eight, mib)
}

/// `clients` connections each sending small requests for `duration`.
async fn load(target: &Target, clients: usize, duration: Duration) -> anyhow::Result<Load> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = target.connect().await?;
            let mut latencies = Vec::new();
            let end = Instant::now() + duration;
            while Instant::now() < end {
                // nginx closes a keep-alive connection after 100 000
                // requests, which a fast path reaches within a load: open
                // another, as a client would.
                if sender.ready().await.is_err() {
                    sender = target.connect().await?;
                }
                let started = Instant::now();
                get(&mut sender, "/small").await?;
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(Load {
        rps: all.len() as f64 / duration.as_secs_f64(),
        latency: stats(all),
    })
}

/// MiB/s of one 100 MiB download (best of two).
async fn download(target: &Target) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    for _ in 0..2 {
        let mut sender = target.connect().await?;
        let started = Instant::now();
        let n = get(&mut sender, "/big").await?;
        if n != BIG_MIB << 20 {
            bail!("{}: downloaded {n} bytes", target.name);
        }
        best = best.max(BIG_MIB as f64 / started.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn tls(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub(crate) fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Everything the run made, removed on drop.
pub(crate) struct Setup {
    pub(crate) network: String,
    pub(crate) containers: Vec<String>,
    pub(crate) bottle: Option<Child>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut child) = self.bottle.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

pub(crate) fn make_certs(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec![HOST.to_owned()])?.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("origin.pem"), cert.pem())?;
    std::fs::write(dir.join("origin.key"), key.serialize_pem())?;
    std::fs::write(dir.join("untrusted.pem"), cert.pem())?;
    std::fs::write(dir.join("untrusted.key"), key.serialize_pem())?;
    std::fs::write(dir.join("big.bin"), vec![b'x'; BIG_MIB << 20])?;
    for entry in std::fs::read_dir(dir)? {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(entry?.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// `container`'s address on `network`.
pub(crate) fn address(container: &str, network: &str) -> anyhow::Result<String> {
    docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    ])
}

pub(crate) fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} never came up")
}

/// Peak and current resident memory of a container's main process, KiB.
fn memory(container: &str) -> anyhow::Result<(u64, u64)> {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container])?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmHWM:"), field("VmRSS:")))
}

/// A network of the run's own with the test origin on it, answering as
/// [`HOST`] and each of `aliases`, with certificates made in `dir/certs`.
/// Everything is removed when the returned [`Setup`] drops.
pub(crate) fn origin_world(
    dir: &Path,
    repo: &Path,
    name: &str,
    aliases: &[String],
) -> anyhow::Result<(Setup, String)> {
    let certs = dir.join("certs");
    make_certs(&certs)?;
    let network = format!("bbbench-{name}-{}", std::process::id());
    docker(&["network", "create", &network])?;
    let mut setup = Setup {
        network: network.clone(),
        containers: Vec::new(),
        bottle: None,
        _dir: tempfile::tempdir()?,
    };
    eprintln!("building the origin image…");
    let fixtures = repo.join("crates/bottle/tests/fixtures/origin");
    docker(&[
        "build",
        "-q",
        "-t",
        ORIGIN_IMAGE,
        &fixtures.to_string_lossy(),
    ])?;
    let origin = format!("bbbench-{name}-origin-{}", std::process::id());
    let mut args = vec![
        "run".to_owned(),
        "-d".into(),
        "--name".into(),
        origin.clone(),
        "--network".into(),
        network,
        "--network-alias".into(),
        HOST.into(),
        "-v".into(),
        format!("{}:/certs:ro", certs.display()),
    ];
    for alias in aliases {
        args.extend(["--network-alias".into(), alias.clone()]);
    }
    args.push(ORIGIN_IMAGE.into());
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    setup.containers.push(origin.clone());
    Ok((setup, origin))
}

/// A bottle started for the benchmark: its gate's socket, state directory
/// and container.
struct Started {
    _child: ChildGuard,
    socket: PathBuf,
    dir: PathBuf,
    gate: String,
}

/// Stops a launcher when dropped (its bottle goes with it).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// The secret of the benchmark's credential route (to a host the load
/// never asks for).
const ROUTE_SECRET: &str = "bench-route-secret-9f3c1b7e2a";

/// Starts a bottle with `bin` whose gate allows the origin; with `route`,
/// it also holds a credential route to another host.
fn start_bottle(
    bin: &Path,
    dir: &Path,
    name: &str,
    network: &str,
    certs: &Path,
    route: bool,
) -> anyhow::Result<Started> {
    let home = dir.join(format!("home-{name}"));
    std::fs::create_dir_all(&home)?;
    let state = dir.join(format!("state-{name}"));
    let manifest = dir.join(format!("bottle-{name}.json"));
    let mut bottle = serde_json::json!({ "allow": [HOST, "route.bench"], "gate_network": network,
                                         "egress_proxy": { "upstream_ca": certs.join("ca.pem") } });
    if route {
        bottle["egress_proxy"]["routes"] =
            serde_json::json!([{ "host": "route.bench", "token_ref": "BENCH_ROUTE_TOKEN" }]);
    }
    std::fs::write(
        &manifest,
        serde_json::json!({
            "agents": { "bench": { "bottle": "bench", "command": ["sleep", "3600"] } },
            "bottles": { "bench": bottle }
        })
        .to_string(),
    )?;
    eprintln!("starting a bottle with {}…", bin.display());
    let child = ChildGuard(
        Command::new(bin)
            .args(["start", "bench", "-y", "--rm", "--manifest"])
            .arg(&manifest)
            .env("HOME", &home)
            .env("XDG_STATE_HOME", &state)
            .env("BOTTLE_INSTALL_CLAUDE", "0")
            .env("BENCH_ROUTE_TOKEN", ROUTE_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let bottles = state.join("bot-bottle");
    let mut socket = PathBuf::new();
    wait_for("the bottle's gate", || {
        let found = std::fs::read_dir(&bottles)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .map(|e| e.path());
        match found {
            Some(dir) if dir.join("run/egress.sock").exists() => {
                socket = dir.join("run/egress.sock");
                true
            }
            _ => false,
        }
    })?;
    let bottle_dir = socket
        .parent()
        .and_then(Path::parent)
        .context("bottle dir")?
        .to_owned();
    let identity = bottle_dir
        .file_name()
        .context("identity")?
        .to_string_lossy()
        .into_owned();
    Ok(Started {
        _child: child,
        socket,
        dir: bottle_dir,
        gate: format!("{identity}-gate"),
    })
}

/// How long each load runs, and how many times each is measured.
pub struct Schedule {
    pub seconds: u64,
    pub rounds: usize,
}

pub fn run(
    bottle: &Path,
    repo: &Path,
    schedule: Schedule,
    route: bool,
    baseline: Option<&Path>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    let (mut setup, origin) = origin_world(dir.path(), repo, "proxy", &[])?;
    let network = setup.network.clone();

    eprintln!("building the mitmproxy image…");
    let mitm_dir = dir.path().join("mitm-image");
    std::fs::create_dir_all(&mitm_dir)?;
    std::fs::write(
        mitm_dir.join("Dockerfile"),
        "FROM bot-bottle/base:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends mitmproxy \
         && rm -rf /var/lib/apt/lists/*\n",
    )?;
    docker(&["build", "-q", "-t", MITM_IMAGE, &mitm_dir.to_string_lossy()])?;

    let origin_ip = address(&origin, &network)?;

    let conf = dir.path().join("mitm-conf");
    std::fs::create_dir_all(&conf)?;
    let mitm = format!("bbbench-mitm-{}", std::process::id());
    docker(&[
        "run",
        "-d",
        "--name",
        &mitm,
        "--network",
        &network,
        "-v",
        &format!("{}:/conf", conf.display()),
        "-v",
        &format!("{}:/certs:ro", certs.display()),
        MITM_IMAGE,
        "mitmdump",
        "-q",
        "--listen-host",
        "0.0.0.0",
        "--listen-port",
        "8080",
        "--set",
        "confdir=/conf",
        "--set",
        "stream_large_bodies=1",
        "--set",
        "ssl_verify_upstream_trusted_ca=/certs/ca.pem",
        "--set",
        "connection_strategy=lazy",
    ])?;
    setup.containers.push(mitm.clone());
    let mitm_ip = address(&mitm, &network)?;
    wait_for("mitmproxy", || conf.join("mitmproxy-ca-cert.pem").exists())?;

    // The bottle(s) whose gate the client reaches through its socket: this
    // build's, and the baseline build's when one is given, measured in the
    // same run against the same origin.
    let now = start_bottle(bottle, dir.path(), "now", &network, &certs, route)?;
    let before = match baseline {
        Some(bin) => Some(start_bottle(
            bin,
            dir.path(),
            "before",
            &network,
            &certs,
            route,
        )?),
        None => None,
    };
    let gate = now.gate.clone();
    let mut gates = vec![("bot-bottle gate", now)];
    if let Some(before) = before {
        gates.push(("bot-bottle gate (baseline build)", before));
    }

    let mut targets = vec![Target {
        name: "direct",
        path: Path_::Direct { origin: origin_ip },
        tls: tls(&certs.join("ca.pem"))?,
    }];
    for (name, started) in &gates {
        targets.push(Target {
            name,
            path: Path_::Gate {
                socket: started.socket.clone(),
            },
            tls: tls(&started.dir.join("ca.pem"))?,
        });
    }
    targets.push(Target {
        name: "mitmproxy (streaming)",
        path: Path_::Mitm {
            proxy: format!("{mitm_ip}:8080"),
        },
        tls: tls(&conf.join("mitmproxy-ca-cert.pem"))?,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let Schedule { seconds, rounds } = schedule;
    let duration = Duration::from_secs(seconds);
    runtime.block_on(async {
        // Warm up every path (leaf minting, pools, mitmproxy's imports).
        for t in &targets {
            load(t, 1, Duration::from_millis(500))
                .await
                .with_context(|| t.name)?;
        }
        anyhow::Ok(())
    })?;

    // Every gate gets the same history: 100 connections at once, before
    // any measurement.
    eprintln!("gates with 100 concurrent connections…");
    for t in &targets[1..=gates.len()] {
        runtime.block_on(load(t, 100, Duration::from_secs(3)))?;
    }
    let (peak_100, _) = memory(&gate)?;

    // Rounds, with the gates in turn measured first (the path measured
    // first after direct ran slower in an A/A run of one build against
    // itself); each figure is the median over the rounds.
    let mut samples: Vec<Vec<(Load, Load, f64)>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order[1..=gates.len()].reverse();
        }
        for i in order {
            let t = &targets[i];
            eprintln!("round {}/{rounds}: measuring {}…", round + 1, t.name);
            let measured = runtime.block_on(async {
                let one = load(t, 1, duration).await?;
                let eight = load(t, 8, duration).await?;
                let mib = download(t).await?;
                anyhow::Ok((one, eight, mib))
            })?;
            samples[i].push(measured);
        }
    }
    let rows: Vec<_> = targets
        .iter()
        .zip(samples)
        .map(|(t, s)| {
            let (one, eight, mib) = median_round(s);
            (t.name, one, eight, mib)
        })
        .collect();
    let (peak_end, rss_end) = memory(&gate)?;
    drop(gates);

    let direct = &rows[0];
    let gate_row = &rows[1];
    let mitm_row = &rows[rows.len() - 1];
    let mut table = String::from(
        "| path | req/s, 1 client | req/s, 8 clients | median latency | 100 MiB download |\n|---|---|---|---|---|\n",
    );
    for (name, one, eight, mib) in &rows {
        table += &format!(
            "| {name} | {:.0} | {:.0} | {:.3} ms | {mib:.0} MiB/s |\n",
            one.rps,
            eight.rps,
            one.latency.median.as_secs_f64() * 1000.0
        );
    }
    let added = gate_row.1.latency.median.as_secs_f64() - direct.1.latency.median.as_secs_f64();
    let vs_mitm = gate_row.2.rps / mitm_row.2.rps;
    let vs_direct = gate_row.2.rps / direct.2.rps;
    let dl = gate_row.3 / direct.3;
    table += &format!(
        "\n| measure | value | target |\n|---|---|---|\n\
         | gate req/s (8 clients) / mitmproxy | {vs_mitm:.1}× | ≥ 5× {} |\n\
         | gate req/s (8 clients) / direct | {:.0}% | ≥ 50% {} |\n\
         | gate download / direct | {:.0}% | ≥ 50% {} |\n\
         | added median latency (1 client) | {:.3} ms | ≤ 1 ms {} |\n\
         | gate peak RSS, 100 concurrent connections | {:.1} MiB | ≤ 64 MiB {} |\n\
         | gate peak RSS, whole run / RSS at end | {:.1} / {:.1} MiB | |\n",
        verdict(vs_mitm >= 5.0),
        vs_direct * 100.0,
        verdict(vs_direct >= 0.5),
        dl * 100.0,
        verdict(dl >= 0.5),
        added * 1000.0,
        verdict(added <= 0.001),
        peak_100 as f64 / 1024.0,
        verdict(peak_100 <= 64 * 1024),
        peak_end as f64 / 1024.0,
        rss_end as f64 / 1024.0,
    );
    if rows.len() == 4 {
        let base = &rows[2];
        let added_base =
            base.1.latency.median.as_secs_f64() - direct.1.latency.median.as_secs_f64();
        table += &format!(
            "\n| this build against the baseline build | value | target |\n|---|---|---|\n\
             | req/s, 1 client | {:.0}% | ≥ 90% {} |\n\
             | req/s, 8 clients | {:.0}% | ≥ 90% {} |\n\
             | added median latency | {:.3} ms vs {:.3} ms | ≤ 110% {} |\n",
            gate_row.1.rps / base.1.rps * 100.0,
            verdict(gate_row.1.rps >= 0.9 * base.1.rps),
            gate_row.2.rps / base.2.rps * 100.0,
            verdict(gate_row.2.rps >= 0.9 * base.2.rps),
            added * 1000.0,
            added_base * 1000.0,
            verdict(added <= 1.1 * added_base.max(1e-6)),
        );
    }
    table += &format!(
        "\nMedians of {rounds} rounds (the gates swap places each round), {seconds} s per load, HTTP/1.1 keep-alive to nginx over TLS; the gate and mitmproxy intercept TLS and \
         verify the origin; latency p90 direct {} / gate {} / mitmproxy {}{}.\n",
        ms(direct.1.latency.p90),
        ms(gate_row.1.latency.p90),
        ms(mitm_row.1.latency.p90),
        if route {
            "; the bottle holds a credential route (to another host), so every request and response is read for it"
        } else {
            ""
        }
    );
    emit(&table);
    drop(setup);
    Ok(())
}
