//! Bottles have identities: list, clean up, run many at once, survive the
//! launcher's crash. Real Docker (or the native backend); checked with the
//! Docker CLI or /proc, not only the tool's own listing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

/// Starts the long-running agent `sigint` in the background; returns the
/// child and its identity once its agent container runs.
fn running_bottle(world: &World) -> (std::process::Child, String) {
    let child = world
        .command()
        .args(["start", "sigint", "-y"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut identity = String::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            match world.running("sigint", "agent") {
                Some((id, _)) => {
                    identity = id;
                    true
                }
                None => false,
            }
        }),
        "the bottle never ran"
    );
    (child, identity)
}

fn list(world: &World, args: &[&str]) -> serde_json::Value {
    let out = world
        .command()
        .arg("list")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn kill_9_of_the_launcher_leaves_nothing_running() {
    let Some(world) = world() else { return };
    let (mut child, identity) = running_bottle(&world);
    // Other tests' bottles may run on the same engine: look for ours.
    let ours = |listing: &serde_json::Value| -> serde_json::Value {
        listing
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["identity"] == identity.as_str())
                    .cloned()
            })
            .unwrap_or(serde_json::Value::Null)
    };
    let mut active = serde_json::Value::Null;
    let both = wait_until(Duration::from_secs(20), || {
        active = list(&world, &["active"]);
        ours(&active)["services"] == serde_json::json!(["agent", "gate"])
    });
    assert!(both, "{active}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || running_parts(&identity)
            .is_empty()),
        "still there after the launcher died: {:?}",
        running_parts(&identity)
    );
    assert_eq!(ours(&list(&world, &["active"])), serde_json::Value::Null);
    // The guardian recorded what happened; the bottle is stopped, its
    // volume and state kept until cleanup.
    let mut all = serde_json::Value::Null;
    let stopped = wait_until(Duration::from_secs(10), || {
        all = list(&world, &[]);
        ours(&all)["state"] == "stopped"
    });
    assert!(stopped, "{all}");

    let out = world.command().args(["cleanup", "-y"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(world.parts(&identity), Vec::<String>::new());
    assert!(!world.state_root().join(&identity).exists());
    // Idempotent: nothing of this bottle is left to clean up. (Other
    // tests' bottles share the engine: one whose launcher has just exited
    // leaves its network to its guardian for a moment, and any cleanup may
    // take that orphan; so this looks for this bottle only.)
    let again = world
        .command()
        .args(["cleanup", "--dry-run"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    let said = format!("{}{}", stdout(&again), stderr(&again));
    assert!(!said.contains(&identity), "{said}");
}

#[test]
fn cleanup_never_touches_what_is_not_ours() {
    let Some(world) = world() else { return };
    // A container that looks like a bottle's but has no labels.
    let lookalike = format!("sigint-{}-agent", &world.network[world.network.len() - 6..]);
    docker(&["create", "--name", &lookalike, BASE_IMAGE, "true"]);
    let (mut child, identity) = running_bottle(&world);
    let dry = world
        .command()
        .args(["cleanup", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        !stdout(&dry).contains(&identity),
        "a running bottle is never a cleanup target"
    );
    let out = world.command().args(["cleanup", "-y"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !docker(&["ps", "-aq", "--filter", &format!("name=^{lookalike}$")]).is_empty(),
        "the look-alike was removed"
    );
    assert!(
        !running_parts(&identity).is_empty(),
        "the running bottle was touched"
    );
    docker_quiet(&["rm", "-f", &lookalike]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let out = world
        .command()
        .args(["rm", "-y", &identity])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        wait_until(Duration::from_secs(10), || world
            .parts(&identity)
            .is_empty()),
        "{:?}",
        world.parts(&identity)
    );
}

#[test]
fn ten_bottles_at_once() {
    let Some(world) = world() else { return };
    let children: Vec<_> = (0..10)
        .map(|_| {
            world
                .command()
                .args(["start", "probe", "-y", "--rm", "--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut identities = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        identities.push(identity_from(&stderr(&out)).unwrap());
    }
    let mut unique = identities.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10, "{identities:?}");
    for identity in &identities {
        assert!(
            wait_until(Duration::from_secs(20), || world.parts(identity).is_empty()),
            "{identity}: {:?}",
            world.parts(identity)
        );
    }
}

#[test]
fn a_stopped_bottle_resumes_with_its_files_and_ca() {
    let Some(world) = world() else { return };
    let fingerprint =
        "echo ca=$(openssl x509 -noout -fingerprint -sha256 -in /etc/bot-bottle/ca.pem)";
    let first = world
        .command()
        .args(["start", "probe", "-y", "--", "bash", "-c"])
        .arg(format!(
            "echo work > /workspace/w.txt && echo home > ~/h.txt && {fingerprint}"
        ))
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let identity = identity_from(&stderr(&first)).unwrap();
    let before = Probe::new(first);
    assert_eq!(
        running_parts(&identity),
        Vec::<String>::new(),
        "stopped: no container left"
    );

    let again = world
        .command()
        .args(["resume", &identity, "-y", "--", "bash", "-c"])
        .arg(format!(
            "echo w=$(cat /workspace/w.txt) h=$(cat ~/h.txt) id=$BOTTLE_IDENTITY; {fingerprint}"
        ))
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    let after = Probe::new(again);
    assert_eq!(after.get("w"), "work h=home id=".to_owned() + &identity);
    assert_eq!(
        after.get("ca"),
        before.get("ca"),
        "the CA is the bottle's for life"
    );

    let unknown = world
        .command()
        .args(["resume", "nope-000000", "-y"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(78));
    assert!(
        stderr(&unknown).contains(&identity),
        "the error lists the known bottles: {}",
        stderr(&unknown)
    );
}

#[test]
fn a_pinned_container_name_in_use_is_a_clear_error() {
    let Some(world) = world() else { return };
    if docker_only("BOTTLE_CONTAINER names the agent's container") {
        return;
    }
    let taken = format!("bbtest-taken-{}", &world.network[world.network.len() - 6..]);
    docker(&["create", "--name", &taken, BASE_IMAGE, "true"]);
    let out = world
        .command()
        .env("BOTTLE_CONTAINER", &taken)
        .args(["start", "probe", "-y", "--rm", "--", "true"])
        .output()
        .unwrap();
    docker_quiet(&["rm", "-f", &taken]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("a container named \"{taken}\" exists already")),
        "{}",
        stderr(&out)
    );
    let identity = identity_from(&stderr(&out)).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || world
            .parts(&identity)
            .is_empty()),
        "{:?}",
        world.parts(&identity)
    );
}
