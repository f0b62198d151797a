//! `bottle dashboard`: every bottle at a glance, across backends — their
//! state and gates, what their gates decided, what their agents ask for —
//! and the verbs on them (attach, resume, stop, remove, cleanup, a new
//! bottle, approve and deny).
//!
//! This crate is the screen and its keys. What it shows and what its verbs
//! do come from a [`Source`], which the binary implements over the state
//! root, the backends and [`bottle_decide::decide`]. The screen is redrawn
//! when something changes: a key, a window size, a file under the state
//! root (inotify), or, every few seconds, the gates' health.
#![forbid(unsafe_code)]

pub mod app;
pub mod model;
pub mod view;
mod watch;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{self, Event, KeyEventKind};

pub use app::{Action, App};
pub use model::Snapshot;

/// What the dashboard reads and does.
pub trait Source {
    /// What is there now. `selected` is the bottle whose gate tail to
    /// read; `full` asks the backends again (else their last answer may
    /// serve: only files changed).
    fn snapshot(&mut self, selected: Option<&str>, full: bool) -> Snapshot;
    /// The directories whose changes mean the screen may be out of date.
    fn watched(&self) -> Vec<PathBuf>;
    /// Carries `action` out: what happened, or why not.
    fn perform(&mut self, action: &Action) -> Result<String, String>;
    /// Whether `action` runs on this terminal (an attach outside tmux):
    /// the dashboard hands the terminal over until it returns.
    fn needs_terminal(&self, action: &Action) -> bool;
}

/// How the dashboard runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Colours beyond bold and reverse (`NO_COLOR` turns them off).
    pub color: bool,
    /// How often the backends are asked again with nothing else changing
    /// (the gates' health).
    pub health_every: Duration,
}

/// What wakes the dashboard besides a key: a file changed;
/// `structural` when bottles may have come or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Changed {
    structural: bool,
}

/// Runs the dashboard on this terminal until the person quits. The
/// terminal is restored on quitting, on a panic and on SIGTERM or SIGHUP.
pub fn run(source: &mut dyn Source, options: Options) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel();
    // Signals first, before any thread exists: every thread inherits the
    // mask, and one thread waits for them.
    watch::signals()?;
    let watcher = watch::Watcher::new(tx)?;
    let mut app = App::new(
        source.snapshot(None, true),
        SystemTime::now(),
        options.color,
    );
    watcher.watch(&source.watched());
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, &mut app, source, &watcher, &rx, options);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    source: &mut dyn Source,
    watcher: &watch::Watcher,
    rx: &mpsc::Receiver<Changed>,
    options: Options,
) -> std::io::Result<()> {
    let mut last_full = Instant::now();
    let mut dirty = true;
    let mut shown_tail_of = app.selected_identity().map(str::to_owned);
    loop {
        if dirty {
            terminal.draw(|f| view::draw(f, app))?;
            dirty = false;
        }
        // Keys wait in the kernel; between them, what the watcher and
        // the signal thread sent is taken in.
        let mut refresh: Option<bool> = None;
        if event::poll(Duration::from_millis(50))? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    app.message = None;
                    if let Some(action) = app.key(key) {
                        app.message = Some(action.doing());
                        terminal.draw(|f| view::draw(f, app))?;
                        let handover = source.needs_terminal(&action);
                        if handover {
                            ratatui::restore();
                        }
                        let outcome = source.perform(&action);
                        if handover {
                            *terminal = ratatui::init();
                            terminal.clear()?;
                        }
                        app.message = Some(match outcome {
                            Ok(message) => message,
                            Err(message) => format!("error: {message}"),
                        });
                        refresh = Some(true);
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if app.quit {
            return Ok(());
        }
        for Changed { structural } in rx.try_iter() {
            refresh = Some(refresh.unwrap_or(false) || structural);
        }
        // Another bottle selected: its tail is read now.
        let selected = app.selected_identity().map(str::to_owned);
        if selected != shown_tail_of {
            refresh = Some(refresh.unwrap_or(false));
        }
        if refresh.is_none() && last_full.elapsed() >= options.health_every {
            refresh = Some(true);
        }
        if let Some(full) = refresh {
            let snapshot = source.snapshot(selected.as_deref(), full);
            if full {
                last_full = Instant::now();
                watcher.watch(&source.watched());
            }
            app.refresh(snapshot, SystemTime::now());
            shown_tail_of = app.selected_identity().map(str::to_owned);
            dirty = true;
        }
    }
}
