//! A recording backend: it creates nothing and runs nothing, and records
//! every call it gets, so the backend-neutral parts ([`crate::lifecycle`])
//! and the commands can be tested without an engine. A stand-in for unit
//! tests only; the end-to-end suite runs the real backends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bottle_manifest::plan::Plan;

use crate::state::BottleDir;
use crate::{
    AgentRun, Availability, Backend, BackendError, BackendName, Found, Gates, GatesReady, Reporter,
    Scope,
};

/// One call the fake got, with what matters of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Prepare(String),
    RunGates {
        egress_identity: String,
        git: bool,
        secrets: usize,
    },
    ReadyAgent,
    RunAgent {
        command: Vec<String>,
        first: bool,
        own_image: Option<String>,
    },
    Rebuild(String),
    StopAgent(String),
    Teardown {
        identity: String,
        network: bool,
        data: bool,
        launcher: bool,
    },
    Enumerate,
}

/// What the fake's agent does on each run, in order: exit with a status,
/// and leave a restart note first (an approved image change) when set.
#[derive(Debug, Clone)]
pub struct Script {
    pub runs: Vec<(i32, Option<crate::capability::Restart>)>,
}

/// The recording backend.
#[derive(Debug, Clone)]
pub struct FakeBackend {
    pub name: BackendName,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub script: Arc<Mutex<Script>>,
    /// What `enumerate` answers.
    pub found: BTreeMap<String, Found>,
    pub usable: bool,
}

impl FakeBackend {
    pub fn new(name: BackendName) -> FakeBackend {
        FakeBackend {
            name,
            calls: Arc::default(),
            script: Arc::new(Mutex::new(Script { runs: Vec::new() })),
            found: BTreeMap::new(),
            usable: true,
        }
    }

    fn record(&self, call: Call) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Backend for FakeBackend {
    type Prepared = Plan;
    type Agent = ();

    fn name(&self) -> BackendName {
        self.name
    }

    async fn availability(&self) -> Availability {
        if self.usable {
            Availability::Usable {
                detail: "fake".into(),
            }
        } else {
            Availability::Unusable {
                reason: "fake, told to be unusable".into(),
                fix: "none".into(),
            }
        }
    }

    async fn describe_runtime(&self, _plan: &Plan) -> Result<String, BackendError> {
        Ok("fake".into())
    }

    fn prepare(&self, plan: &Plan) -> Result<Plan, BackendError> {
        self.record(Call::Prepare(plan.identity.clone()));
        Ok(plan.clone())
    }

    fn gate_paths(&self) -> crate::gate_config::GatePaths {
        crate::gate_config::GatePaths::standard()
    }

    async fn run_gates(
        &self,
        _p: &Plan,
        gates: Gates,
        ready: &GatesReady,
        _reporter: &dyn Reporter,
    ) -> Result<String, BackendError> {
        self.record(Call::RunGates {
            egress_identity: gates.egress.identity.clone(),
            git: gates.git.is_some(),
            secrets: gates.secrets.len(),
        });
        ready.mark();
        std::future::pending().await
    }

    async fn ready_agent(&self, _p: &Plan, _reporter: &dyn Reporter) -> Result<(), BackendError> {
        self.record(Call::ReadyAgent);
        Ok(())
    }

    async fn run_agent(
        &self,
        p: &Plan,
        _agent: &(),
        run: AgentRun<'_>,
        _reporter: &dyn Reporter,
    ) -> Result<i32, BackendError> {
        run.gates_ready.wait().await;
        self.record(Call::RunAgent {
            command: run.command.to_vec(),
            first: run.first,
            own_image: run.own_image.map(|i| i.tag.clone()),
        });
        let next = self
            .script
            .lock()
            .ok()
            .and_then(|mut s| (!s.runs.is_empty()).then(|| s.runs.remove(0)));
        let (code, restart) = next.unwrap_or((0, None));
        if let Some(restart) = restart {
            crate::capability::request_restart(&BottleDir::new(&p.state_dir), &restart)?;
        }
        Ok(code)
    }

    async fn rebuild(
        &self,
        _plan: &Plan,
        change: &crate::capability::ImageChange,
        _reporter: &dyn Reporter,
    ) -> Result<(), BackendError> {
        self.record(Call::Rebuild(change.granted.tag.clone()));
        Ok(())
    }

    async fn stop_agent(&self, identity: &str, _dir: &BottleDir) -> Result<bool, BackendError> {
        self.record(Call::StopAgent(identity.to_owned()));
        Ok(false)
    }

    async fn teardown(
        &self,
        identity: &str,
        _dir: &BottleDir,
        scope: Scope<'_>,
    ) -> Result<(), BackendError> {
        self.record(Call::Teardown {
            identity: identity.to_owned(),
            network: scope.network,
            data: scope.data,
            launcher: scope.launcher.is_some(),
        });
        Ok(())
    }

    async fn enumerate(&self, _state_root: &Path) -> Result<BTreeMap<String, Found>, BackendError> {
        self.record(Call::Enumerate);
        Ok(self.found.clone())
    }

    fn attach_argv(&self, identity: &str, _dir: &BottleDir) -> Result<Vec<String>, BackendError> {
        Ok(vec!["fake-attach".into(), identity.into()])
    }

    async fn leftovers(&self) -> Vec<String> {
        Vec::new()
    }

    async fn remove_leftovers(&self, _leftovers: &[String]) {}
}
