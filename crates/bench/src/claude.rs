//! `bottle-bench claude`: from `bottle start` of a Claude Code bottle to
//! the first request reaching the model API, against the same `claude -p`
//! run directly on the host against the same API.
//!
//! The API is the tests' stand-in (`model_api.py`, behind the origin's
//! TLS) on a network of the run's own. The direct run sees the origin's
//! name through a hosts file bound over `/etc/hosts` in a mount namespace
//! of its own (the host's is untouched) and trusts the run's CA; the
//! bottle reaches it through its gate, which holds the token. Both run the
//! same cached binary with the same prompt; the stand-in stamps each
//! request on arrival with the kernel's clock, which the launcher reads
//! too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::proxy::{HOST, address, docker, origin_world, wait_for};
use crate::{emit, ms, stats};

const TOKEN: &str = "sk-ant-oat01-bench-token-of-the-stand-in-which-accepts-any-0000000000000000000000000000000000AA";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// When the stand-in got its first request since `since` (ns), and how
/// many it got.
fn first_request(origin: &str, since: u128) -> anyhow::Result<(Option<u128>, usize)> {
    let log = docker(&["exec", origin, "cat", "/tmp/model-api.jsonl"]).unwrap_or_default();
    let stamps: Vec<u128> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["t"].as_u64().map(u128::from))
        .filter(|t| *t >= since)
        .collect();
    Ok((stamps.iter().min().copied(), stamps.len()))
}

/// One run of `command`: (time to the first request, time to its end).
fn measure(origin: &str, command: &mut Command) -> anyhow::Result<(Duration, Duration)> {
    let since = now_ns();
    let started = Instant::now();
    let out = command.stdin(Stdio::null()).output()?;
    let whole = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("bbtest-answer") {
        bail!(
            "the run failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (first, _) = first_request(origin, since)?;
    let first = first.context("the stand-in saw no request")?;
    let first = Duration::from_nanos(u64::try_from(first.saturating_sub(since)).unwrap_or(0));
    Ok((first, whole))
}

pub fn run(bottle: &Path, repo: &Path, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    let (setup, origin) = origin_world(dir.path(), repo, "claude", &[])?;
    wait_for("the origin", || {
        Command::new("docker")
            .args([
                "exec",
                &origin,
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/443 && exec 4<>/dev/tcp/127.0.0.1/8090",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })?;
    let ip = address(&origin, &setup.network)?;
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{ip} {HOST}\n"))?;

    // The pinned binary, from the cache `start` uses.
    let fetched = Command::new(bottle)
        .args(["update-agent", "--fetch"])
        .output()?;
    let said = String::from_utf8_lossy(&fetched.stdout);
    let claude = PathBuf::from(
        said.trim()
            .rsplit_once(": ")
            .context("update-agent --fetch named no binary")?
            .1,
    );
    if !fetched.status.success() || !claude.exists() {
        bail!(
            "bottle update-agent --fetch: {said}{}",
            String::from_utf8_lossy(&fetched.stderr)
        );
    }

    let direct = |i: usize| -> anyhow::Result<Command> {
        let home = dir.path().join(format!("direct-home-{i}"));
        std::fs::create_dir_all(&home)?;
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(&hosts)
            .arg(&claude)
            .args(["-p", "say hello"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("CLAUDE_CODE_OAUTH_TOKEN", TOKEN)
            .env("ANTHROPIC_BASE_URL", format!("https://{HOST}"))
            .env("NODE_EXTRA_CA_CERTS", certs.join("ca.pem"));
        for var in bottle_manifest::plan::QUIET_CLAUDE_CODE {
            c.env(var, "1");
        }
        Ok(c)
    };
    let manifest = dir.path().join("bottle.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "agents": { "claude": { "bottle": "bench", "command": ["claude", "-p", "say hello"] } },
            "bottles": { "bench": {
                "allow": [HOST], "gate_network": setup.network,
                "resources": { "memory": "2g" },
                "egress_proxy": {
                    "upstream_ca": certs.join("ca.pem"),
                    "routes": [{ "host": HOST, "token_ref": "BENCH_MODEL_TOKEN", "Role": "claude_code_oauth" }]
                }
            } }
        })
        .to_string(),
    )?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("HOME is not set")?;
    let bottled = || {
        let mut c = Command::new(bottle);
        c.args(["start", "claude", "-y", "--rm", "--manifest"])
            .arg(&manifest)
            .env("HOME", &home)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CACHE_HOME", &cache)
            .env("BENCH_MODEL_TOKEN", TOKEN);
        c
    };

    eprintln!("warming up (builds the images if needed)…");
    measure(&origin, &mut direct(0)?)?;
    measure(&origin, &mut bottled())?;
    let (mut d_first, mut d_whole, mut b_first, mut b_whole) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        eprintln!("run {}/{runs}", i + 1);
        let (first, whole) = measure(&origin, &mut direct(i + 1)?)?;
        d_first.push(first);
        d_whole.push(whole);
        let (first, whole) = measure(&origin, &mut bottled())?;
        b_first.push(first);
        b_whole.push(whole);
        std::thread::sleep(Duration::from_millis(400));
    }
    let (df, dw, bf, bw) = (
        stats(d_first),
        stats(d_whole),
        stats(b_first),
        stats(b_whole),
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let mut table = String::from(
        "| run | first request: median | p90 | whole run: median | p90 | first request, ratio to direct |\n|---|---|---|---|---|---|\n",
    );
    table += &format!(
        "| `claude -p` on the host (direct) | {} | {} | {} | {} | 1.00 |\n",
        ms(df.median),
        ms(df.p90),
        ms(dw.median),
        ms(dw.p90)
    );
    table += &format!(
        "| `bottle start` of the same (docker) | {} | {} | {} | {} | {:.2} |\n",
        ms(bf.median),
        ms(bf.p90),
        ms(bw.median),
        ms(bw.p90),
        ratio(bf.median, df.median)
    );
    table += &format!("\n{runs} runs each, interleaved, after one warm-up run each.\n");
    emit(&table);
    drop(setup);
    Ok(())
}
