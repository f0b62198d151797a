//! `bottle list [active] [--format json]`.

use crate::Failure;
use crate::cli::Format;
use crate::commands::inventory::{backends, gather};
use crate::printer::Printer;
use crate::settings::Global;

pub fn run(active_only: bool, format: Format, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let backends = backends(&global)?;
    let (bottles, trouble) = super::runtime()?.block_on(gather(&global, &backends));
    for err in trouble {
        printer.step(&format!("warning: {err}"));
    }
    let rows: Vec<_> = bottles
        .iter()
        .filter(|b| !active_only || b.is_live())
        .map(|b| b.row())
        .collect();
    match format {
        Format::Json => {
            printer.data(&serde_json::to_string_pretty(&rows).map_err(anyhow::Error::from)?)
        }
        Format::Text => {
            let mut out = format!(
                "{:<22} {:<14} {:<8} {:<21} {:<10} {:<16} {}\n",
                "IDENTITY", "AGENT", "BACKEND", "STARTED", "STATE", "SERVICES", "GATE HEALTH"
            );
            for r in &rows {
                let health: Vec<String> = r
                    .health
                    .iter()
                    .map(|(role, h)| format!("{role}:{h}"))
                    .collect();
                out += &format!(
                    "{:<22} {:<14} {:<8} {:<21} {:<10} {:<16} {}\n",
                    r.identity,
                    r.agent.unwrap_or("-"),
                    r.backend,
                    r.started_at.unwrap_or("-"),
                    r.state,
                    if r.services.is_empty() {
                        "-".to_owned()
                    } else {
                        r.services.join(",")
                    },
                    if health.is_empty() {
                        "-".to_owned()
                    } else {
                        health.join(",")
                    }
                );
            }
            printer.data(&out);
        }
    }
    Ok(0)
}
