//! `bottle-bench lifecycle`: `bottle list active` and `bottle cleanup
//! --dry-run` with 20 bottles running, and the start latency under runc
//! and under gVisor (when the engine has runsc), against the same floor.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{emit, ms, stats, verdict};

pub fn run(bottle: &Path, running: usize, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("bottle.json");
    let engine = String::from_utf8_lossy(
        &Command::new("docker")
            .args(["info", "--format", "{{json .Runtimes}}"])
            .output()?
            .stdout,
    )
    .into_owned();
    let has_runsc = engine.contains("\"runsc\"");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "agents": {
                "idle": { "bottle": "runc", "command": ["sleep", "600"] },
                "runc": { "bottle": "runc", "command": ["true"] },
                "runsc": { "bottle": "runsc", "command": ["true"] }
            },
            "bottles": {
                "runc": { "allow": [], "runtime": "runc" },
                "runsc": { "allow": [], "runtime": "runsc" }
            }
        })
        .to_string(),
    )?;
    let bottle_cmd = |args: &[&str]| crate::bottle_command(bottle, dir.path(), &manifest, args);

    // Start latency per runtime, interleaved with the floor.
    let mut floor = Vec::new();
    let mut by_runtime: Vec<(&str, Vec<Duration>)> = vec![("runc", Vec::new())];
    if has_runsc {
        by_runtime.push(("runsc", Vec::new()));
    }
    for (agent, _) in &by_runtime {
        crate::time(&mut bottle_cmd(&["start", agent, "-y", "--rm"]))?;
    }
    for i in 0..runs {
        eprintln!("start run {}/{runs}", i + 1);
        floor.push(crate::time(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            "bot-bottle/base:bookworm",
            "true",
        ]))?);
        for (agent, samples) in by_runtime.iter_mut() {
            samples.push(crate::time(&mut bottle_cmd(&[
                "start", agent, "-y", "--rm",
            ]))?);
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // Many bottles at once.
    eprintln!("starting {running} bottles…");
    let mut children: Vec<Child> = (0..running)
        .map(|_| {
            bottle_cmd(&["start", "idle", "-y", "--rm"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let out = bottle_cmd(&["list", "active", "--format", "json"]).output()?;
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).context("list output")?;
        let up = rows
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|b| b["services"].as_array().is_some_and(|s| s.len() == 2))
                    .count()
            })
            .unwrap_or(0);
        if up >= running {
            break;
        }
        if Instant::now() > end {
            bail!("only {up} of {running} bottles came up");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut list = Vec::new();
    let mut cleanup = Vec::new();
    for _ in 0..runs {
        list.push(crate::time(&mut bottle_cmd(&["list", "active"]))?);
        cleanup.push(crate::time(&mut bottle_cmd(&["cleanup", "--dry-run"]))?);
    }
    for child in &mut children {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }

    let floor = stats(floor);
    let mut table =
        String::from("| measure | median | p90 | ratio | target |\n|---|---|---|---|---|\n");
    table += &format!(
        "| `docker run --rm --network none BASE true` (floor) | {} | {} | 1.00 | |\n",
        ms(floor.median),
        ms(floor.p90)
    );
    for (runtime, samples) in by_runtime {
        let s = stats(samples);
        table += &format!(
            "| `bottle start -y --rm -- true`, agent under {runtime} | {} | {} | {:.2} | |\n",
            ms(s.median),
            ms(s.p90),
            s.median.as_secs_f64() / floor.median.as_secs_f64()
        );
    }
    if !has_runsc {
        table += "| agent under runsc | — | — | — | the engine has no runsc runtime |\n";
    }
    let (list, cleanup) = (stats(list), stats(cleanup));
    table += &format!(
        "| `bottle list active`, {running} bottles running | {} | {} | | ≤ 300 ms {} |\n\
         | `bottle cleanup --dry-run`, {running} bottles running | {} | {} | | ≤ 300 ms {} |\n\
         \n{runs} runs each.\n",
        ms(list.median),
        ms(list.p90),
        verdict(list.median <= Duration::from_millis(300)),
        ms(cleanup.median),
        ms(cleanup.p90),
        verdict(cleanup.median <= Duration::from_millis(300)),
    );
    emit(&table);
    Ok(())
}
