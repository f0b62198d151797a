//! The audit log: one JSON object per line for every decision the gate
//! makes. It never holds a secret: callers pass hosts, rules and paths with
//! their query values removed.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Map, Value};

/// Appends decision records to the bottle's audit log.
pub struct Audit {
    file: Mutex<fs_err::File>,
}

impl Audit {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Audit {
            file: Mutex::new(file),
        })
    }

    /// Writes one record: `ts`, `role`, `event` and the given fields. A
    /// failed write is logged, not fatal: refusing traffic because the disk
    /// is full would be a denial of service the agent could cause.
    pub fn record(&self, role: &str, event: &str, fields: Map<String, Value>) {
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
        // One write per line on an O_APPEND file keeps lines whole.
        let mut file = match self.file.lock() {
            Ok(file) => file,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(err) = file.write_all(line.as_bytes()) {
            tracing::error!(%err, "cannot write the audit log");
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
}
