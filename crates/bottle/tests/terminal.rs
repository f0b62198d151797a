//! `bottle start` on a real terminal (tmux): the command gets a TTY, keys
//! reach it, its exit status comes back, and the launcher exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_session_round_trip() {
    if !docker_available() {
        return;
    }
    ensure_images();
    let world = World::new();
    let session = format!("bbtest-{}", std::process::id());
    let cmd = world.command();
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    let line = format!(
        "env {} {} start probe -y --rm -- bash -c '[ -t 0 ] && [ -t 1 ] && echo isatty=yes; echo size=$(stty size); read -r x; echo got=$x; exit 3'; echo EXIT=$?; sleep 60",
        envs.join(" "),
        bottle_bin().display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "20",
        &line,
    ]);
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
}
