//! `bottle manifest check [PATH]` and `bottle manifest schema`.

use bottle_manifest::validate::{self, Context};
use bottle_manifest::{ManifestError, load};

use crate::Failure;
use crate::cli::{ManifestArg, ManifestCommand};
use crate::printer::Printer;
use crate::settings::Global;

pub fn run(cmd: ManifestCommand, printer: &Printer) -> Result<i32, Failure> {
    match cmd {
        ManifestCommand::Schema => {
            let schema = serde_json::to_string_pretty(&bottle_manifest::schema())
                .map_err(anyhow::Error::from)?;
            printer.data(&schema);
            Ok(0)
        }
        ManifestCommand::Check { path } => {
            let global = Global::resolve()?;
            let path = global
                .manifest_lookup(&ManifestArg { manifest: path })
                .resolve()?;
            let manifest = load::load(&path)?;
            check(&manifest, &path, &global)?;
            printer.data(&format!(
                "{}: ok ({} agent{}, {} bottle{})",
                path.display(),
                manifest.agents.len(),
                plural(manifest.agents.len()),
                manifest.bottles.len(),
                plural(manifest.bottles.len()),
            ));
            Ok(0)
        }
    }
}

/// Validates `manifest` read from `path`.
pub fn check(
    manifest: &bottle_manifest::Manifest,
    path: &std::path::Path,
    global: &Global,
) -> Result<std::collections::BTreeMap<String, validate::CheckedBottle>, ManifestError> {
    let ctx = Context {
        home: global.home.clone(),
        base_dir: path
            .parent()
            .map(ToOwned::to_owned)
            .unwrap_or_else(|| global.cwd.clone()),
    };
    validate::check(manifest, &ctx).map_err(|problems| ManifestError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
