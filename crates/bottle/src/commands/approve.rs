//! `bottle approve ID [--token-ref VAR]` and `bottle deny ID [--reason …]`:
//! a person decides an agent's request. The deciding is
//! [`bottle_decide::decide`], the same path the dashboard takes; this is
//! its command line.

use anyhow::anyhow;
use bottle_backend::registry::AnyBackend;
use bottle_decide::{Approval, Context, DecideError, Kind, Verdict};

use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, exit};

/// `bottle approve`.
pub fn run(
    id: &str,
    token_ref: Option<&str>,
    scheme: &str,
    note: Option<&str>,
    printer: &Printer,
) -> Result<i32, Failure> {
    let verdict = Verdict::Approve(Approval {
        token_ref: token_ref.map(str::to_owned),
        scheme: scheme.to_owned(),
        note: note.map(str::to_owned),
    });
    decide(id, &verdict, printer)
}

/// `bottle deny`.
pub fn deny(id: &str, reason: Option<&str>, printer: &Printer) -> Result<i32, Failure> {
    let verdict = Verdict::Deny {
        reason: reason.map(str::to_owned),
    };
    decide(id, &verdict, printer)
}

fn decide(id: &str, verdict: &Verdict, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let env = |name: &str| std::env::var(name).ok();
    let ctx = Context {
        state_root: &global.state_root,
        by: bottle_decide::decider(),
        env: &env,
        reporter: printer,
    };
    let settings = crate::settings::Start::resolve(None, &global)?.backends;
    let decided = bottle_decide::decide(&ctx, id, verdict, |name| AnyBackend::new(name, &settings))
        .map_err(failure)?;
    printer.step(&decided.message);
    Ok(0)
}

/// A decision's failure as the command's exit.
fn failure(err: DecideError) -> Failure {
    let code = match err.kind {
        Kind::Usage => exit::USAGE,
        Kind::Config => exit::CONFIG,
        Kind::Request => exit::REQUEST,
        Kind::Software => exit::SOFTWARE,
    };
    Failure::new(code, anyhow!(err.message))
}
