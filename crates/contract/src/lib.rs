//! The contract between bot-bottle's processes, owned by neither side's
//! code: the gate's configuration file and command line and its socket
//! names (which the backends write and the gate reads), the atomic JSON
//! writes both use, and the minting of a bottle's CA (which the launcher
//! does, and whose certificate the gate signs with). The backends depend
//! on this crate, not on the gate's server.
#![forbid(unsafe_code)]

mod args;
pub mod ca;
pub mod config;
pub mod control;
pub mod files;

pub use args::GateArgs;
