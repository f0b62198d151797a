//! One module per command.

pub mod approve;
pub mod cleanup;
pub mod deny;
pub mod gate;
pub mod health;
pub mod inventory;
pub mod list;
pub mod manifest;
pub mod reap;
pub mod requests;
pub mod resume;
pub mod shim;
pub mod start;
