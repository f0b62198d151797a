//! One module per command.

pub mod approve;
pub mod cleanup;
pub mod deny;
pub mod doctor;
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

/// The single-threaded runtime a command runs its async work on.
pub fn runtime() -> Result<tokio::runtime::Runtime, crate::Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Failure::new(crate::exit::SOFTWARE, e))
}
