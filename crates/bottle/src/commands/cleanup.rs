//! `bottle cleanup [--dry-run] [-y]` and `bottle rm IDENTITY`: remove what
//! bot-bottle owns that no live launcher holds, on every usable backend.
//! Only what carries bot-bottle's marks is ever touched.

use std::io::{BufRead, IsTerminal};

use anyhow::anyhow;
use bottle_backend::{Backend, Scope};

use crate::commands::inventory::{Bottle, backends, gather};
use crate::printer::Printer;
use crate::settings::Global;
use crate::{Failure, exit};

/// `bottle cleanup`.
pub fn cleanup(dry_run: bool, yes: bool, printer: &Printer) -> Result<i32, Failure> {
    run(None, dry_run, yes, printer)
}

/// `bottle rm IDENTITY`.
pub fn rm(identity: &str, yes: bool, printer: &Printer) -> Result<i32, Failure> {
    run(Some(identity), false, yes, printer)
}

fn run(only: Option<&str>, dry_run: bool, yes: bool, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let backends = backends(&global)?;
    super::runtime()?.block_on(run_on(&backends, &global, only, dry_run, yes, printer))
}

/// `cleanup` (every bottle no live launcher holds) or `rm` (`only`) on
/// `backends`.
async fn run_on<B: Backend>(
    backends: &[B],
    global: &Global,
    only: Option<&str>,
    dry_run: bool,
    yes: bool,
    printer: &Printer,
) -> Result<i32, Failure> {
    {
        let (bottles, mut trouble) = gather(global, backends).await;
        if !trouble.is_empty() {
            return Err(Failure::from(trouble.remove(0)));
        }
        let mut leftovers = Vec::new();
        if only.is_none() {
            for backend in backends {
                leftovers.push(backend.leftovers().await);
            }
        }
        let targets: Vec<&Bottle> = match only {
            Some(id) => {
                let Some(bottle) = bottles.iter().find(|b| b.identity == id) else {
                    let known: Vec<&str> = bottles.iter().map(|b| b.identity.as_str()).collect();
                    return Err(Failure::new(
                        exit::CONFIG,
                        anyhow!(
                            "no bottle {id:?}: {}",
                            if known.is_empty() {
                                "there are none".to_owned()
                            } else {
                                format!("known: {}", known.join(", "))
                            }
                        ),
                    ));
                };
                if bottle.is_live() {
                    return Err(Failure::new(
                        exit::NOT_CONFIRMED,
                        anyhow!("{id} is running (its launcher is alive): stop it first"),
                    ));
                }
                vec![bottle]
            }
            None => bottles
                .iter()
                .filter(|b| !b.is_live() && !b.is_foreign())
                .collect(),
        };
        let mut lines = Vec::new();
        for b in &targets {
            let mut parts: Vec<String> = b
                .found
                .iter()
                .flat_map(|f| &f.parts)
                .map(|p| format!("{} {}", p.kind, p.name))
                .collect();
            if let Some(tag) = own_image(b) {
                parts.push(format!("image {tag}"));
            }
            if let Some(r) = &b.record {
                parts.push(format!("state {}", r.dir.root.display()));
            }
            let backend = b.backend().map_or("-", |n| n.as_str());
            lines.push(format!(
                "  {} ({}, {backend}): {}",
                b.identity,
                b.state(),
                parts.join(", ")
            ));
        }
        let unused: usize = leftovers.iter().map(Vec::len).sum();
        if unused > 0 {
            lines.push(format!(
                "  {unused} unused thing(s) bot-bottle made: {}",
                leftovers.concat().join(", ")
            ));
        }
        if lines.is_empty() {
            printer.step("nothing to clean up");
            return Ok(0);
        }
        printer.data(&format!("would remove:\n{}", lines.join("\n")));
        if dry_run {
            return Ok(0);
        }
        if !yes {
            if !std::io::stdin().is_terminal() {
                return Err(Failure::new(
                    exit::NOT_CONFIRMED,
                    anyhow!(
                        "not removed: stdin is not a terminal; pass -y to remove without confirmation"
                    ),
                ));
            }
            printer.raw("Remove these? [y/N] ");
            let mut answer = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .map_err(anyhow::Error::from)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                return Err(Failure::new(exit::NOT_CONFIRMED, anyhow!("not removed")));
            }
        }
        let scope = Scope {
            network: true,
            data: true,
            launcher: None,
        };
        // Asked once, not once per bottle (a native probe starts processes).
        let mut usable = Vec::new();
        for backend in backends {
            usable.push(backend.availability().await.is_usable());
        }
        for b in &targets {
            let dir = b.record.as_ref().map(|r| r.dir.clone()).unwrap_or_else(|| {
                bottle_backend::state::BottleDir::new(global.state_root.join(&b.identity))
            });
            // Every usable backend that holds anything of it, and the one
            // it is recorded on.
            for (backend, usable) in backends.iter().zip(&usable) {
                let holds = b.found.iter().any(|f| f.backend == backend.name())
                    || b.backend() == Some(backend.name());
                if holds && *usable {
                    backend.teardown(&b.identity, &dir, scope).await?;
                }
            }
            if let Some(r) = &b.record {
                r.dir.remove()?;
            }
        }
        for (backend, leftovers) in backends.iter().zip(&leftovers) {
            backend.remove_leftovers(leftovers).await;
        }
        printer.step(&format!("removed {} bottle(s)", targets.len()));
        Ok(0)
    }
}

/// The bottle's own image (from approved image changes), if it has one.
fn own_image(bottle: &Bottle) -> Option<String> {
    let record = bottle.record.as_ref()?;
    bottle_manifest::provision::Grants::load(&record.dir.grants())
        .ok()?
        .image
        .map(|i| i.tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::inventory::tests::{found, global, record};
    use bottle_backend::BackendName;
    use bottle_backend::fake::{Call, FakeBackend};
    use bottle_backend::process::Launcher;

    #[test]
    fn cleanup_removes_what_no_launcher_holds_on_every_backend_and_rm_refuses_a_live_one() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let global = global(root.path());
        let me = Launcher::current().unwrap_or_else(|e| panic!("{e}"));
        record(&global, "live-aaaaaa", Some(me));
        record(&global, "stopped-bbbbbb", None);
        let mut native = FakeBackend::new(BackendName::Native);
        native
            .found
            .insert("live-aaaaaa".into(), found(BackendName::Native, Some(me)));
        let docker = FakeBackend::new(BackendName::Docker);
        let backends = [native, docker];
        let printer = Printer::new(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));

        let refused = rt.block_on(run_on(
            &backends,
            &global,
            Some("live-aaaaaa"),
            false,
            true,
            &printer,
        ));
        assert!(matches!(refused, Err(f) if f.code == exit::NOT_CONFIRMED));

        let done = rt.block_on(run_on(&backends, &global, None, false, true, &printer));
        assert!(matches!(done, Ok(0)));
        let torn: Vec<Call> = backends
            .iter()
            .flat_map(|b| b.calls())
            .filter(|c| matches!(c, Call::Teardown { .. }))
            .collect();
        // The stopped bottle is recorded on docker: torn down there, with
        // its data; the live one is not touched.
        assert_eq!(
            torn,
            [Call::Teardown {
                identity: "stopped-bbbbbb".into(),
                network: true,
                data: true,
                launcher: false
            }]
        );
        assert!(!global.state_root.join("stopped-bbbbbb").exists());
        assert!(global.state_root.join("live-aaaaaa").exists());
    }
}
