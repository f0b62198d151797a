//! bot-bottle's manifest (DESIGN.md §3) and the plan built from it.
//!
//! [`load`] finds and parses a manifest, [`validate::check`] checks what it
//! means, and [`plan::plan`] freezes what starting one agent will do.
#![forbid(unsafe_code)]

pub mod error;
pub mod fragment;
pub mod host;
pub mod load;
pub mod manifest;
pub mod plan;
pub mod provision;
pub mod text;
pub mod validate;

pub use error::{ManifestError, Problem};
pub use manifest::Manifest;

/// The manifest's JSON Schema, generated from the types.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Manifest)).unwrap_or_default()
}
