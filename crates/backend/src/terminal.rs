//! The launcher's terminal, which every backend hands to the agent the
//! same way: in raw mode, so keys (Ctrl-C included) reach the agent's own
//! terminal, which does its own line discipline.

use std::io::IsTerminal;

use nix::sys::termios::{self, SetArg, Termios};

/// Whether the launcher runs on a terminal (stdin and stdout both TTYs).
pub fn is_interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The launcher's terminal in raw mode, restored on drop: keys (Ctrl-C
/// included) go to the agent's TTY, which does its own line discipline.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
