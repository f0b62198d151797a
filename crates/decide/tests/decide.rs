//! `decide()` against real bottle directories and, for live bottles, a
//! real gate control socket; the backend of an image change is the
//! recording fake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use bottle_backend::fake::{Call, FakeBackend};
use bottle_backend::process::Launcher;
use bottle_backend::state::{BottleDir, Metadata};
use bottle_backend::{BackendName, Reporter};
use bottle_decide::{Approval, Context, Kind, Verdict, decide};
use bottle_gate::audit::Audit;
use bottle_gate::egress::Live;
use bottle_gate::egress::credentials::Credentials;
use bottle_gate::supervise::requests::{Ask, State, Store};
use bottle_manifest::provision::Grants;

const V1: &str = include_str!("../../backend/tests/fixtures/metadata-v1.json");

struct Quiet;
impl Reporter for Quiet {
    fn step(&self, _: &str) {}
    fn detail(&self, _: &str) {}
}

/// A bottle `identity` under `root`: running under this process as its
/// launcher, or stopped.
fn bottle(root: &Path, identity: &str, live: bool) -> BottleDir {
    let mut plan = Metadata::parse(V1.as_bytes()).unwrap().plan;
    plan.identity = identity.to_owned();
    plan.state_dir = root.join(identity);
    let dir = BottleDir::new(&plan.state_dir);
    dir.create().unwrap();
    let mut meta = Metadata::starting(&plan);
    if live {
        meta.launcher = Launcher::current().unwrap().to_string();
    } else {
        meta.stop(false);
    }
    meta.write(&dir).unwrap();
    dir
}

fn ask(dir: &BottleDir, identity: &str, ask: Ask) -> String {
    Store::new(dir.requests_dir())
        .create(identity, ask, "for the test")
        .unwrap()
        .id
}

fn egress(host: &str) -> Ask {
    Ask::Egress {
        host: host.into(),
        port: None,
    }
}

fn approve() -> Verdict {
    Verdict::Approve(Approval::default())
}

fn env_with(var: &'static str, value: &'static str) -> impl Fn(&str) -> Option<String> + Sync {
    move |name: &str| (name == var).then(|| value.to_owned())
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn ctx<'a>(root: &'a Path, env: &'a (dyn Fn(&str) -> Option<String> + Sync)) -> Context<'a> {
    Context {
        state_root: root,
        by: "tester".into(),
        env,
        reporter: &Quiet,
    }
}

fn fake(_: BackendName) -> FakeBackend {
    FakeBackend::new(BackendName::Native)
}

fn audit_events(dir: &BottleDir) -> Vec<String> {
    std::fs::read_to_string(dir.audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|l| l["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A gate's control socket served for `dir`, as the egress gate serves
/// it, in a runtime of its own thread.
fn serve_control(dir: &BottleDir) -> Arc<Live> {
    let live = Arc::new(Live::new(
        bottle_gate::egress::Policy::new(Vec::new(), &Default::default()),
        Credentials::none(),
    ));
    let audit = Arc::new(Audit::open(&dir.supervise_dir().join("gate-audit.jsonl")).unwrap());
    let socket = dir.control_socket();
    let served = Arc::clone(&live);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            ready_tx.send(()).unwrap();
            bottle_gate::supervise::control::serve(listener, served, audit).await;
        });
    });
    ready_rx.recv().unwrap();
    live
}

#[test]
fn an_approved_host_is_saved_for_a_stopped_bottle_and_applied_live_in_a_running_one() {
    let root = tempfile::tempdir().unwrap();
    let stopped = bottle(root.path(), "stopped-aaaaaa", false);
    let id = ask(&stopped, "stopped-aaaaaa", egress("a.test"));
    let decided = decide(&ctx(root.path(), &no_env), &id, &approve(), fake).unwrap();
    assert_eq!(decided.request.state, State::Approved);
    assert_eq!(decided.request.decided_by.as_deref(), Some("tester"));
    assert!(
        decided.message.contains("not running"),
        "{}",
        decided.message
    );
    let grants = Grants::load(&stopped.grants()).unwrap();
    assert_eq!(grants.allow[0].rule, "a.test");
    assert_eq!(audit_events(&stopped), ["approved"]);

    let running = bottle(root.path(), "running-bbbbbb", true);
    let live = serve_control(&running);
    let id = ask(&running, "running-bbbbbb", egress("b.test"));
    let decided = decide(&ctx(root.path(), &no_env), &id, &approve(), fake).unwrap();
    assert_eq!(
        decided.request.state,
        State::Applied,
        "{:?}",
        decided.request
    );
    assert!(decided.message.contains("now"), "{}", decided.message);
    assert_eq!(live.policy().rules().collect::<Vec<_>>(), ["b.test"]);
}

#[test]
fn a_route_needs_a_token_reference_whose_variable_is_set_and_never_writes_the_secret() {
    let root = tempfile::tempdir().unwrap();
    let dir = bottle(root.path(), "route-aaaaaa", true);
    let live = serve_control(&dir);
    let route = Ask::Route {
        host: "api.test".into(),
        header: "authorization".into(),
    };
    let id = ask(&dir, "route-aaaaaa", route);
    let err = decide(&ctx(root.path(), &no_env), &id, &approve(), fake).unwrap_err();
    assert_eq!(err.kind, Kind::Usage);
    assert!(err.message.contains("token reference"), "{}", err.message);
    let named = Verdict::Approve(Approval {
        token_ref: Some("API_TOKEN".into()),
        ..Approval::default()
    });
    let err = decide(&ctx(root.path(), &no_env), &id, &named, fake).unwrap_err();
    assert_eq!(err.kind, Kind::Config);
    assert!(err.message.contains("API_TOKEN") && err.message.contains("not set"));
    // Nothing was decided by the failures.
    assert_eq!(
        Store::new(dir.requests_dir())
            .get(&id)
            .unwrap()
            .unwrap()
            .state,
        State::Pending
    );

    let env = env_with("API_TOKEN", "s3cret-value");
    let decided = decide(&ctx(root.path(), &env), &id, &named, fake).unwrap();
    assert_eq!(decided.request.state, State::Applied);
    let creds = live.credentials();
    let route = creds
        .routes()
        .iter()
        .find(|r| r.host.to_string() == "api.test");
    assert_eq!(route.unwrap().secret.expose(), "s3cret-value");
    let grants = std::fs::read_to_string(dir.grants()).unwrap();
    assert!(grants.contains("API_TOKEN") && !grants.contains("s3cret-value"));
    let audit = std::fs::read_to_string(dir.audit_log()).unwrap();
    assert!(!audit.contains("s3cret-value"));
}

#[test]
fn an_image_change_rebuilds_and_restarts_through_the_backend() {
    let root = tempfile::tempdir().unwrap();
    let dir = bottle(root.path(), "image-aaaaaa", true);
    serve_control(&dir);
    let id = ask(
        &dir,
        "image-aaaaaa",
        Ask::Image {
            fragment: "RUN true".into(),
        },
    );
    let backend = FakeBackend::new(BackendName::Native);
    let used = backend.clone();
    let decided = decide(&ctx(root.path(), &no_env), &id, &approve(), move |name| {
        assert_eq!(name, BackendName::Docker, "the bottle's own backend");
        backend
    })
    .unwrap();
    assert_eq!(decided.request.state, State::Applied);
    let tag = bottle_backend::capability::bottle_tag("image-aaaaaa");
    assert_eq!(
        used.calls(),
        [
            Call::Rebuild(tag.clone()),
            Call::StopAgent("image-aaaaaa".into())
        ]
    );
    let restart = bottle_backend::capability::take_restart(&dir)
        .unwrap()
        .unwrap();
    assert_eq!(restart.request, id);
    assert!(bottle_backend::capability::is_preserved(&dir));
    let grants = Grants::load(&dir.grants()).unwrap();
    assert_eq!(grants.image.unwrap().tag, tag);
    assert_eq!(audit_events(&dir), ["approved", "applied"]);
}

#[test]
fn a_denial_tells_the_agent_why_and_a_second_decision_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = bottle(root.path(), "deny-aaaaaa", false);
    let id = ask(&dir, "deny-aaaaaa", egress("c.test"));
    let deny = Verdict::Deny {
        reason: Some("not this one".into()),
    };
    let decided = decide(&ctx(root.path(), &no_env), &id, &deny, fake).unwrap();
    assert_eq!(decided.request.state, State::Denied);
    assert!(decided.request.status_text().contains("not this one"));
    assert!(!dir.grants().exists(), "a denial grants nothing");
    assert_eq!(audit_events(&dir), ["denied"]);
    for again in [approve(), deny] {
        let err = decide(&ctx(root.path(), &no_env), &id, &again, fake).unwrap_err();
        assert_eq!(err.kind, Kind::Request);
        assert!(
            err.message.contains("denied already (by tester)"),
            "{}",
            err.message
        );
    }
    assert_eq!(audit_events(&dir), ["denied"]);
}

#[test]
fn unknown_ids_and_requests_of_a_bottle_that_has_gone_decide_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = bottle(root.path(), "gone-aaaaaa", false);
    let id = ask(&dir, "gone-aaaaaa", egress("d.test"));
    for unknown in ["r-000000", "../../etc/passwd", "other-bbbbbb/r-000000", ""] {
        let unknown = if unknown == "r-000000" && id == "r-000000" {
            "r-ffffff"
        } else {
            unknown
        };
        let err = decide(&ctx(root.path(), &no_env), unknown, &approve(), fake).unwrap_err();
        assert_eq!(err.kind, Kind::Request, "{unknown}");
        assert!(err.message.starts_with("no request"), "{}", err.message);
    }
    // The bottle is removed while its request is on someone's screen.
    std::fs::remove_dir_all(&dir.root).unwrap();
    let err = decide(&ctx(root.path(), &no_env), &id, &approve(), fake).unwrap_err();
    assert_eq!(err.kind, Kind::Request);
    assert!(!dir.root.exists(), "nothing was recreated");
    // A note that is not one line is refused before anything is read.
    let noted = Verdict::Approve(Approval {
        note: Some("two\nlines".into()),
        ..Approval::default()
    });
    assert_eq!(
        decide(&ctx(root.path(), &no_env), &id, &noted, fake)
            .unwrap_err()
            .kind,
        Kind::Usage
    );
}
