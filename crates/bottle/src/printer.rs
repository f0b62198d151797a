//! The one place that writes for people (stderr) and for programs (stdout).

use std::io::{IsTerminal, Write};

use bottle_backend::Reporter;

/// Decides verbosity and colour; every message goes through it.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub verbose: bool,
    color: bool,
}

impl Printer {
    pub fn new(verbose: bool) -> Printer {
        let color =
            crate::env::read(crate::env::NO_COLOR).is_none() && std::io::stderr().is_terminal();
        Printer { verbose, color }
    }

    /// Data for programs: plans, JSON, lists.
    #[expect(
        clippy::print_stdout,
        reason = "the printer is the one writer of stdout"
    )]
    pub fn data(&self, text: &str) {
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
        let _ = std::io::stdout().flush();
    }

    /// Progress a person wants to see.
    pub fn step(&self, message: &str) {
        eprintln!("{} {message}", self.paint("bottle:", "1"));
    }

    /// An error, and what to do about it.
    pub fn error(&self, message: &str) {
        eprintln!("{} {message}", self.paint("bottle: error:", "1;31"));
    }

    /// Text shown as is on stderr (the preflight plan, the prompt).
    pub fn raw(&self, text: &str) {
        eprint!("{text}");
        let _ = std::io::stderr().flush();
    }

    fn paint(&self, text: &str, sgr: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

impl Reporter for Printer {
    fn step(&self, message: &str) {
        Printer::step(self, message);
    }

    fn detail(&self, message: &str) {
        if self.verbose {
            Printer::step(self, message);
        }
    }
}
