//! `bottle doctor`: every backend of this build, whether it can run
//! bottles here, and what to install or change where it cannot.

use bottle_backend::{Availability, Backend};
use serde::Serialize;

use crate::cli::Format;
use crate::commands::inventory::backends;
use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, exit};

/// One line of `doctor --format json`: a stable contract.
#[derive(Debug, Serialize)]
struct Verdict {
    backend: &'static str,
    usable: bool,
    /// What it runs on, when usable; what is missing, when not.
    detail: String,
    /// What to install or change, when not usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

pub fn run(format: Format, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let backends = backends(&global)?;
    let verdicts: Vec<Verdict> = super::runtime()?.block_on(async {
        let mut out = Vec::new();
        for backend in &backends {
            out.push(match backend.availability().await {
                Availability::Usable { detail } => Verdict {
                    backend: backend.name().as_str(),
                    usable: true,
                    detail,
                    fix: None,
                },
                Availability::Unusable { reason, fix } => Verdict {
                    backend: backend.name().as_str(),
                    usable: false,
                    detail: reason,
                    fix: Some(fix),
                },
            });
        }
        out
    });
    match format {
        Format::Json => {
            printer.data(&serde_json::to_string_pretty(&verdicts).map_err(anyhow::Error::from)?)
        }
        Format::Text => {
            let mut out = String::new();
            for v in &verdicts {
                out += &format!(
                    "{:<8} {:<10} {}\n",
                    v.backend,
                    if v.usable { "usable" } else { "not usable" },
                    v.detail
                );
                if let Some(fix) = &v.fix {
                    out += &format!("{:<8} {:<10} fix: {fix}\n", "", "");
                }
            }
            printer.data(&out);
        }
    }
    // Usable when any backend is: a start would find one.
    Ok(if verdicts.iter().any(|v| v.usable) {
        0
    } else {
        exit::UNAVAILABLE
    })
}
