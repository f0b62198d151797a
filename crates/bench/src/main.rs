//! `bottle-bench`: measures bot-bottle against baselines taken in the same
//! run, and prints a table with the ratios.
//!
//! `bottle-bench start` times `bottle start AGENT -y --rm -- true` against
//! the floor `docker run --rm --network none BASE true`, and reads the
//! gate's resident memory while its bottle idles.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod claude;
mod git;
mod lifecycle;
mod native;
mod proxy;
mod supervise;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// `list active` and `cleanup --dry-run` with many bottles running,
    /// and start latency under runc and runsc.
    Lifecycle {
        #[arg(long, default_value = "20")]
        running: usize,
        #[arg(long, default_value = "5")]
        runs: usize,
        /// The `bottle` binary [default: beside this one].
        #[arg(long)]
        bottle: Option<PathBuf>,
    },
    /// `--cwd` copy-in against tar, and pushes through the git gate
    /// against direct SSH.
    Git {
        #[arg(long, default_value = "10000")]
        files: usize,
        #[arg(long, default_value = "200")]
        mib: usize,
        #[arg(long, default_value = "10")]
        pushes: usize,
        /// The `bottle` binary [default: beside this one].
        #[arg(long)]
        bottle: Option<PathBuf>,
        /// The repository (for the upstream's fixtures).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// The gate's throughput, latency and memory against a direct
    /// connection and mitmproxy.
    Proxy {
        /// Seconds per load measurement.
        #[arg(long, default_value = "4")]
        seconds: u64,
        /// Rounds of every measurement; each figure is the median over
        /// them, and the two gates swap places from round to round.
        #[arg(long, default_value = "3")]
        rounds: usize,
        /// Give the bottle a credential route (to another host), so the
        /// gate reads every request and response for its secret.
        #[arg(long)]
        route: bool,
        /// A `bottle` binary of another build, measured in the same run
        /// (e.g. the commit before a change), as the baseline.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// The `bottle` binary [default: beside this one].
        #[arg(long)]
        bottle: Option<PathBuf>,
        /// The repository (for the origin's fixtures).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Approve → first allowed request, and the capability block's round
    /// trip against building and running the same change by hand.
    Supervise {
        /// Egress approvals measured.
        #[arg(long, default_value = "10")]
        approvals: usize,
        /// Image changes measured.
        #[arg(long, default_value = "3")]
        blocks: usize,
        /// The `bottle` binary [default: beside this one].
        #[arg(long)]
        bottle: Option<PathBuf>,
        /// The repository (for the origin's fixtures).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// A native bottle's start against a bare bubblewrap sandbox, and
    /// `list active` with docker and native bottles running.
    Native {
        #[arg(long, default_value = "15")]
        runs: usize,
        /// Bottles of each backend running for `list active`.
        #[arg(long, default_value = "10")]
        each: usize,
        /// The `bottle` binary [default: beside this one].
        #[arg(long)]
        bottle: Option<PathBuf>,
    },
    /// From `bottle start` of a Claude Code bottle to its first request
    /// at the model API (a stand-in), against `claude -p` on the host.
    Claude {
        #[arg(long, default_value = "7")]
        runs: usize,
        /// The `bottle` binary [default: beside this one].
        #[arg(long)]
        bottle: Option<PathBuf>,
        /// The repository (for the origin's fixtures).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Start latency against `docker run`, and the gate's idle memory.
    Start {
        /// Runs of each command (after one warm-up run each).
        #[arg(long, default_value = "15")]
        runs: usize,
        /// The manifest holding the agent.
        #[arg(long, default_value = "examples/bottle.json")]
        manifest: PathBuf,
        /// The agent to start.
        #[arg(long, default_value = "demo")]
        agent: String,
        /// The `bottle` binary [default: beside this one].
        #[arg(long)]
        bottle: Option<PathBuf>,
        /// The base image for the floor.
        #[arg(long, default_value = "bot-bottle/base:bookworm")]
        base: String,
    },
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Bench::Claude { runs, bottle, repo } => {
            claude::run(&bottle_path(bottle)?, &repo, runs.max(1))
        }
        Bench::Proxy {
            seconds,
            rounds,
            route,
            baseline,
            bottle,
            repo,
        } => proxy::run(
            &bottle_path(bottle)?,
            &repo,
            proxy::Schedule {
                seconds,
                rounds: rounds.max(1),
            },
            route,
            baseline.as_deref(),
        ),
        Bench::Lifecycle {
            running,
            runs,
            bottle,
        } => lifecycle::run(&bottle_path(bottle)?, running, runs),
        Bench::Native { runs, each, bottle } => native::run(&bottle_path(bottle)?, runs, each),
        Bench::Git {
            files,
            mib,
            pushes,
            bottle,
            repo,
        } => git::run_bench(&bottle_path(bottle)?, &repo, files, mib, pushes),
        Bench::Supervise {
            approvals,
            blocks,
            bottle,
            repo,
        } => supervise::run(&bottle_path(bottle)?, &repo, approvals, blocks),
        Bench::Start {
            runs,
            manifest,
            agent,
            bottle,
            base,
        } => start(runs, &manifest, &agent, bottle, &base),
    }
}

fn bottle_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(std::env::current_exe()?.with_file_name("bottle")),
    }
}

/// `bottle ARGS` for a run of its own: home and state under `home`,
/// `manifest`, no Claude Code in images it builds, no input.
pub(crate) fn bottle_command(
    bottle: &std::path::Path,
    home: &std::path::Path,
    manifest: &std::path::Path,
    args: &[&str],
) -> Command {
    let mut c = Command::new(bottle);
    c.args(args)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("BOTTLE_MANIFEST", manifest)
        .env("BOTTLE_INSTALL_CLAUDE", "0")
        .stdin(Stdio::null());
    c
}

/// Times `cmd` once; fails if it fails.
pub(crate) fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("run benchmark command")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

pub(crate) struct Stats {
    pub(crate) median: Duration,
    pub(crate) p90: Duration,
    pub(crate) min: Duration,
}

pub(crate) fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
        min: samples[0],
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn start(
    runs: usize,
    manifest: &PathBuf,
    agent: &str,
    bottle: Option<PathBuf>,
    base: &str,
) -> anyhow::Result<()> {
    let bottle = bottle_path(bottle)?;
    let floor_cmd = || {
        let mut c = Command::new("docker");
        c.args(["run", "--rm", "--network", "none", base, "true"]);
        c
    };
    let bottle_cmd = || {
        let mut c = Command::new(&bottle);
        c.args(["start", agent, "--manifest"])
            .arg(manifest)
            .args(["-y", "--rm", "--", "true"]);
        c
    };
    eprintln!("warming up (builds images if needed)…");
    time(&mut floor_cmd())?;
    time(&mut bottle_cmd())?;
    let (mut floor, mut ours) = (Vec::new(), Vec::new());
    // Interleaved, so drift in the engine affects both alike.
    for i in 0..runs {
        eprintln!("run {}/{runs}", i + 1);
        floor.push(time(&mut floor_cmd())?);
        ours.push(time(&mut bottle_cmd())?);
        // Let detached reapers finish so runs do not overlap.
        std::thread::sleep(Duration::from_millis(400));
    }
    let (floor, ours) = (stats(floor), stats(ours));
    let rss = gate_idle_rss(&bottle, manifest, agent)?;

    let ratio = ours.median.as_secs_f64() / floor.median.as_secs_f64();
    let mut table = String::from(
        "| measure | median | p90 | min | ratio to floor | target |\n|---|---|---|---|---|---|\n",
    );
    table += &format!(
        "| `docker run --rm --network none {base} true` (floor) | {} | {} | {} | 1.00 | |\n",
        ms(floor.median),
        ms(floor.p90),
        ms(floor.min)
    );
    table += &format!(
        "| `bottle start {agent} -y --rm -- true` | {} | {} | {} | {ratio:.2} | ≤ 2.50 {} |\n",
        ms(ours.median),
        ms(ours.p90),
        ms(ours.min),
        verdict(ratio <= 2.5)
    );
    table += &format!(
        "| gate idle RSS | {:.1} MiB | | | | ≤ 20 MiB {} |\n",
        rss as f64 / 1024.0,
        verdict(rss <= 20 * 1024)
    );
    table += &format!("\n{runs} runs each, interleaved, after one warm-up run each.\n");
    emit(&table);
    Ok(())
}

/// Starts a bottle that idles, reads its gate's VmRSS (KiB) from /proc.
fn gate_idle_rss(bottle: &PathBuf, manifest: &PathBuf, agent: &str) -> anyhow::Result<u64> {
    let mut child = Command::new(bottle)
        .args(["start", agent, "--manifest"])
        .arg(manifest)
        .args(["-y", "--rm", "--", "sleep", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rss = None;
    while Instant::now() < deadline && rss.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        let out = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                "label=bot-bottle.role=gate",
                "--filter",
                &format!("label=bot-bottle.agent={agent}"),
            ])
            .output()?;
        let id = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_owned);
        let Some(id) = id else { continue };
        // Idle: give it a moment after start.
        std::thread::sleep(Duration::from_millis(1500));
        let pid = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &id])
            .output()?;
        let pid = String::from_utf8_lossy(&pid.stdout).trim().to_owned();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
    }
    child.wait()?;
    rss.context("the gate never ran")
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "✓" } else { "✗" }
}

/// The table is the benchmark's output: stdout.
#[expect(clippy::print_stdout, reason = "the table is this program's data")]
pub(crate) fn emit(table: &str) {
    print!("{table}");
}
