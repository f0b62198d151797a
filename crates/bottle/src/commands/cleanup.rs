//! `bottle cleanup [--dry-run] [-y]` and `bottle rm IDENTITY`: remove what
//! bot-bottle owns that no live launcher holds. Only resources carrying
//! bot-bottle's labels are ever touched.

use std::io::{BufRead, IsTerminal};

use anyhow::anyhow;
use bottle_backend::docker::{self, Scope};

use crate::commands::inventory::{Bottle, gather};
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    runtime.block_on(async {
        let (bottles, trouble) = gather(&global).await;
        if let Some(err) = trouble {
            return Err(Failure::from(err));
        }
        let engine = docker::connect().await.ok();
        let mut images = Vec::new();
        if only.is_none()
            && let Some(engine) = &engine
        {
            images = docker::inventory::dangling_images(engine).await.unwrap_or_default();
        }
        let targets: Vec<&Bottle> = match only {
            Some(id) => {
                let Some(bottle) = bottles.iter().find(|b| b.identity == id) else {
                    let known: Vec<&str> = bottles.iter().map(|b| b.identity.as_str()).collect();
                    return Err(Failure::new(
                        exit::CONFIG,
                        anyhow!(
                            "no bottle {id:?}: {}",
                            if known.is_empty() { "there are none".to_owned() } else { format!("known: {}", known.join(", ")) }
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
                        None => bottles.iter().filter(|b| !b.is_live() && !b.is_foreign()).collect(),
        };
        let mut lines = Vec::new();
        for b in &targets {
            let mut parts = Vec::new();
            if let Some(d) = &b.docker {
                parts.extend(d.containers.iter().map(|c| format!("container {}", c.name)));
                parts.extend(d.networks.iter().map(|n| format!("network {n}")));
                parts.extend(d.volumes.iter().map(|v| format!("volume {v}")));
            }
            if let Some(tag) = own_image(b) {
                parts.push(format!("image {tag}"));
            }
            if let Some(r) = &b.record {
                parts.push(format!("state {}", r.dir.root.display()));
            }
            lines.push(format!("  {} ({}): {}", b.identity, b.state(), parts.join(", ")));
        }
        if !images.is_empty() {
            lines.push(format!("  {} unused image(s) bot-bottle built", images.len()));
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
                    anyhow!("not removed: stdin is not a terminal; pass -y to remove without confirmation"),
                ));
            }
            printer.raw("Remove these? [y/N] ");
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer).map_err(anyhow::Error::from)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                return Err(Failure::new(exit::NOT_CONFIRMED, anyhow!("not removed")));
            }
        }
        for b in &targets {
            if let Some(engine) = &engine {
                                let scope = Scope {
                    networks: true,
                    volumes: true,
                    launcher: None,
                };
                docker::teardown(engine, &b.identity, scope).await?;
                if let Some(tag) = own_image(b) {
                    let _ = docker::remove_image(engine, &tag).await;
                }
            }
            if let Some(r) = &b.record {
                r.dir.remove()?;
            }
        }
        if let Some(engine) = &engine {
            for image in &images {
                let _ = docker::remove_image(engine, image).await;
            }
        }
        printer.step(&format!("removed {} bottle(s)", targets.len()));
        Ok(0)
    })
}

/// The bottle's own image (from approved image changes), if it has one.
fn own_image(bottle: &Bottle) -> Option<String> {
    let record = bottle.record.as_ref()?;
    bottle_manifest::provision::Grants::load(&record.dir.grants())
        .ok()?
        .image
        .map(|i| i.tag)
}
