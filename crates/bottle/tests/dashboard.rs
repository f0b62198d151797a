//! `bottle dashboard` in a real terminal (tmux): it starts two bottles
//! through its own keys, one asks for a host through its supervise tool,
//! the request shows in the inbox, approving it there lets that bottle's
//! next request through, and attach opens the agent in a tmux window that
//! detaches and re-attaches while the bottle runs on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

const SESSION_PREFIX: &str = "bbtest-dash";

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

fn windows(session: &str) -> Vec<String> {
    tmux(&["list-windows", "-t", session, "-F", "#{window_name}"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn screen(target: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", target])
}

/// Moves the table's selection (drawn in reverse video) to `identity`.
fn select(target: &str, identity: &str) -> bool {
    for _ in 0..30 {
        tmux(&["send-keys", "-t", target, "Up"]);
    }
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(200));
        let styled = tmux(&["capture-pane", "-p", "-e", "-t", target]);
        if styled
            .lines()
            .any(|l| l.contains(identity) && (l.contains("\x1b[7m") || l.contains(";7m")))
        {
            return true;
        }
        tmux(&["send-keys", "-t", target, "Down"]);
    }
    false
}

/// Picks `want` in the dashboard's open picker by moving down to it.
fn pick(target: &str, want: &str) -> bool {
    for _ in 0..10 {
        if screen(target).contains(&format!("> {want}")) {
            tmux(&["send-keys", "-t", target, "Enter"]);
            return true;
        }
        tmux(&["send-keys", "-t", target, "Down"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

/// `n`, the agent, the backend: the bottle's identity, from the tmux
/// window the dashboard opens for it.
fn new_bottle(session: &str, agent: &str) -> String {
    let dash = format!("{session}:0");
    let before = windows(session);
    tmux(&["send-keys", "-t", &dash, "n"]);
    assert!(
        wait_until(Duration::from_secs(10), || screen(&dash)
            .contains("New bottle")),
        "no agent picker: {}",
        screen(&dash)
    );
    assert!(pick(&dash, agent), "{agent} not offered: {}", screen(&dash));
    assert!(
        wait_until(Duration::from_secs(10), || screen(&dash)
            .contains("runs on")),
        "no backend picker: {}",
        screen(&dash)
    );
    assert!(
        pick(&dash, &test_backend()),
        "{} not offered: {}",
        test_backend(),
        screen(&dash)
    );
    let mut opened = None;
    let appeared = wait_until(Duration::from_secs(240), || {
        // Window 0 renames itself after its command: only a window of
        // the agent's counts.
        opened = windows(session)
            .into_iter()
            .find(|w| !before.contains(w) && w.starts_with(&format!("{agent}-")));
        opened.is_some()
    });
    assert!(appeared, "no window for {agent}: {}", screen(&dash));
    let identity = opened.unwrap();
    assert!(identity.starts_with(&format!("{agent}-")), "{identity}");
    identity
}

#[test]
fn the_dashboard_starts_bottles_and_approves_in_place() {
    let Some(world) = world() else { return };
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["supervise"] = true.into();
    for agent in ["asker", "idle"] {
        manifest["agents"][agent] = serde_json::json!({
            "bottle": "test",
            "command": ["sh", "-c", "echo ID=$BOTTLE_IDENTITY; exec sleep 600"],
        });
    }
    world.write_manifest(&manifest);
    let session = Session(format!("{SESSION_PREFIX}-{}", std::process::id()));
    let line = format!(
        "{} dashboard; echo DASH_EXIT=$?; sleep 60",
        bottle_line(&world)
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session.0,
        "-x",
        "140",
        "-y",
        "40",
        &line,
    ]);
    let dash = format!("{}:0", session.0);
    assert!(
        wait_until(Duration::from_secs(20), || screen(&dash)
            .contains("bot-bottle ·")),
        "the dashboard did not draw: {}",
        screen(&dash)
    );

    let mut started = Started(&world, Vec::new());
    let asker = new_bottle(&session.0, "asker");
    started.1.push(asker.clone());
    let idle = new_bottle(&session.0, "idle");
    started.1.push(idle.clone());
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s = screen(&dash);
            s.contains(&asker) && s.contains(&idle)
        }),
        "both bottles listed: {}",
        screen(&dash)
    );

    // The asker asks; the dashboard shows it; before the approval the
    // host is refused.
    let container = format!("{asker}-agent");
    let probe = |path: &str| {
        let out = exec_in(
            &container,
            "agent",
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_connect} %{http_code}",
                &format!("https://forbidden.test{path}"),
            ],
        )
        .output()
        .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(probe("/before"), "403 000", "refused before the approval");
    let (text, error) = call(
        &container,
        "request_egress",
        serde_json::json!({"host": "forbidden.test", "reason": "the tests need it"}),
    );
    assert!(!error, "{text}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = screen(&dash);
            s.contains("Requests (1)") && s.contains("egress forbidden.test")
        }),
        "the request is not in the inbox: {}",
        screen(&dash)
    );
    tmux(&["send-keys", "-t", &dash, "Tab"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "-t", &dash, "y"]);
    // Shown whole first, then granted on a second y.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = screen(&dash);
            s.contains("it grants exactly") && s.contains("the bottle may reach forbidden.test")
        }),
        "the approval is not shown before it is given: {}",
        screen(&dash)
    );
    assert_eq!(
        probe("/still-refused"),
        "403 000",
        "nothing granted on one key"
    );
    tmux(&["send-keys", "-t", &dash, "y"]);
    assert!(
        wait_until(Duration::from_secs(20), || screen(&dash)
            .contains("forbidden.test is allowed now")),
        "not approved: {}",
        screen(&dash)
    );
    assert_eq!(probe("/after"), "200 200", "the approved host answers");
    assert!(
        world
            .origin_requests()
            .iter()
            .any(|r| r["path"] == "/after"),
        "the origin saw the request"
    );
    assert!(
        !world
            .origin_requests()
            .iter()
            .any(|r| r["path"] == "/before"),
        "the refused request never reached the origin"
    );

    // The asker's window detaches; the bottle runs on; attach reopens it.
    let window = format!("{}:{asker}", session.0);
    tmux(&["send-keys", "-t", &window, "C-p", "C-q"]);
    assert!(
        wait_until(Duration::from_secs(20), || !windows(&session.0)
            .contains(&asker)),
        "Ctrl-P Ctrl-Q did not detach: {}",
        screen(&window)
    );
    tmux(&["send-keys", "-t", &dash, "Tab"]);
    let row = |s: &str| s.lines().find(|l| l.contains(&asker)).map(str::to_owned);
    assert!(row(&screen(&dash)).is_some_and(|l| l.contains("running")));
    assert!(
        select(&dash, &asker),
        "cannot select {asker}: {}",
        screen(&dash)
    );
    tmux(&["send-keys", "-t", &dash, "a"]);
    assert!(
        wait_until(Duration::from_secs(20), || windows(&session.0)
            .contains(&asker)),
        "attach did not reopen the agent: {}",
        screen(&dash)
    );

    // Quitting leaves the bottles running; stopping them is `bottle stop`.
    tmux(&["send-keys", "-t", &dash, "q"]);
    assert!(
        wait_until(Duration::from_secs(10), || screen(&dash)
            .contains("DASH_EXIT=0")),
        "{}",
        screen(&dash)
    );
    for identity in std::mem::take(&mut started.1) {
        let out = world.command().args(["stop", &identity]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// The bottles a test started in the background: stopped when it ends,
/// also when it fails.
struct Started<'a>(&'a World, Vec<String>);

impl Drop for Started<'_> {
    fn drop(&mut self) {
        for identity in &self.1 {
            if let Ok(out) = self.0.command().args(["stop", identity]).output() {
                eprintln!("cleanup: bottle stop {identity}: {}", stderr(&out).trim());
            }
        }
    }
}
