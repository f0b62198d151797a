//! `bottle deny ID [--reason …]`: the request is refused; the agent reads
//! the reason through `request_status`.

use bottle_gate::supervise::requests::{State, now};

use super::requests::{decider, ensure_pending, find};
use crate::Failure;
use crate::printer::Printer;
use crate::settings::Global;

pub fn run(id: &str, reason: Option<&str>, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let (record, store, mut request) = find(&global, id)?;
    let _lock = super::approve::lock(&record)?;
    let request_now = store.get(&request.id).map_err(anyhow::Error::from)?;
    if let Some(fresh) = request_now {
        request = fresh;
    }
    ensure_pending(&request)?;
    let by = decider();
    request.state = State::Denied;
    request.decided_by = Some(by.clone());
    request.decided = Some(now());
    request.outcome = Some(format!(
        "denied by {by}: {}",
        reason.unwrap_or("no reason given")
    ));
    store.save(&request).map_err(anyhow::Error::from)?;
    super::approve::audit(&record, "denied", &request, &by, reason, printer);
    printer.step(&format!(
        "denied {} ({}) for {}",
        request.id,
        request.ask.summary(),
        record.identity
    ));
    Ok(0)
}
