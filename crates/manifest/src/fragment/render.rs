//! How the steps of a fragment are shown to the person who approves them.

use std::fmt::Write as _;

use super::{Command, Instruction, Op, parse};

/// `text` as a person reads it (see [`crate::text::printable`]).
pub fn visible(text: &str, multiline: bool) -> String {
    crate::text::printable(text, multiline)
}

/// The steps as a person reads them before approving: numbered, each with
/// the lines it came from, and the exact command a `RUN` runs — joined
/// continuations, heredoc bodies, everything escaped.
pub fn render(steps: &[Instruction]) -> String {
    let mut out = String::new();
    for (n, step) in steps.iter().enumerate() {
        let lines = if step.lines.0 == step.lines.1 {
            format!("line {}", step.lines.0)
        } else {
            format!("lines {}-{} joined", step.lines.0, step.lines.1)
        };
        let quoted = |argv: &[String]| {
            argv.iter()
                .map(|a| format!("{:?}", visible(a, false)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match &step.op {
            Op::Run(Command::Shell(script)) => {
                let _ = writeln!(out, "step {} ({lines}): RUN with the shell:", n + 1);
                for line in visible(script, true).split('\n') {
                    let _ = writeln!(out, "    | {line}");
                }
            }
            Op::Run(Command::Exec(argv)) => {
                let _ = writeln!(out, "step {} ({lines}): RUN {}", n + 1, quoted(argv));
            }
            Op::Env(pairs) | Op::Label(pairs) => {
                let word = if matches!(step.op, Op::Env(_)) {
                    "ENV"
                } else {
                    "LABEL"
                };
                let shown: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={:?}", visible(k, false), visible(v, false)))
                    .collect();
                let _ = writeln!(out, "step {} ({lines}): {word} {}", n + 1, shown.join(" "));
            }
            Op::Arg(name, default) => {
                let _ = writeln!(
                    out,
                    "step {} ({lines}): ARG {}{}",
                    n + 1,
                    visible(name, false),
                    default
                        .as_ref()
                        .map(|d| format!("={:?}", visible(d, false)))
                        .unwrap_or_default()
                );
            }
            Op::Workdir(path) => {
                let _ = writeln!(
                    out,
                    "step {} ({lines}): WORKDIR {:?}",
                    n + 1,
                    visible(path, false)
                );
            }
            Op::User(user) => {
                let _ = writeln!(
                    out,
                    "step {} ({lines}): USER {:?}",
                    n + 1,
                    visible(user, false)
                );
            }
            Op::Shell(argv) => {
                let _ = writeln!(out, "step {} ({lines}): SHELL {}", n + 1, quoted(argv));
            }
        }
    }
    out
}

/// [`render`] of `text`, or the text escaped with why it does not parse.
pub fn render_text(text: &str) -> String {
    match parse(text) {
        Ok(steps) => render(&steps),
        Err(err) => {
            let mut out = format!("does not parse, so it cannot be built: {err}\n");
            for line in visible(text, true).split('\n') {
                let _ = writeln!(out, "    | {line}");
            }
            out
        }
    }
}
