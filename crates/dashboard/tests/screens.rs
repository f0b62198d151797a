//! The dashboard's screens, drawn into ratatui's test backend and kept as
//! snapshots (`cargo insta review` after a deliberate change).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use bottle_dashboard::app::{App, Focus};
use bottle_dashboard::model::{BottleView, Kind, RequestView, Snapshot, State, TailLine};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn bottle(identity: &str, backend: &str, state: State, minutes: u64) -> BottleView {
    BottleView {
        identity: identity.into(),
        agent: identity.split('-').next().unwrap().into(),
        backend: backend.into(),
        runtime: if backend == "native" {
            "bubblewrap"
        } else {
            "runsc"
        }
        .into(),
        started: Some(now() - Duration::from_secs(minutes * 60)),
        state,
        health: if state == State::Running {
            "healthy"
        } else {
            "-"
        }
        .into(),
        pending: 0,
        last_refusal: None,
    }
}

fn several() -> Snapshot {
    let mut coder = bottle("coder-a1b2c3", "docker", State::Running, 42);
    coder.pending = 1;
    coder.last_refusal = Some("example.com: host example.com is not in the allowlist".into());
    Snapshot {
        bottles: vec![
            coder,
            bottle("review-d4e5f6", "native", State::Running, 5),
            bottle("docs-g7h8i9", "docker", State::Stopped, 600),
        ],
        requests: vec![RequestView {
            id: "r-0a1b2c".into(),
            identity: "coder-a1b2c3".into(),
            kind: "egress".into(),
            summary: "egress pypi.org".into(),
            reason: "pip install for the tests".into(),
            created: 1_799_999_000,
            detail: vec!["allow pypi.org on ports 443 and 80".into()],
        }],
        tail: vec![
            TailLine {
                time: "12:00:01".into(),
                kind: Kind::Gate,
                text: "gate start (egress)".into(),
            },
            TailLine {
                time: "12:00:03".into(),
                kind: Kind::Allowed,
                text: "CONNECT crates.io 200".into(),
            },
            TailLine {
                time: "12:00:04".into(),
                kind: Kind::Credential,
                text: "POST api.anthropic.com/v1/messages 200 (credential in authorization)".into(),
            },
            TailLine {
                time: "12:00:09".into(),
                kind: Kind::Refused,
                text: "CONNECT example.com: host example.com is not in the allowlist".into(),
            },
            TailLine {
                time: "12:00:10".into(),
                kind: Kind::Request,
                text: "requested egress pypi.org".into(),
            },
        ],
        agents: Ok(vec!["coder".into(), "review".into()]),
        backends: vec!["docker".into(), "native".into()],
        problems: Vec::new(),
    }
}

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| bottle_dashboard::view::draw(f, app))
        .unwrap();
    terminal.backend().to_string()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn empty() {
    let app = App::new(Snapshot::default(), now(), false);
    insta::assert_snapshot!(screen(&app, 110, 20));
}

#[test]
fn several_bottles_on_two_backends() {
    let app = App::new(several(), now(), false);
    insta::assert_snapshot!(screen(&app, 120, 24));
}

#[test]
fn a_pending_request_in_the_inbox() {
    let mut app = App::new(several(), now(), false);
    app.key(key(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Inbox);
    insta::assert_snapshot!(screen(&app, 120, 24));
}

#[test]
fn a_refusal_in_the_tail() {
    let mut app = App::new(several(), now(), false);
    app.key(key(KeyCode::Char('f')));
    insta::assert_snapshot!(screen(&app, 120, 24));
}

#[test]
fn the_help_view() {
    let mut app = App::new(several(), now(), false);
    app.key(key(KeyCode::Char('?')));
    insta::assert_snapshot!(screen(&app, 110, 24));
}

#[test]
fn a_narrow_terminal() {
    let app = App::new(several(), now(), false);
    insta::assert_snapshot!(screen(&app, 60, 30));
}

#[test]
fn a_route_asks_for_its_host_variable() {
    let mut snapshot = several();
    snapshot.requests[0].kind = "route".into();
    snapshot.requests[0].summary = "route to api.example.com (authorization)".into();
    let mut app = App::new(snapshot, now(), false);
    app.key(key(KeyCode::Tab));
    assert_eq!(app.key(key(KeyCode::Char('y'))), None);
    assert_eq!(app.key(key(KeyCode::Char('y'))), None);
    for c in "API_TOKEN".chars() {
        app.key(key(KeyCode::Char(c)));
    }
    insta::assert_snapshot!(screen(&app, 100, 24));
    assert_eq!(
        app.key(key(KeyCode::Enter)),
        Some(bottle_dashboard::Action::Approve {
            request: "coder-a1b2c3/r-0a1b2c".into(),
            token_ref: Some("API_TOKEN".into()),
        })
    );
}

#[test]
fn an_image_change_is_shown_whole_before_it_is_approved() {
    let mut snapshot = several();
    snapshot.requests[0].kind = "image".into();
    snapshot.requests[0].summary = "image change (2 lines)".into();
    snapshot.requests[0].reason = "install jq".into();
    snapshot.requests[0].detail = vec!["USER root".into(), "RUN apt-get install -y jq".into()];
    let mut app = App::new(snapshot, now(), false);
    app.key(key(KeyCode::Tab));
    assert_eq!(app.key(key(KeyCode::Char('y'))), None);
    insta::assert_snapshot!(screen(&app, 100, 24));
}

#[test]
fn a_tiny_terminal_draws_without_panicking() {
    let mut app = App::new(several(), now(), true);
    app.key(key(KeyCode::Char('c')));
    for (w, h) in [(1, 1), (10, 4), (15, 6), (30, 3)] {
        let text = screen(&app, w, h);
        assert!(!text.is_empty());
    }
}

#[test]
fn a_backend_that_does_not_answer_is_named() {
    let mut snapshot = several();
    snapshot.problems = vec!["docker: the engine does not answer".into()];
    let app = App::new(snapshot, now(), false);
    let text = screen(&app, 140, 24);
    assert!(
        text.contains("not answering: docker: the engine does not answer"),
        "{text}"
    );
}
