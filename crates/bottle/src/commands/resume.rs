//! `bottle resume IDENTITY [-y] [-- CMD…]`: the same bottle again — its
//! volumes (workspace and home), its CA, its state — with the plan rebuilt
//! from the manifest as it is now.

use anyhow::anyhow;
use bottle_manifest::load;
use bottle_manifest::plan::{self, PlanInput};

use bottle_backend::registry::Choice;

use crate::cli::ResumeArgs;
use crate::printer::Printer;
use crate::settings::{Global, Start};
use crate::{Failure, exit};

pub fn run(args: ResumeArgs, printer: &Printer) -> Result<i32, Failure> {
    let global = Global::resolve()?;
    let record = super::bottle_record(&global, &args.identity)?;
    if record.is_live() {
        return Err(Failure::new(
            exit::NOT_CONFIRMED,
            anyhow!(
                "{} is running already (its launcher is alive)",
                record.identity
            ),
        ));
    }
    let meta = record.metadata.as_ref().map_err(|e| {
        Failure::new(
            exit::CONFIG,
            anyhow!("{} cannot be resumed: {e}", record.identity),
        )
    })?;
    let agent = meta.agent.as_str();
    let manifest_path = &meta.manifest;
    let path = manifest_path.clone();
    // The manifest is read again: a change since then that no longer
    // validates is an error naming the field.
    let manifest = load::load(&path)?;
    let checked = super::manifest::check(&manifest, &path, &global)?;
    // What a person approved for this bottle comes back with it.
    let grants = bottle_manifest::provision::Grants::load(&record.dir.grants())
        .map_err(|e| Failure::new(exit::CONFIG, anyhow!("the bottle's approvals: {e}")))?;
    let settings = Start::resolve(None, &global)?;
    // A bottle comes back where it ran: its data lives there.
    let backend = super::recorded_backend(&record)?;
    let choice = Choice {
        name: backend,
        why: "where the bottle ran".to_owned(),
    };
    // Remote Control's account, read on the host: ids, no token.
    let account = args
        .remote_control
        .then(|| global.claude_account())
        .transpose()
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    let plan = plan::plan(PlanInput {
        manifest_path: &path,
        manifest: &manifest,
        checked: &checked,
        agent,
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        backend: choice.name.as_str(),
        backend_reason: &choice.why,
        base_image: &settings.base_image,
        remove_on_exit: false,
        cwd: None,
        include: &[],
        identity: Some(record.identity.clone()),
        state_root: &global.state_root,
        host_env: &|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
        home: &global.home,
        grants: &grants,
        // `claude …`, the agent's or one given, continues its
        // conversation when there is one.
        continue_conversation: !args.new_session,
        remote_control: account.as_ref(),
    })?;
    super::start::launch(
        &plan,
        &settings,
        &choice,
        None,
        args.yes,
        super::start::Detach::from(&args.detach),
        printer,
    )
}
