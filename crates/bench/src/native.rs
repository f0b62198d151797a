//! `bottle-bench native`: a native bottle's start→command against a bare
//! bubblewrap sandbox running the same command, side by side; and `bottle
//! list active` with bottles of both backends running at once.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{emit, ms, stats, verdict};

/// The floor: the same namespaces, no gate, no shim, no bot-bottle.
fn bare_bwrap() -> Command {
    let mut c = Command::new("bwrap");
    c.args([
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--",
        "true",
    ]);
    c
}

pub fn run(bottle: &Path, runs: usize, each: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("bottle.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "agents": {
                "idle": { "bottle": "b", "command": ["sleep", "600"] },
                "once": { "bottle": "b", "command": ["true"] }
            },
            "bottles": { "b": { "allow": [], "runtime": "runc" } }
        })
        .to_string(),
    )?;
    // A manifest without `runtime` for the native bottles.
    let native_manifest = dir.path().join("native.json");
    std::fs::write(
        &native_manifest,
        serde_json::json!({
            "agents": {
                "idle": { "bottle": "b", "command": ["sleep", "600"] },
                "once": { "bottle": "b", "command": ["true"] }
            },
            "bottles": { "b": { "allow": [] } }
        })
        .to_string(),
    )?;
    let bottle_cmd = |backend: &str, args: &[&str]| {
        let m = if backend == "native" {
            &native_manifest
        } else {
            &manifest
        };
        let mut c = crate::bottle_command(bottle, dir.path(), m, args);
        c.env("BOTTLE_BACKEND", backend);
        c
    };

    eprintln!("warming up…");
    crate::time(&mut bare_bwrap())?;
    crate::time(&mut bottle_cmd("native", &["start", "once", "-y", "--rm"]))?;
    let (mut floor, mut ours) = (Vec::new(), Vec::new());
    for i in 0..runs {
        eprintln!("start run {}/{runs}", i + 1);
        floor.push(crate::time(&mut bare_bwrap())?);
        ours.push(crate::time(&mut bottle_cmd(
            "native",
            &["start", "once", "-y", "--rm"],
        ))?);
        // Let the guardians finish, so runs do not overlap.
        std::thread::sleep(Duration::from_millis(300));
    }

    eprintln!("starting {each} docker and {each} native bottles…");
    let mut children: Vec<Child> = Vec::new();
    for backend in ["docker", "native"] {
        for _ in 0..each {
            children.push(
                bottle_cmd(backend, &["start", "idle", "-y", "--rm"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
    }
    let end = Instant::now() + Duration::from_secs(240);
    loop {
        let out = bottle_cmd("docker", &["list", "active", "--format", "json"]).output()?;
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).context("list output")?;
        let count = |backend: &str| {
            rows.as_array().map_or(0, |r| {
                r.iter()
                    .filter(|b| b["backend"] == backend)
                    .filter(|b| b["services"].as_array().is_some_and(|s| s.len() == 2))
                    .count()
            })
        };
        let (docker, native) = (count("docker"), count("native"));
        if docker >= each && native >= each {
            break;
        }
        if Instant::now() > end {
            bail!("only {docker} docker and {native} native bottles came up of {each} each");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut list = Vec::new();
    for _ in 0..runs {
        list.push(crate::time(&mut bottle_cmd("docker", &["list", "active"]))?);
    }
    for child in &children {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }

    let (floor, ours, list) = (stats(floor), stats(ours), stats(list));
    let ratio = ours.median.as_secs_f64() / floor.median.as_secs_f64();
    let mut table = String::from(
        "| measure | median | p90 | min | ratio to floor | target |\n|---|---|---|---|---|---|\n",
    );
    table += &format!(
        "| bare `bwrap --unshare-all --unshare-user … true` (floor) | {} | {} | {} | 1.00 | |\n",
        ms(floor.median),
        ms(floor.p90),
        ms(floor.min)
    );
    table += &format!(
        "| `bottle start --backend native -y --rm -- true` | {} | {} | {} | {ratio:.2} | ≤ 2.00 {} |\n",
        ms(ours.median),
        ms(ours.p90),
        ms(ours.min),
        verdict(ratio <= 2.0)
    );
    table += &format!(
        "| `bottle list active`, {each} docker + {each} native bottles running | {} | {} | | | ≤ 300 ms {} |\n\
         \n{runs} runs each, interleaved, after one warm-up run each.\n",
        ms(list.median),
        ms(list.p90),
        verdict(list.median <= Duration::from_millis(300)),
    );
    emit(&table);
    Ok(())
}
