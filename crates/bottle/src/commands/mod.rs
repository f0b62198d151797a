//! One module per command.

pub mod gate;
pub mod manifest;
pub mod reap;
pub mod shim;
pub mod start;
