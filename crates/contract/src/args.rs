//! The gate's command line: one typed value, parsed by `bottle gate` and
//! built by every backend with [`GateArgs::to_args`].

use std::path::PathBuf;

/// `bottle gate …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct GateArgs {
    /// The gate's configuration file.
    #[arg(long)]
    pub config: PathBuf,
}

impl GateArgs {
    /// The arguments after `bottle gate`, which parse back to `self`.
    pub fn to_args(&self) -> Vec<String> {
        vec!["--config".to_owned(), self.config.display().to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: GateArgs,
    }

    #[test]
    fn what_a_backend_builds_the_gate_parses_back() {
        let args = GateArgs {
            config: "/etc/bottle/gate.json".into(),
        };
        let argv = std::iter::once("gate".to_owned()).chain(args.to_args());
        let parsed = Wrap::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.args, args);
    }
}
