//! `bottle start` on a real terminal (tmux): the command gets a TTY, keys
//! reach it, its exit status comes back, and the launcher exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

#[test]
fn a_terminal_session_round_trip() {
    if !docker_available() {
        return;
    }
    ensure_images();
    let world = World::new();
    let session = format!("bbtest-{}", std::process::id());
    // The launcher ignores the job-control signals (as a tmux pane's
    // command may); the command must start with them at their defaults.
    let line = format!(
        "trap '' TTIN TTOU; {} start probe -y --rm -- bash -c '[ -t 0 ] && [ -t 1 ] && echo isatty=yes; echo size=$(stty size); echo ignored=$(grep SigIgn /proc/self/status | cut -f2); read -r x; echo got=$x; exit 3'; echo EXIT=$?; sleep 60",
        bottle_line(&world)
    );
    new_session(&session, &line);
    let screen = || tmux(&["capture-pane", "-p", "-t", &session]);
    let ready = wait_until(Duration::from_secs(60), || screen().contains("isatty=yes"));
    tmux(&["send-keys", "-t", &session, "hello", "Enter"]);
    let done = wait_until(Duration::from_secs(20), || screen().contains("EXIT="));
    let text = screen();
    tmux(&["kill-session", "-t", &session]);
    assert!(ready, "the command never got a TTY: {text}");
    assert!(done, "the launcher did not exit: {text}");
    assert!(text.contains("got=hello"), "{text}");
    assert!(
        text.contains("size=20 100"),
        "the window's size reached the TTY: {text}"
    );
    assert!(text.contains("EXIT=3"), "{text}");
    let ignored = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ignored="))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
    // SIGTTIN is 21 and SIGTTOU 22: bits 20 and 21 of the mask. gVisor's
    // /proc has no SigIgn line; everywhere else it must be there.
    let job_control = (1u64 << 20) | (1 << 21);
    let reported = test_backend() == "native" || test_runtime() != "runsc";
    assert!(
        ignored.map_or(!reported, |mask| mask & job_control == 0),
        "the command started with SIGTTIN or SIGTTOU ignored: {text}"
    );
}

/// `bottle attach` from a second terminal: its keys reach the agent, the
/// agent's output reaches it, and Ctrl-P Ctrl-Q leaves the agent running.
#[test]
fn another_terminal_attaches_to_the_agent_and_detaches_leaving_it_running() {
    if !docker_available() {
        return;
    }
    ensure_images();
    let world = World::new();
    let session = format!("bbtest-attach-{}", std::process::id());
    let env = bottle_line(&world);
    let line = format!(
        "{env} start probe -y --rm -- bash -c 'echo ID=$BOTTLE_IDENTITY; while read -r x; do echo got=$x; [ \"$x\" = bye ] && exit 4; done'; echo EXIT=$?; sleep 60"
    );
    new_session(&session, &line);
    let main = format!("{session}:0");
    // With the history: what scrolled away is still in a failure's text.
    let screen = |target: &str| tmux(&["capture-pane", "-p", "-S", "-200", "-t", target]);
    let started = wait_until(Duration::from_secs(60), || screen(&main).contains("ID="));
    let text = screen(&main);
    let identity = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ID="))
        .map(str::to_owned);
    let Some(identity) = identity.filter(|_| started) else {
        tmux(&["kill-session", "-t", &session]);
        panic!("the bottle did not start: {text}");
    };
    tmux(&[
        "new-window",
        "-t",
        &session,
        "-n",
        "att",
        &format!("{env} attach {identity}; echo ATTACH_EXIT=$?; sleep 60"),
    ]);
    let att = format!("{session}:att");
    // Keys typed until one comes back: the attach takes a moment.
    let mut n = 0;
    let through = wait_until(Duration::from_secs(30), || {
        n += 1;
        tmux(&["send-keys", "-t", &att, &format!("hello{n}"), "Enter"]);
        std::thread::sleep(Duration::from_millis(1000));
        screen(&att).contains("got=hello")
    });
    let reached = screen(&main).contains("got=hello");
    tmux(&["send-keys", "-t", &att, "C-p", "C-q"]);
    let detached = wait_until(Duration::from_secs(20), || {
        screen(&att).contains("ATTACH_EXIT=")
    });
    std::thread::sleep(Duration::from_millis(500));
    let still_running = !screen(&main).contains("EXIT=");
    tmux(&["send-keys", "-t", &main, "bye", "Enter"]);
    let ended = wait_until(Duration::from_secs(20), || screen(&main).contains("EXIT="));
    let (main_text, att_text) = (screen(&main), screen(&att));
    tmux(&["kill-session", "-t", &session]);
    assert!(
        through,
        "the attached terminal's keys did not come back: {att_text}\nthe launcher's terminal: {main_text}"
    );
    assert!(
        reached,
        "the launcher's terminal did not show them: {main_text}"
    );
    assert!(detached, "Ctrl-P Ctrl-Q did not detach: {att_text}");
    assert!(still_running, "detaching stopped the agent: {main_text}");
    assert!(ended && main_text.contains("EXIT=4"), "{main_text}");
}

/// `start -d`: the bottle runs without a terminal; `bottle attach` reaches
/// its agent (keys, Ctrl-C) from any terminal, more than once; `bottle
/// stop` stops it, kept for `resume -d`.
#[test]
fn a_detached_bottle_runs_on_reattaches_and_stops_for_resume() {
    if !docker_available() {
        return;
    }
    ensure_images();
    let world = World::new();
    let script = "trap 'echo got=INT' INT; while true; do read -r x && echo got=$x; done";
    let out = world
        .command()
        .args(["start", "probe", "-y", "-d", "--", "bash", "-c", script])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let identity = identity_from(&err).expect("identity");
    assert!(err.contains("runs detached"), "{err}");
    let state = |identity: &str| -> String {
        let out = world
            .command()
            .args(["list", "--format", "json"])
            .output()
            .unwrap();
        let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        listing
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["identity"] == identity)
            .map(|b| b["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(state(&identity), "running");

    let session = format!("bbtest-detached-{}", std::process::id());
    let env = bottle_line(&world);
    new_session(&session, "sleep 600");
    let screen = |target: &str| tmux(&["capture-pane", "-p", "-S", "-200", "-t", target]);
    let attach = |name: &str, word: &str| -> (bool, bool, bool, String) {
        tmux(&[
            "new-window",
            "-t",
            &session,
            "-n",
            name,
            &format!("{env} attach {identity}; echo ATTACH_EXIT=$?; sleep 60"),
        ]);
        let target = format!("{session}:{name}");
        let mut n = 0;
        let through = wait_until(Duration::from_secs(30), || {
            n += 1;
            tmux(&["send-keys", "-t", &target, &format!("{word}{n}"), "Enter"]);
            std::thread::sleep(Duration::from_millis(1000));
            screen(&target).contains(&format!("got={word}"))
        });
        tmux(&["send-keys", "-t", &target, "C-c"]);
        let interrupted = wait_until(Duration::from_secs(10), || {
            screen(&target).contains("got=INT")
        });
        tmux(&["send-keys", "-t", &target, "C-p", "C-q"]);
        let detached = wait_until(Duration::from_secs(20), || {
            screen(&target).contains("ATTACH_EXIT=0")
        });
        (through, interrupted, detached, screen(&target))
    };
    let first = attach("first", "hello");
    std::thread::sleep(Duration::from_millis(500));
    let running_after_first = state(&identity);
    // A second terminal later: the agent's input is still open.
    let second = attach("second", "again");
    tmux(&["kill-session", "-t", &session]);
    for (what, (through, interrupted, detached, text)) in [("first", &first), ("second", &second)] {
        assert!(*through, "{what} attach: keys did not come back: {text}");
        assert!(
            *interrupted,
            "{what} attach: Ctrl-C did not reach the agent: {text}"
        );
        assert!(
            *detached,
            "{what} attach: Ctrl-P Ctrl-Q did not detach: {text}"
        );
    }
    assert_eq!(
        running_after_first, "running",
        "detaching stopped the agent"
    );

    let stop = world.command().args(["stop", &identity]).output().unwrap();
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(state(&identity), "stopped");
    assert_eq!(running_parts(&identity), Vec::<String>::new());
    let again = world.command().args(["stop", &identity]).output().unwrap();
    assert_eq!(again.status.code(), Some(78), "{}", stderr(&again));
    assert!(stderr(&again).contains("is not running"));

    // Resumed in the background too, and stopped again.
    let resumed = world
        .command()
        .args(["resume", &identity, "-y", "-d", "--", "bash", "-c", script])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(state(&identity), "running");
    let stop = world.command().args(["stop", &identity]).output().unwrap();
    assert!(stop.status.success(), "{}", stderr(&stop));
    let rm = world
        .command()
        .args(["rm", &identity, "-y"])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
}
