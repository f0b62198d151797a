//! Finding, reading and parsing a manifest file.

use std::path::{Path, PathBuf};

use crate::error::ManifestError;
use crate::manifest::Manifest;

/// Where a manifest was looked for, in order.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// `--manifest PATH`.
    pub flag: Option<PathBuf>,
    /// `$BOTTLE_MANIFEST`.
    pub env: Option<PathBuf>,
    /// The current directory, for `./bottle.json`.
    pub cwd: PathBuf,
    /// `$XDG_CONFIG_HOME` (or `~/.config`), for `bot-bottle/manifest.json`.
    pub config_home: Option<PathBuf>,
}

impl Lookup {
    /// The manifest path: the flag, else the variable, else `./bottle.json`,
    /// else the user's config file. An explicitly named file must exist;
    /// the implicit places are skipped when absent.
    pub fn resolve(&self) -> Result<PathBuf, ManifestError> {
        if let Some(path) = self.flag.as_ref().or(self.env.as_ref()) {
            let path = absolute(&self.cwd, path);
            if !path.is_file() {
                return Err(ManifestError::Missing { path });
            }
            return Ok(path);
        }
        let mut searched = vec![self.cwd.join("bottle.json")];
        if let Some(config) = &self.config_home {
            searched.push(config.join("bot-bottle").join("manifest.json"));
        }
        searched
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or(ManifestError::NotFound { searched })
    }
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        cwd.join(path)
    }
}

/// Reads and parses the manifest at `path` (shape only; see
/// [`crate::validate`] for meaning).
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = fs_err::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses manifest text; `path` only names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let manifest: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        ManifestError::Syntax {
            path: path.to_owned(),
            line: inner.line(),
            column: inner.column(),
            field: if field == "." { String::new() } else { field },
            message: explain(&inner),
        }
    })?;
    de.end().map_err(|inner| ManifestError::Syntax {
        path: path.to_owned(),
        line: inner.line(),
        column: inner.column(),
        field: String::new(),
        message: explain(&inner),
    })?;
    Ok(manifest)
}

/// serde's message, minus its position suffix (we print our own), and with
/// the untagged enums' "did not match any variant" said in words.
fn explain(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    let hints = [
        ("EnvValue", "expected a string or {\"from_host\": \"VAR\"}"),
        ("Roles", "expected a role name or a list of role names"),
        (
            "MemorySize",
            "expected a number of bytes or a size such as \"512m\" or \"4g\"",
        ),
    ];
    for (ty, hint) in hints {
        if text.contains(&format!("untagged enum {ty}")) {
            return hint.to_owned();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(text: &str) -> (usize, usize, String, String) {
        match parse(Path::new("m.json"), text) {
            Err(ManifestError::Syntax {
                line,
                column,
                field,
                message,
                ..
            }) => (line, column, field, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let (line, column, _, _) = syntax("{\n  \"agents\": {,\n}");
        assert_eq!((line, column), (2, 14));
    }

    #[test]
    fn unknown_fields_name_their_path() {
        let (_, _, field, message) = syntax(r#"{"bottles": {"dev": {"allow": [], "alow": []}}}"#);
        assert_eq!(field, "bottles.dev.alow");
        assert!(message.contains("unknown field `alow`"), "{message}");
        assert!(message.contains("expected one of"), "{message}");
    }

    #[test]
    fn untagged_values_say_what_is_expected() {
        let (_, _, field, message) =
            syntax(r#"{"agents": {"a": {"bottle": "b", "env": {"X": {"from_hots": "Y"}}}}}"#);
        assert_eq!(field, "agents.a.env.X");
        assert!(message.contains("from_host"), "{message}");
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        syntax("{} {}");
    }
}
