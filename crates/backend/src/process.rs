//! Telling whether a launcher still runs, without being fooled by a
//! recycled pid: a process is named by its pid and its start time.

use std::fmt;
use std::str::FromStr;

/// A process: pid and start time (clock ticks since boot, from
/// `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launcher {
    pub pid: u32,
    pub start: u64,
}

impl Launcher {
    /// This process.
    pub fn current() -> std::io::Result<Launcher> {
        let pid = std::process::id();
        let start =
            start_time(pid).ok_or_else(|| std::io::Error::other("cannot read /proc/self/stat"))?;
        Ok(Launcher { pid, start })
    }

    /// Process `pid`, if it runs.
    pub fn of(pid: u32) -> Option<Launcher> {
        Some(Launcher {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether the same process still runs (a zombie counts as gone).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start) && !is_zombie(self.pid)
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pid, self.start)
    }
}

impl FromStr for Launcher {
    type Err = String;

    fn from_str(s: &str) -> Result<Launcher, String> {
        let (pid, start) = s.split_once(':').ok_or("expected PID:START")?;
        Ok(Launcher {
            pid: pid.parse().map_err(|_| "bad pid")?,
            start: start.parse().map_err(|_| "bad start time")?,
        })
    }
}

/// Fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn start_time(pid: u32) -> Option<u64> {
    // Field 22 of stat is the start time; after the name it is index 19.
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_round_trips() {
        let me = Launcher::current().unwrap_or_else(|e| panic!("{e}"));
        assert!(me.is_alive());
        assert_eq!(me.to_string().parse::<Launcher>(), Ok(me));
        let other = Launcher {
            start: me.start + 1,
            ..me
        };
        assert!(!other.is_alive(), "a recycled pid is another process");
    }
}
