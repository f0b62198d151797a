//! One module per command.

pub mod approve;
pub mod attach;
pub mod cleanup;
pub mod dashboard;
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
pub mod stop;
pub mod update_agent;

/// The single-threaded runtime a command runs its async work on.
pub fn runtime() -> Result<tokio::runtime::Runtime, crate::Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Failure::new(crate::exit::SOFTWARE, e))
}

/// The bottle `identity` of the state root, or an error naming the ones
/// there are.
pub fn bottle_record(
    global: &crate::settings::Global,
    identity: &str,
) -> Result<bottle_backend::state::Record, crate::Failure> {
    let records = bottle_backend::state::records(&global.state_root);
    let known: Vec<String> = records.iter().map(|r| r.identity.clone()).collect();
    records
        .into_iter()
        .find(|r| r.identity == identity)
        .ok_or_else(|| {
            crate::Failure::new(
                crate::exit::CONFIG,
                anyhow::anyhow!(
                    "no bottle {identity:?} in {}: {}",
                    global.state_root.display(),
                    if known.is_empty() {
                        "there are none".to_owned()
                    } else {
                        format!("known: {}", known.join(", "))
                    }
                ),
            )
        })
}

/// The backend a bottle's record names: where its data lives.
pub fn recorded_backend(
    record: &bottle_backend::state::Record,
) -> Result<bottle_backend::BackendName, crate::Failure> {
    let meta = record.metadata.as_ref().map_err(|e| {
        crate::Failure::new(
            crate::exit::CONFIG,
            anyhow::anyhow!("{}: {e}", record.identity),
        )
    })?;
    meta.backend.parse().map_err(|e: String| {
        crate::Failure::new(
            crate::exit::CONFIG,
            anyhow::anyhow!(
                "{}: metadata.json names its backend: {e}",
                record.dir.root.display()
            ),
        )
    })
}
