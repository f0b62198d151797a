//! `bottle requests [IDENTITY]`: what agents asked for through the
//! supervise tools, waiting for a person. Everything shown came from an
//! agent, so it is printed with control characters escaped.

use anyhow::anyhow;
use bottle_backend::state::{self, Record};
use bottle_gate::supervise::requests::{Ask, Request, State, Store, printable};

use crate::cli::Format;
use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, exit};

pub fn run(
    identity: Option<&str>,
    all: bool,
    format: Format,
    printer: &Printer,
) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let records = state::records(&global.state_root);
    if let Some(id) = identity
        && !records.iter().any(|r| r.identity == id)
    {
        return Err(Failure::new(
            exit::CONFIG,
            anyhow!("no bottle {id:?} in {}", global.state_root.display()),
        ));
    }
    let mut requests = Vec::new();
    for record in records
        .iter()
        .filter(|r| identity.is_none_or(|id| r.identity == id))
    {
        let listed = store(record).list().map_err(anyhow::Error::from)?;
        requests.extend(
            listed
                .into_iter()
                .filter(|r| all || r.state == State::Pending),
        );
    }
    requests.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    match format {
        Format::Json => {
            printer.data(&serde_json::to_string_pretty(&requests).map_err(anyhow::Error::from)?)
        }
        Format::Text if requests.is_empty() => printer.step(if all {
            "no requests"
        } else {
            "no pending requests"
        }),
        Format::Text => printer.data(&render(&requests)),
    }
    Ok(0)
}

/// The requests of one bottle.
pub fn store(record: &Record) -> Store {
    bottle_decide::store(record)
}

/// A person-readable listing: one block per request.
fn render(requests: &[Request]) -> String {
    let mut out = String::new();
    for r in requests {
        out.push_str(&format!(
            "{}  {}  {}  {}\n",
            r.id,
            r.identity,
            r.state.as_str(),
            printable(&r.ask.summary(), false)
        ));
        out.push_str(&format!("    reason: {}\n", printable(&r.reason, false)));
        if let Ask::Image { fragment } = &r.ask {
            // Exactly as it will be built: each step, its lines joined,
            // heredocs read, every control character escaped.
            for line in bottle_manifest::fragment::render_text(fragment).lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
        if let Some(outcome) = r.outcome.as_ref().filter(|_| r.state != State::Pending) {
            let first = outcome.lines().next().unwrap_or_default();
            out.push_str(&format!("    outcome: {}\n", printable(first, false)));
        }
        if r.state == State::Pending {
            let how = match r.ask {
                Ask::Route { .. } => format!("bottle approve {} --token-ref VAR", r.id),
                _ => format!("bottle approve {}", r.id),
            };
            out.push_str(&format!(
                "    decide: {how}  |  bottle deny {} --reason …\n",
                r.id
            ));
        }
    }
    out
}
