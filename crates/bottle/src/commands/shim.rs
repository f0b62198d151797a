//! `bottle shim`: pid 1 in the agent's sandbox.

use anyhow::anyhow;

use crate::{Failure, exit};

pub fn run(args: bottle_shim::ShimArgs) -> Result<i32, Failure> {
    Ok(bottle_shim::run(args.into()))
}

/// `bottle native-sandbox`: becomes bubblewrap as the agent's host uid;
/// returns only when it could not.
pub fn native_sandbox(
    args: &bottle_backend::native::unprivileged::StageArgs,
) -> Result<i32, Failure> {
    let error = bottle_backend::native::unprivileged::run(args);
    Err(Failure::new(
        exit::SOFTWARE,
        anyhow!("starting the sandbox as host uid {}: {error}", args.id),
    ))
}

/// `--user UID:GID`, parsed.
pub fn user(spec: &str) -> Result<(u32, u32), Failure> {
    bottle_shim::parse_user(spec)
        .ok_or_else(|| Failure::new(exit::USAGE, anyhow!("--user {spec:?}: expected UID:GID")))
}

/// `bottle prepare-trust`: at image build time, as root.
pub fn prepare_trust() -> Result<i32, Failure> {
    let prepared = bottle_shim::trust::prepare()
        .map_err(|e| Failure::new(exit::SOFTWARE, anyhow!("preparing the trust stores: {e}")))?;
    eprintln!(
        "bot-bottle: trust stores prepared for a read-only root: {}",
        prepared.join(", ")
    );
    Ok(0)
}

/// `bottle build-helper idle|mkdir PATH`: what an image build's container
/// needs whatever its image has (no `sleep`, no `mkdir`).
pub fn build_helper(action: &str, args: &[String]) -> Result<i32, Failure> {
    match (action, args) {
        ("idle", _) => loop {
            std::thread::park();
        },
        ("mkdir", [path]) => {
            std::fs::create_dir_all(path)
                .map_err(|e| Failure::new(exit::SOFTWARE, anyhow!("mkdir {path}: {e}")))?;
            Ok(0)
        }
        _ => Err(Failure::new(
            exit::USAGE,
            anyhow!("build-helper idle | build-helper mkdir PATH"),
        )),
    }
}
