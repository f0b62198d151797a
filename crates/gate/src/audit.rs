//! The audit log: one JSON object per line for every decision the gate
//! makes. It never holds a secret: callers pass hosts, rules, header names
//! and paths with their query values removed.
//!
//! Lines are queued in memory and a writer thread appends them every few
//! milliseconds, so a line reaches the file promptly without a system call
//! or a thread wake-up per request under load. Dropping the log writes
//! what is queued.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// How often queued lines are written.
const FLUSH_EVERY: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    closed: bool,
}

/// Appends decision records to the bottle's audit log.
pub struct Audit {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Audit {
    /// Opens (creating) the log for appending and starts its writer.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let shared = Arc::clone(&queue);
        let writer = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_lines(file, &shared))?;
        Ok(Audit {
            queue,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one record: `ts`, `role`, `event` and the given fields. A
    /// failed write is logged, not fatal: refusing traffic because the disk
    /// is full would be a denial of service the agent could cause.
    pub fn record(&self, role: &str, event: &str, fields: Map<String, Value>) {
        let line = line(role, event, fields);
        let mut queue = lock(&self.queue.0);
        queue.lines.extend_from_slice(line.as_bytes());
    }
}

impl Audit {
    /// Writes what is queued and stops the writer; later records are lost.
    pub fn close(&self) {
        lock(&self.queue.0).closed = true;
        self.queue.1.notify_one();
        let writer = match self.writer.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.close();
    }
}

/// One record as a line: `ts`, `role`, `event`, then `fields`.
fn line(role: &str, event: &str, fields: Map<String, Value>) -> String {
    let mut record = Map::new();
    record.insert(
        "ts".into(),
        humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .into(),
    );
    record.insert("role".into(), role.into());
    record.insert("event".into(), event.into());
    record.extend(fields);
    let mut line = Value::Object(record).to_string();
    line.push('\n');
    line
}

/// Appends one record right away, from a process other than the gate's
/// (the git hook). One `write` on an `O_APPEND` file keeps it whole.
pub fn append_now(
    path: &Path,
    role: &str,
    event: &str,
    fields: Map<String, Value>,
) -> std::io::Result<()> {
    let mut file = fs_err::OpenOptions::new().append(true).open(path)?;
    file.write_all(line(role, event, fields).as_bytes())
}

fn lock(mutex: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn write_lines(mut file: fs_err::File, queue: &(Mutex<Queue>, Condvar)) {
    loop {
        let (lines, closed) = {
            let guard = lock(&queue.0);
            let (mut guard, _) = match queue.1.wait_timeout(guard, FLUSH_EVERY) {
                Ok(pair) => pair,
                Err(poisoned) => poisoned.into_inner(),
            };
            (std::mem::take(&mut guard.lines), guard.closed)
        };
        if !lines.is_empty()
            && let Err(err) = file.write_all(&lines)
        {
            tracing::error!(%err, "cannot write the audit log");
        }
        if closed {
            return;
        }
    }
}

/// A path with every query value removed (`/a?x=1&y` → `/a?x=&y`): what
/// the agent asked for, without what it may have smuggled in values.
pub fn redact_query(path_and_query: &str) -> String {
    match path_and_query.split_once('?') {
        None => path_and_query.to_owned(),
        Some((path, query)) => {
            let keys: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) => format!("{key}="),
                    None => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", keys.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_removed() {
        assert_eq!(redact_query("/a"), "/a");
        assert_eq!(redact_query("/a?token=s3cr3t&x"), "/a?token=&x");
    }

    #[test]
    fn records_reach_the_file() {
        let dir = std::env::temp_dir().join(format!("bb-audit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let audit = Audit::open(&path).unwrap_or_else(|e| panic!("{e}"));
        audit.record("egress", "request", Map::new());
        drop(audit);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.contains("\"event\":\"request\""), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
