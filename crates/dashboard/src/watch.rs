//! What wakes the dashboard: inotify on the state root and the bottles'
//! directories, and the signals that must restore the terminal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::signal::{SigSet, Signal};

use crate::Changed;

/// Blocks SIGTERM, SIGHUP and SIGINT in this thread (and so in every
/// thread started after) and waits for them on a thread of its own, which
/// restores the terminal and ends the process (128 + the signal).
pub fn signals() -> std::io::Result<()> {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        set.add(signal);
    }
    set.thread_block().map_err(std::io::Error::from)?;
    std::thread::spawn(move || {
        if let Ok(signal) = set.wait() {
            // The loop may be stuck where the terminal went (a hang-up
            // leaves its input at end of file): the terminal is restored
            // and the process ends from here, as a signal would end it.
            ratatui::restore();
            std::process::exit(128 + signal as i32);
        }
    });
    Ok(())
}

/// Watches directories; a change in one sends [`Changed`].
pub struct Watcher {
    inotify: Arc<Inotify>,
    watched: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>>,
}

impl Watcher {
    pub fn new(tx: Sender<Changed>) -> std::io::Result<Watcher> {
        let inotify = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?);
        let watched: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>> = Arc::default();
        let (reader, known) = (Arc::clone(&inotify), Arc::clone(&watched));
        std::thread::spawn(move || {
            while let Ok(events) = reader.read_events() {
                // A directory that went away may come back: watched anew.
                if let Ok(mut known) = known.lock() {
                    for e in events
                        .iter()
                        .filter(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                    {
                        known.remove(&e.wd);
                    }
                }
                // Only the audit log's appends change nothing but the
                // tail and the last refusal: everything else may add or
                // remove a bottle or change its state.
                let structural = events.iter().any(|e| {
                    e.name
                        .as_ref()
                        .is_none_or(|n| n.to_string_lossy() != "audit.jsonl")
                });
                if tx.send(Changed { structural }).is_err() {
                    return;
                }
            }
        });
        Ok(Watcher { inotify, watched })
    }

    /// Watches `dirs` (besides those watched already; a directory that
    /// went away drops out by itself).
    pub fn watch(&self, dirs: &[PathBuf]) {
        let Ok(mut watched) = self.watched.lock() else {
            return;
        };
        for dir in dirs {
            if watched.values().any(|d| d == dir) {
                continue;
            }
            let flags = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE_SELF;
            if let Ok(wd) = self.inotify.add_watch(dir.as_path(), flags) {
                watched.insert(wd, dir.clone());
            }
        }
    }
}
