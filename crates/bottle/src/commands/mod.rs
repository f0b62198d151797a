//! One module per command.

pub mod cleanup;
pub mod gate;
pub mod inventory;
pub mod list;
pub mod manifest;
pub mod reap;
pub mod resume;
pub mod shim;
pub mod start;
