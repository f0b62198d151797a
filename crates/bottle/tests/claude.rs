//! Claude Code, the default agent, in every bottle: the pinned binary,
//! fetched once into the host's cache, runs inside the bottle on every
//! backend (and under gVisor), without a network of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

#[test]
fn the_pinned_claude_code_runs_in_the_bottle() {
    let Some(world) = world() else {
        return;
    };
    // The test bottle's 512 MiB is too little for Claude Code on native,
    // where the limit is RLIMIT_DATA: its engine maps about 600 MiB of
    // writable memory as it starts (docs/backends.md).
    let mut manifest = world.manifest(&[]);
    manifest["bottles"]["test"]["resources"]["memory"] = "2g".into();
    world.write_manifest(&manifest);
    let out = world.bottle(
        "probe",
        &[
            "sh",
            "-c",
            "echo at=$(command -v claude); claude --version 2>&1; echo rc=$?; echo quiet=$DISABLE_AUTOUPDATER$CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC$DISABLE_TELEMETRY; test -w \"$(command -v claude)\" && echo writable || echo read-only",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(&format!("{} (Claude Code)", pinned_claude())),
        "{text}"
    );
    // Its updater and other traffic the person did not ask for are off.
    assert!(text.contains("quiet=111"), "{text}");
    // The agent cannot replace the binary it is given.
    assert!(text.contains("read-only"), "{text}");
}

#[test]
fn an_unknown_way_to_install_claude_code_is_refused_naming_the_ways() {
    let Some(world) = world() else {
        return;
    };
    let out = world
        .command()
        .env("BOTTLE_INSTALL_CLAUDE", "auto")
        .args(["start", "probe", "-y", "--rm", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("BOTTLE_INSTALL_CLAUDE=\"auto\": say pypi"),
        "{}",
        stderr(&out)
    );
}
