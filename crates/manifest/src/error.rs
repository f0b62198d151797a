//! What can be wrong with a manifest, said so a person can fix it.

use std::fmt;
use std::path::PathBuf;

/// One problem found by validation: where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, as `bottles.dev.allow[2]`.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Errors of finding, reading, parsing and validating a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "no manifest found (looked for {}): pass --manifest PATH, set BOTTLE_MANIFEST, or create ./bottle.json",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound { searched: Vec<PathBuf> },
    #[error("manifest {} does not exist: check the path given with --manifest or BOTTLE_MANIFEST", .path.display())]
    Missing { path: PathBuf },
    #[error("cannot read manifest {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {}{message}", .path.display(), field_prefix(.field))]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        /// Field path where the error was found; empty at the top.
        field: String,
        message: String,
    },
    #[error(
        "{} is not a valid manifest ({} problem{}):\n{}",
        .path.display(),
        .problems.len(),
        if .problems.len() == 1 { "" } else { "s" },
        .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("agent {name:?} is not in {}: {}", .path.display(), known_list(.known))]
    UnknownAgent {
        path: PathBuf,
        name: String,
        known: Vec<String>,
    },
    #[error("agent {agent:?}: {message}")]
    Start { agent: String, message: String },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "it defines no agents; add one under \"agents\"".to_owned()
    } else {
        format!("known agents are {}", known.join(", "))
    }
}
