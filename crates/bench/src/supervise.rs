//! `bottle-bench supervise`: how long a person's approval takes to reach
//! the running bottle, and how long a capability block takes.
//!
//! - Approve → first allowed request: a poller inside the bottle sends a
//!   request to a host the gate refuses, again and again; the clock starts
//!   just before `bottle approve` is spawned and stops at the poller's
//!   first allowed answer (one kernel clock for both). The floor is the
//!   bare start-up of the same binary (`bottle --version`).
//! - Capability block: from `bottle approve` of a one-package image
//!   change until the agent answers again on the new image. The package
//!   comes from a local apt repository (the test origin), so the download
//!   is out of the figure. The baseline is what a person would do by hand
//!   in the same run: `docker build` of the same Dockerfile plus
//!   `docker run --network none` of the result.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::proxy::{docker, origin_world, wait_for};
use crate::{Stats, emit, ms, stats, verdict};

const CLIENT: &str = include_str!("../../bottle/tests/fixtures/mcp_client.py");
/// Names the origin answers to: one fresh host per approval measured.
const HOSTS: usize = 15;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Runs the MCP client in `container`; returns its output.
fn mcp(container: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut child = Command::new("docker")
        .args(["exec", "-i", "-u", "10001:10001", container, "python3", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, CLIENT.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("mcp client: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Files a request; returns its id.
fn ask(container: &str, tool: &str, args: serde_json::Value) -> anyhow::Result<String> {
    let out = mcp(container, &["call", tool, &args.to_string()])?;
    let at = out.find("r-").context("no request id")?;
    Ok(out[at..at + 8].to_owned())
}

/// A poller in the bottle: plain-HTTP requests for `host` through the
/// proxy until one is allowed; prints the time (ns) of that answer.
const POLLER: &str = r#"
import socket, sys, time
host = sys.argv[1]
req = ("GET http://%s/small HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (host, host)).encode()
print("ready", flush=True)
while True:
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(req)
    head = s.recv(64)
    s.close()
    if head.startswith(b"HTTP/1.1 200"):
        print(time.time_ns(), flush=True)
        break
    time.sleep(0.0005)
"#;

/// Installs the test package from the origin's apt repository; `salt`
/// makes each build's layers new.
fn package_fragment(salt: &str) -> String {
    format!(
        "ENV BBBENCH_RUN={salt}\nRUN echo 'deb [trusted=yes] http://allowed.test/apt ./' > /etc/apt/sources.list.d/bbtest.list \\\n \
         && apt-get update -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/bbtest.list -o Dir::Etc::sourceparts=- \\\n \
         && apt-get install -y --no-install-recommends bbtest-tool"
    )
}

/// One table row: `what`'s median, p90 and minimum, and its median's
/// ratio to `base`'s.
fn row(what: &str, of: &Stats, base: &Stats, target: &str) -> String {
    format!(
        "| {what} | {} | {} | {} | {:.2} | {target} |\n",
        ms(of.median),
        ms(of.p90),
        ms(of.min),
        of.median.as_secs_f64() / base.median.as_secs_f64()
    )
}

pub fn run(bottle: &Path, repo: &Path, approvals: usize, blocks: usize) -> anyhow::Result<()> {
    let approvals = approvals.min(HOSTS);
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    let hosts: Vec<String> = (0..HOSTS).map(|i| format!("h{i}.bench.test")).collect();
    let (mut setup, _) = origin_world(dir.path(), repo, "sup", &hosts)?;
    let network = setup.network.clone();

    let manifest = dir.path().join("bottle.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "agents": { "bench": { "bottle": "b", "command": ["sleep", "3600"] } },
            "bottles": { "b": {
                "allow": [], "supervise": true, "gate_network": network, "runtime": "runc",
                "egress_proxy": { "upstream_ca": certs.join("ca.pem") }
            } }
        })
        .to_string(),
    )?;
    let bottle_cmd = |args: &[&str]| crate::bottle_command(bottle, dir.path(), &manifest, args);
    eprintln!("starting a supervised bottle…");
    setup.bottle = Some(
        bottle_cmd(&["start", "bench", "-y", "--rm"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let state = dir.path().join("state/bot-bottle");
    let mut identity = String::new();
    wait_for("the bottle", || {
        let Some(id) = std::fs::read_dir(&state)
            .ok()
            .and_then(|d| d.flatten().next())
            .map(|e| e.file_name().to_string_lossy().into_owned())
        else {
            return false;
        };
        identity = id;
        Command::new("docker")
            .args([
                "exec",
                &format!("{identity}-agent"),
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/7777",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })?;
    let agent = format!("{identity}-agent");

    // Approve → first allowed request.
    let mut floor = Vec::new();
    let mut approve_only = Vec::new();
    let mut to_allowed = Vec::new();
    for i in 0..approvals {
        let host = format!("h{i}.bench.test");
        let id = ask(
            &agent,
            "request_egress",
            serde_json::json!({"host": host, "port": 80, "reason": "bench"}),
        )?;
        let mut poller = Command::new("docker")
            .args([
                "exec",
                "-i",
                "-u",
                "10001:10001",
                &agent,
                "python3",
                "-c",
                POLLER,
                &host,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
            poller.stdout.take().context("poller stdout")?,
        ));
        if lines.next().transpose()?.as_deref() != Some("ready") {
            bail!("the poller did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
        let started = now_ns();
        let clock = Instant::now();
        let out = bottle_cmd(&["approve", &id]).output()?;
        approve_only.push(clock.elapsed());
        if !out.status.success() {
            bail!("approve: {}", String::from_utf8_lossy(&out.stderr));
        }
        let allowed: u128 = lines
            .next()
            .transpose()?
            .context("the poller never got through")?
            .parse()?;
        poller.wait()?;
        to_allowed.push(Duration::from_nanos(allowed.saturating_sub(started) as u64));
        floor.push(crate::time(&mut bottle_cmd(&["--version"]))?);
    }

    // Capability blocks.
    let mut ours = Vec::new();
    let mut built = Vec::new();
    let mut baseline = Vec::new();
    for i in 0..blocks {
        let salt = format!("{}-{i}", std::process::id());
        let fragment = package_fragment(&salt);
        let id = ask(
            &agent,
            "request_image_change",
            serde_json::json!({"dockerfile_fragment": fragment, "reason": "bench"}),
        )?;
        let before = docker(&["inspect", "-f", "{{.Id}}", &agent])?;
        let clock = Instant::now();
        let out = bottle_cmd(&["approve", &id]).output()?;
        if !out.status.success() {
            bail!("approve: {}", String::from_utf8_lossy(&out.stderr));
        }
        built.push(clock.elapsed());
        wait_for("the bottle on its new image", || {
            Command::new("docker")
                .args(["exec", &agent, "bbtest-tool"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && docker(&["inspect", "-f", "{{.Id}}", &agent]).is_ok_and(|id| id != before)
        })?;
        ours.push(clock.elapsed());

        // By hand: the same Dockerfile, built and run.
        let context = dir.path().join(format!("by-hand-{i}"));
        std::fs::create_dir_all(&context)?;
        std::fs::write(
            context.join("Dockerfile"),
            format!(
                "FROM bot-bottle/agent:latest\nUSER root\n{}\n",
                package_fragment(&format!("{salt}-by-hand"))
            ),
        )?;
        let tag = format!("bot-bottle-bench/by-hand:{i}");
        let clock = Instant::now();
        crate::time(Command::new("docker").args([
            "build",
            "-q",
            "--network",
            &network,
            "-t",
            &tag,
            &context.to_string_lossy(),
        ]))?;
        crate::time(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            &tag,
            "bbtest-tool",
        ]))?;
        baseline.push(clock.elapsed());
        let _ = docker(&["rmi", "-f", &tag]);
    }
    drop(setup);
    let _ = docker(&["rmi", "-f", &format!("bot-bottle/bottle-{identity}:latest")]);

    let (floor, approve_only, to_allowed) = (stats(floor), stats(approve_only), stats(to_allowed));
    let mut table = String::from(
        "| measure | median | p90 | min | ratio | target |\n|---|---|---|---|---|---|\n",
    );
    table += &row("`bottle --version` (process floor)", &floor, &floor, "");
    table += &row(
        "`bottle approve` (whole command)",
        &approve_only,
        &floor,
        "",
    );
    let met = verdict(to_allowed.median <= Duration::from_millis(100));
    table += &row(
        "approve → first allowed request in the bottle",
        &to_allowed,
        &floor,
        &format!("≤ 100 ms {met}"),
    );
    if blocks > 0 {
        let (ours, built, baseline) = (stats(ours), stats(built), stats(baseline));
        table += &row(
            "by hand: `docker build` + `docker run` of the same change (baseline)",
            &baseline,
            &baseline,
            "",
        );
        table += &row(
            "capability block: `bottle approve` returns (built, agent stopped)",
            &built,
            &baseline,
            "",
        );
        table += &row(
            "capability block: approve → agent back on the new image",
            &ours,
            &baseline,
            "(reported)",
        );
    }
    table += &format!(
        "\n{approvals} approvals (a fresh host each), {blocks} image changes (one local package each; \
         the download is local, so out of the figure).\n"
    );
    emit(&table);
    Ok(())
}
