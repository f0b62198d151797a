//! `bottle-bench git`: `--cwd` copy-in against `tar -c | tar -x` of the
//! same tree on the same disk, and a small push through the git gate
//! against a direct `git push` over SSH to the same upstream.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{emit, ms, stats, verdict};

const UPSTREAM_IMAGE: &str = "bot-bottle-test/upstream:latest";

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("docker").args(args))
}

/// A git checkout of `files` files totalling about `mib` MiB.
fn make_tree(dir: &Path, files: usize, mib: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["init", "-q", "-b", "main"]))?;
    let size = (mib << 20) / files;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..files {
        let sub = dir.join(format!("src/d{:03}", i % 100));
        std::fs::create_dir_all(&sub)?;
        // Pseudo-random bytes, so nothing is smaller than it looks.
        let content: Vec<u8> = (0..size)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b'a' + (seed % 26) as u8
            })
            .collect();
        std::fs::write(sub.join(format!("f{i:05}.txt")), content)?;
    }
    run(Command::new("git").arg("-C").arg(dir).args(["add", "-A"]))?;
    run(Command::new("git").arg("-C").arg(dir).args([
        "-c",
        "user.name=b",
        "-c",
        "user.email=b@b",
        "commit",
        "-q",
        "-m",
        "tree",
    ]))?;
    Ok(())
}

/// Everything the run made, removed on drop.
struct Cleanup {
    containers: Vec<String>,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

pub fn run_bench(
    bottle: &Path,
    repo: &Path,
    files: usize,
    mib: usize,
    pushes: usize,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let tree = dir.path().join("tree");
    eprintln!("making a checkout of {files} files, {mib} MiB…");
    make_tree(&tree, files, mib)?;

    // Baseline: tar -c | tar -x of the same tree on the same disk.
    let mut tar_times = Vec::new();
    for i in 0..3 {
        let dst = dir.path().join(format!("untar{i}"));
        std::fs::create_dir_all(&dst)?;
        // Both measurements start from a quiet disk.
        run(&mut Command::new("sync"))?;
        let started = Instant::now();
        run(Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -cf - . | tar -C {} -xf -",
            tree.display(),
            dst.display()
        )))?;
        tar_times.push(started.elapsed());
        std::fs::remove_dir_all(&dst)?;
    }

    // The upstream: sshd and a bare repository, on a network of our own.
    let network = format!("bbbench-git-{}", std::process::id());
    docker(&["network", "create", &network])?;
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: network.clone(),
    };
    docker(&[
        "build",
        "-q",
        "-t",
        UPSTREAM_IMAGE,
        &repo
            .join("crates/bottle/tests/fixtures/upstream")
            .to_string_lossy(),
    ])?;
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys)?;
    let key = keys.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key))?;
    std::fs::copy(keys.join("id_ed25519.pub"), keys.join("authorized_keys"))?;
    let upstream = format!("bbbench-upstream-{}", std::process::id());
    docker(&[
        "run",
        "-d",
        "--name",
        &upstream,
        "--network",
        &network,
        "--network-alias",
        "upstream.test",
        "-v",
        &format!("{}:/keys:ro", keys.display()),
        UPSTREAM_IMAGE,
    ])?;
    cleanup.containers.push(upstream.clone());
    std::thread::sleep(Duration::from_secs(2));
    let ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        &upstream,
    ])?;
    let host_key = docker(&[
        "exec",
        &upstream,
        "cat",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ])?;
    let mut fields = host_key.split_whitespace();
    let host_key = format!(
        "upstream.test {} {}",
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default()
    );

    // A small checkout of the upstream, for the pushes.
    let small = dir.path().join("small");
    let ssh = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        key.display()
    );
    run(Command::new("git")
        .args(["clone", "-q", &format!("ssh://git@{ip}/srv/git/repo.git")])
        .arg(&small)
        .env("GIT_SSH_COMMAND", &ssh))?;
    let direct = push_loop_direct(&small, &ssh, pushes)?;
    run(Command::new("git").arg("-C").arg(&small).args([
        "remote",
        "set-url",
        "origin",
        "ssh://git@upstream.test/srv/git/repo.git",
    ]))?;

    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;
    let manifest = dir.path().join("bottle.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "agents": { "bench": { "bottle": "bench", "command": ["true"] } },
            "bottles": { "bench": { "allow": [], "gate_network": network,
                "git": [{ "Name": "origin", "Upstream": "ssh://git@upstream.test/srv/git/repo.git",
                          "IdentityFile": key, "HostKey": host_key }] } }
        })
        .to_string(),
    )?;
    let bottle_cmd = |cwd: &Path, script: &str| {
        let mut c = Command::new(bottle);
        c.current_dir(cwd)
            .args(["start", "bench", "-y", "--rm", "--cwd", "--manifest"])
            .arg(&manifest)
            .args(["--", "bash", "-c", script])
            .env("HOME", &home)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("BOTTLE_INSTALL_CLAUDE", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    };

    eprintln!("copying the checkout into bottles…");
    let mut copy_times = Vec::new();
    for _ in 0..3 {
        run(&mut Command::new("sync"))?;
        let out = bottle_cmd(&tree, "true").output()?;
        if !out.status.success() {
            bail!("bottle: {}", String::from_utf8_lossy(&out.stderr));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ms_text = stderr
            .lines()
            .find_map(|l| l.split("workspace: copied ").nth(1))
            .and_then(|l| l.rsplit(" in ").next())
            .and_then(|t| t.strip_suffix(" ms"))
            .context("no copy-in line")?;
        copy_times.push(Duration::from_millis(ms_text.parse()?));
    }

    eprintln!("pushing through the gate…");
    let script = format!(
        "cd /workspace && git config user.email b@b && git config user.name b && \
         for i in $(seq 1 {pushes}); do echo $i >> README; git commit -qam \"gate $i\"; \
         s=$(date +%s%N); git push -q origin HEAD:agent/bench-$i || exit 1; e=$(date +%s%N); echo PUSH=$(( (e - s) / 1000 )); done"
    );
    let out = bottle_cmd(&small, &script).output()?;
    if !out.status.success() {
        bail!("bottle pushes: {}", String::from_utf8_lossy(&out.stderr));
    }
    let gate: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("PUSH="))
        .filter_map(|us| us.parse().ok())
        .map(Duration::from_micros)
        .collect();
    if gate.len() != pushes {
        bail!("expected {pushes} push timings, got {}", gate.len());
    }

    let (tar, copy, direct, gate) = (
        stats(tar_times),
        stats(copy_times),
        stats(direct),
        stats(gate),
    );
    let copy_ratio = copy.median.as_secs_f64() / tar.median.as_secs_f64();
    let push_ratio = gate.median.as_secs_f64() / direct.median.as_secs_f64();
    let table = format!(
        "| measure | median | min | ratio | target |\n|---|---|---|---|---|\n\
         | `tar -c \\| tar -x`, {files} files / {mib} MiB (baseline) | {} | {} | 1.00 | |\n\
         | `bottle start --cwd` copy-in, same tree | {} | {} | {copy_ratio:.2} | ≤ 1.5 {} |\n\
         | `git push` over SSH, direct (baseline) | {} | {} | 1.00 | |\n\
         | `git push` through the git gate | {} | {} | {push_ratio:.2} | ≤ 2 {} |\n\
         \ncopy-in: 3 runs each; pushes: {pushes} small commits each, to fresh branches.\n",
        ms(tar.median),
        ms(tar.min),
        ms(copy.median),
        ms(copy.min),
        verdict(copy_ratio <= 1.5),
        ms(direct.median),
        ms(direct.min),
        ms(gate.median),
        ms(gate.min),
        verdict(push_ratio <= 2.0),
    );
    emit(&table);
    drop(cleanup);
    Ok(())
}

fn push_loop_direct(checkout: &PathBuf, ssh: &str, pushes: usize) -> anyhow::Result<Vec<Duration>> {
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(checkout)
            .args(["-c", "user.name=b", "-c", "user.email=b@b"])
            .args(args)
            .env("GIT_SSH_COMMAND", ssh))
    };
    let mut times = Vec::new();
    for i in 0..pushes {
        std::fs::write(checkout.join("README"), format!("direct {i}\n"))?;
        git(&["commit", "-qam", &format!("direct {i}")])?;
        let started = Instant::now();
        git(&["push", "-q", "origin", &format!("HEAD:direct/bench-{i}")])?;
        times.push(started.elapsed());
    }
    Ok(times)
}
