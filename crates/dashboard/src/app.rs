//! The dashboard's state and its keys: what is selected, what is asked,
//! and the [`Action`] a key asks for. No I/O here: the loop in
//! [`crate::run`] carries actions out through a [`crate::Source`].

use std::time::SystemTime;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::model::{Filter, RequestView, Snapshot, State};

/// Where the arrow keys move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Bottles,
    Inbox,
}

/// Something the person asked the dashboard to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Approve request `request` (`IDENTITY/r-…`), naming the host
    /// variable of a route's secret.
    Approve {
        request: String,
        token_ref: Option<String>,
    },
    Deny {
        request: String,
        reason: Option<String>,
    },
    Attach(String),
    Resume(String),
    Stop(String),
    Remove(String),
    Cleanup,
    New {
        agent: String,
        backend: String,
    },
}

impl Action {
    /// What the dashboard says while it is carried out.
    pub fn doing(&self) -> String {
        match self {
            Action::Approve { request, .. } => format!("approving {request}…"),
            Action::Deny { request, .. } => format!("denying {request}…"),
            Action::Attach(id) => format!("attaching to {id}…"),
            Action::Resume(id) => format!("resuming {id}…"),
            Action::Stop(id) => format!("stopping {id}…"),
            Action::Remove(id) => format!("removing {id}…"),
            Action::Cleanup => "cleaning up…".to_owned(),
            Action::New { agent, backend } => format!("starting {agent} on {backend}…"),
        }
    }
}

/// A question the dashboard is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// The host variable holding a route's secret.
    TokenRef { request: String, input: String },
    /// What the agent is told about a denial (may be empty).
    DenyReason { request: String, input: String },
    /// `y` carries out `action`, anything else does not.
    Confirm { action: Action, question: String },
    /// `y` approves this request, shown whole; anything else does not.
    ConfirmApproval {
        request: String,
        summary: String,
        detail: Vec<String>,
    },
    /// Which agent a new bottle runs.
    PickAgent {
        agents: Vec<String>,
        selected: usize,
    },
    /// Which backend it runs on.
    PickBackend {
        agent: String,
        backends: Vec<String>,
        selected: usize,
    },
}

/// The dashboard.
#[derive(Debug, Clone)]
pub struct App {
    pub snapshot: Snapshot,
    pub now: SystemTime,
    pub selected: usize,
    pub inbox_selected: usize,
    pub focus: Focus,
    pub filter: Filter,
    pub help: bool,
    pub prompt: Option<Prompt>,
    /// The outcome of the last action, or what is under way.
    pub message: Option<String>,
    /// Styles beyond bold and reverse (off under `NO_COLOR`).
    pub color: bool,
    pub quit: bool,
}

impl App {
    pub fn new(snapshot: Snapshot, now: SystemTime, color: bool) -> App {
        App {
            snapshot,
            now,
            selected: 0,
            inbox_selected: 0,
            focus: Focus::Bottles,
            filter: Filter::All,
            help: false,
            prompt: None,
            message: None,
            color,
            quit: false,
        }
    }

    /// Takes a new snapshot, keeping the selection on the same bottle and
    /// the same request (a request filed meanwhile never slides under the
    /// person's key).
    pub fn refresh(&mut self, snapshot: Snapshot, now: SystemTime) {
        let keep = self.selected_identity().map(str::to_owned);
        let keep_request = self.selected_request().map(RequestView::qualified);
        self.snapshot = snapshot;
        self.now = now;
        if let Some(id) = keep
            && let Some(i) = self.snapshot.bottles.iter().position(|b| b.identity == id)
        {
            self.selected = i;
        }
        if let Some(id) = keep_request
            && let Some(i) = self
                .snapshot
                .requests
                .iter()
                .position(|r| r.qualified() == id)
        {
            self.inbox_selected = i;
        }
        self.selected = self
            .selected
            .min(self.snapshot.bottles.len().saturating_sub(1));
        self.inbox_selected = self
            .inbox_selected
            .min(self.snapshot.requests.len().saturating_sub(1));
    }

    /// The selected bottle's identity.
    pub fn selected_identity(&self) -> Option<&str> {
        self.snapshot
            .bottles
            .get(self.selected)
            .map(|b| b.identity.as_str())
    }

    fn selected_state(&self) -> Option<State> {
        self.snapshot.bottles.get(self.selected).map(|b| b.state)
    }

    fn selected_request(&self) -> Option<&RequestView> {
        self.snapshot.requests.get(self.inbox_selected)
    }

    /// The verbs the selection allows, as `(key, what)`: the help line.
    pub fn verbs(&self) -> Vec<(&'static str, &'static str)> {
        let mut verbs = Vec::new();
        if self.focus == Focus::Inbox && self.selected_request().is_some() {
            verbs.extend([("y", "approve"), ("d", "deny")]);
        }
        match self.selected_state() {
            Some(State::Running) => verbs.extend([("a", "attach"), ("s", "stop")]),
            Some(State::Stopped | State::Preserved) => {
                verbs.extend([("r", "resume"), ("x", "remove")]);
            }
            Some(State::Orphaned | State::Other) => verbs.push(("x", "remove")),
            None => {}
        }
        verbs.extend([
            ("n", "new"),
            ("c", "cleanup"),
            ("f", "filter"),
            ("tab", "inbox"),
            ("?", "help"),
            ("q", "quit"),
        ]);
        verbs
    }

    /// Handles a key; returns what to carry out, if anything.
    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        if let Some(prompt) = self.prompt.take() {
            return self.answer(prompt, key);
        }
        if self.help {
            self.help = false;
            return None;
        }
        let id = self.selected_identity().map(str::to_owned);
        let state = self.selected_state();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Bottles => Focus::Inbox,
                    Focus::Inbox => Focus::Bottles,
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Char('f') => self.filter = self.filter.next(),
            KeyCode::Char('y') if self.focus == Focus::Inbox => {
                // Nothing is approved on one key: the request is shown
                // whole first, under its own id.
                let request = self.selected_request()?.clone();
                self.prompt = Some(Prompt::ConfirmApproval {
                    request: request.qualified(),
                    summary: request.summary.clone(),
                    detail: request.detail.clone(),
                });
            }
            KeyCode::Char('d') if self.focus == Focus::Inbox => {
                let request = self.selected_request()?.qualified();
                self.prompt = Some(Prompt::DenyReason {
                    request,
                    input: String::new(),
                });
            }
            KeyCode::Char('a') if state == Some(State::Running) => return id.map(Action::Attach),
            KeyCode::Enter if state == Some(State::Running) => return id.map(Action::Attach),
            KeyCode::Char('s') if state == Some(State::Running) => return id.map(Action::Stop),
            KeyCode::Char('r') | KeyCode::Enter
                if matches!(state, Some(State::Stopped | State::Preserved)) =>
            {
                return id.map(Action::Resume);
            }
            KeyCode::Char('x') if state.is_some() && state != Some(State::Running) => {
                let id = id?;
                self.prompt = Some(Prompt::Confirm {
                    question: format!(
                        "remove {id}: its workspace, home, state and audit log? [y/N]"
                    ),
                    action: Action::Remove(id),
                });
            }
            KeyCode::Char('c') => {
                self.prompt = Some(Prompt::Confirm {
                    question:
                        "remove everything no running bottle holds (as `bottle cleanup`)? [y/N]"
                            .to_owned(),
                    action: Action::Cleanup,
                });
            }
            KeyCode::Char('n') => match &self.snapshot.agents {
                Ok(agents) if !agents.is_empty() => {
                    self.prompt = Some(Prompt::PickAgent {
                        agents: agents.clone(),
                        selected: 0,
                    });
                }
                Ok(_) => self.message = Some("the manifest has no agents".to_owned()),
                Err(why) => self.message = Some(format!("no new bottle: {why}")),
            },
            _ => {}
        }
        None
    }

    fn step(&mut self, by: isize) {
        let (at, len) = match self.focus {
            Focus::Bottles => (&mut self.selected, self.snapshot.bottles.len()),
            Focus::Inbox => (&mut self.inbox_selected, self.snapshot.requests.len()),
        };
        if len == 0 {
            return;
        }
        *at = (*at as isize + by).clamp(0, len as isize - 1) as usize;
    }

    fn answer(&mut self, prompt: Prompt, key: KeyEvent) -> Option<Action> {
        match prompt {
            Prompt::TokenRef { request, mut input } => match key.code {
                KeyCode::Esc => None,
                KeyCode::Enter if !input.is_empty() => Some(Action::Approve {
                    request,
                    token_ref: Some(input),
                }),
                code => {
                    edit(&mut input, code);
                    self.prompt = Some(Prompt::TokenRef { request, input });
                    None
                }
            },
            Prompt::DenyReason { request, mut input } => match key.code {
                KeyCode::Esc => None,
                KeyCode::Enter => Some(Action::Deny {
                    request,
                    reason: (!input.trim().is_empty()).then_some(input),
                }),
                code => {
                    edit(&mut input, code);
                    self.prompt = Some(Prompt::DenyReason { request, input });
                    None
                }
            },
            Prompt::Confirm { action, .. } => {
                matches!(key.code, KeyCode::Char('y' | 'Y')).then_some(action)
            }
            Prompt::ConfirmApproval { request, .. } => {
                if !matches!(key.code, KeyCode::Char('y' | 'Y')) {
                    return None;
                }
                let route = self
                    .snapshot
                    .requests
                    .iter()
                    .find(|r| r.qualified() == request)
                    .is_some_and(RequestView::needs_token);
                if route {
                    self.prompt = Some(Prompt::TokenRef {
                        request,
                        input: String::new(),
                    });
                    return None;
                }
                Some(Action::Approve {
                    request,
                    token_ref: None,
                })
            }
            Prompt::PickAgent { agents, selected } => match key.code {
                KeyCode::Esc => None,
                KeyCode::Enter => {
                    let agent = agents.get(selected)?.clone();
                    let backends = self.snapshot.backends.clone();
                    if backends.is_empty() {
                        self.message = Some("no backend is usable here".to_owned());
                        return None;
                    }
                    self.prompt = Some(Prompt::PickBackend {
                        agent,
                        backends,
                        selected: 0,
                    });
                    None
                }
                code => {
                    let selected = pick(selected, agents.len(), code);
                    self.prompt = Some(Prompt::PickAgent { agents, selected });
                    None
                }
            },
            Prompt::PickBackend {
                agent,
                backends,
                selected,
            } => match key.code {
                KeyCode::Esc => None,
                KeyCode::Enter => Some(Action::New {
                    agent,
                    backend: backends.get(selected)?.clone(),
                }),
                code => {
                    let selected = pick(selected, backends.len(), code);
                    self.prompt = Some(Prompt::PickBackend {
                        agent,
                        backends,
                        selected,
                    });
                    None
                }
            },
        }
    }
}

/// A text field's key: typed characters (a host variable's: no control
/// characters) and backspace.
fn edit(input: &mut String, code: KeyCode) {
    match code {
        KeyCode::Backspace => {
            input.pop();
        }
        KeyCode::Char(c) if !c.is_control() && input.chars().count() < 200 => input.push(c),
        _ => {}
    }
}

fn pick(selected: usize, len: usize, code: KeyCode) -> usize {
    match code {
        KeyCode::Down | KeyCode::Char('j') => (selected + 1).min(len.saturating_sub(1)),
        KeyCode::Up | KeyCode::Char('k') => selected.saturating_sub(1),
        _ => selected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BottleView, RequestView};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn app(states: &[State]) -> App {
        let bottles = states
            .iter()
            .enumerate()
            .map(|(i, state)| BottleView {
                identity: format!("b-{i}"),
                agent: "b".into(),
                backend: "docker".into(),
                runtime: "runc".into(),
                started: None,
                state: *state,
                health: "-".into(),
                pending: 0,
                last_refusal: None,
            })
            .collect();
        let snapshot = Snapshot {
            bottles,
            requests: vec![RequestView {
                id: "r-000001".into(),
                identity: "b-0".into(),
                kind: "egress".into(),
                summary: "a.test".into(),
                reason: "why".into(),
                created: 1,
                detail: vec!["allow a.test".into()],
            }],
            agents: Ok(vec!["b".into()]),
            backends: vec!["docker".into(), "native".into()],
            ..Snapshot::default()
        };
        App::new(snapshot, SystemTime::UNIX_EPOCH, false)
    }

    #[test]
    fn a_verb_is_offered_only_when_the_bottles_state_allows_it() {
        let mut a = app(&[State::Running, State::Stopped]);
        assert_eq!(
            a.key(key(KeyCode::Char('r'))),
            None,
            "a running bottle is not resumed"
        );
        assert_eq!(a.key(key(KeyCode::Char('x'))), None);
        assert_eq!(a.prompt, None, "a running bottle is not removed");
        assert_eq!(
            a.key(key(KeyCode::Char('s'))),
            Some(Action::Stop("b-0".into()))
        );
        assert_eq!(
            a.key(key(KeyCode::Enter)),
            Some(Action::Attach("b-0".into()))
        );
        a.key(key(KeyCode::Down));
        assert_eq!(
            a.key(key(KeyCode::Char('a'))),
            None,
            "a stopped bottle is not attached"
        );
        assert_eq!(a.key(key(KeyCode::Char('s'))), None);
        assert_eq!(
            a.key(key(KeyCode::Enter)),
            Some(Action::Resume("b-1".into()))
        );
        assert_eq!(a.key(key(KeyCode::Char('x'))), None);
        assert!(matches!(a.prompt, Some(Prompt::Confirm { .. })));
        assert_eq!(
            a.key(key(KeyCode::Char('n'))),
            None,
            "anything but y cancels"
        );
        a.key(key(KeyCode::Char('x')));
        assert_eq!(
            a.key(key(KeyCode::Char('y'))),
            Some(Action::Remove("b-1".into()))
        );
        let verbs: Vec<&str> = a.verbs().into_iter().map(|(k, _)| k).collect();
        assert!(verbs.contains(&"r") && !verbs.contains(&"a"), "{verbs:?}");
    }

    #[test]
    fn approve_and_deny_act_on_the_inbox_and_a_new_bottle_picks_agent_and_backend() {
        let mut a = app(&[State::Running]);
        assert_eq!(
            a.key(key(KeyCode::Char('y'))),
            None,
            "the inbox has no focus yet"
        );
        a.key(key(KeyCode::Tab));
        assert_eq!(a.key(key(KeyCode::Char('y'))), None, "shown whole first");
        assert!(matches!(a.prompt, Some(Prompt::ConfirmApproval { .. })));
        assert_eq!(
            a.key(key(KeyCode::Char('y'))),
            Some(Action::Approve {
                request: "b-0/r-000001".into(),
                token_ref: None
            })
        );
        a.key(key(KeyCode::Char('d')));
        for c in "no".chars() {
            a.key(key(KeyCode::Char(c)));
        }
        assert_eq!(
            a.key(key(KeyCode::Enter)),
            Some(Action::Deny {
                request: "b-0/r-000001".into(),
                reason: Some("no".into())
            })
        );
        a.key(key(KeyCode::Char('n')));
        a.key(key(KeyCode::Enter));
        a.key(key(KeyCode::Down));
        assert_eq!(
            a.key(key(KeyCode::Enter)),
            Some(Action::New {
                agent: "b".into(),
                backend: "native".into()
            })
        );
        a.key(key(KeyCode::Char('q')));
        assert!(a.quit);
    }

    #[test]
    fn a_request_filed_meanwhile_never_slides_under_the_selection() {
        let mut a = app(&[State::Running]);
        a.key(key(KeyCode::Tab));
        let mut next = a.snapshot.clone();
        next.requests.insert(
            0,
            RequestView {
                id: "r-000000".into(),
                identity: "b-0".into(),
                kind: "image".into(),
                summary: "image change (1 line)".into(),
                reason: "harmless".into(),
                created: 0,
                detail: vec!["USER root".into()],
            },
        );
        a.refresh(next, SystemTime::UNIX_EPOCH);
        a.key(key(KeyCode::Char('y')));
        assert_eq!(
            a.key(key(KeyCode::Char('y'))),
            Some(Action::Approve {
                request: "b-0/r-000001".into(),
                token_ref: None
            }),
            "the request that was selected, not the one that arrived"
        );
    }
}
