//! Landlock for the agent's command, where the kernel has it: the
//! filesystem an allowlist on top of the sandbox's own mounts. The system
//! directories may be read and run, never written; the workspace, the
//! agent's home, `/tmp` and the devices may be written; nothing else may be
//! written at all, whatever a mount's own flags say. Abstract Unix sockets
//! and signals are scoped to the sandbox where the kernel can (ABI 6).
//! On an older kernel the rules it knows apply and the rest is left to the
//! sandbox's mounts (best effort, as the crate's compatibility mode does).

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, RestrictionStatus, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

/// The newest Landlock ABI these rules use.
const TARGET: ABI = ABI::V6;

/// Read and run.
const READ_ONLY: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/etc", "/proc",
    "/run", "/sys",
];

/// Read, run and write.
const WRITABLE: &[&str] = &["/workspace", "/home/agent", "/tmp", "/dev"];

/// Applies the rules to this process and everything it starts.
pub fn landlock() -> Result<RestrictionStatus, String> {
    let all = AccessFs::from_all(TARGET);
    let read = AccessFs::from_read(TARGET);
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        // Listing a directory anywhere (what exists is what the sandbox
        // shows); reading files only where named.
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::ReadDir)))
        .and_then(|r| r.add_rules(path_beneath_rules(existing(READ_ONLY), read)))
        .and_then(|r| r.add_rules(path_beneath_rules(existing(WRITABLE), all)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| e.to_string())?;
    Ok(status)
}

fn existing(paths: &'static [&'static str]) -> impl Iterator<Item = &'static str> {
    paths
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(p).exists())
}

/// Whether the rules were enforced, for messages.
pub fn describe(status: &RestrictionStatus) -> &'static str {
    match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partly enforced (an older kernel)",
        RulesetStatus::NotEnforced => "not enforced (no Landlock in this kernel)",
    }
}
