//! Dockerfile fragments of approved image changes, parsed completely or
//! not at all.
//!
//! An image change is a short list of Dockerfile instructions an agent
//! asks for. bot-bottle runs them itself, step by step, inside the
//! bottle's policy (see the Docker backend's `build` module), so this
//! parser decides exactly what runs; a fragment it cannot fully parse is
//! refused, never guessed at. The same parse is what a person is shown
//! ([`render`]): each step, the exact command it runs, with continuation
//! lines joined as Docker joins them and every control character escaped.
//!
//! Supported: `RUN` (shell form, JSON exec form, heredocs), `ENV`, `ARG`,
//! `WORKDIR`, `LABEL`, `USER`, `SHELL`. Refused: every other instruction
//! (`FROM`, `COPY`, `ADD`, `ONBUILD`, `ENTRYPOINT`, `CMD`, `VOLUME`, …),
//! parser directives (`# syntax=`, `# escape=`), `RUN` flags (`--mount`,
//! `--network`, `--security`), exec forms that are not valid JSON, and a
//! fragment ending inside a continuation or a heredoc.

use std::collections::BTreeMap;

mod render;

pub use render::{render, render_text, visible};

/// Largest fragment accepted.
pub const MAX_FRAGMENT_BYTES: usize = 16 * 1024;
/// Most instructions in one fragment.
pub const MAX_INSTRUCTIONS: usize = 64;
/// Instructions a fragment may use.
pub const INSTRUCTIONS: &[&str] = &["RUN", "ENV", "ARG", "WORKDIR", "LABEL", "USER", "SHELL"];

/// Why a fragment is refused: a message for the agent, with the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct FragmentError {
    pub line: Option<usize>,
    pub message: String,
}

fn refuse<T>(line: Option<usize>, message: impl Into<String>) -> Result<T, FragmentError> {
    Err(FragmentError {
        line,
        message: message.into(),
    })
}

/// What a `RUN` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A string for the shell (`SHELL`, by default `/bin/sh -c`).
    Shell(String),
    /// An argv, run as it is (no shell).
    Exec(Vec<String>),
}

/// One instruction, as bot-bottle will carry it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Run(Command),
    /// `KEY=value` pairs, values as written (expanded when run).
    Env(Vec<(String, String)>),
    /// A build argument and its default.
    Arg(String, Option<String>),
    Workdir(String),
    Label(Vec<(String, String)>),
    User(String),
    Shell(Vec<String>),
}

/// An instruction and where it was in the fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub op: Op,
    /// First and last line of the fragment it spans (1-based).
    pub lines: (usize, usize),
}

/// Parses `text` completely, or says why not.
pub fn parse(text: &str) -> Result<Vec<Instruction>, FragmentError> {
    if text.len() > MAX_FRAGMENT_BYTES {
        return refuse(
            None,
            format!(
                "the fragment is {} bytes; at most {MAX_FRAGMENT_BYTES}",
                text.len()
            ),
        );
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return refuse(
            None,
            format!("the fragment contains the control character {c:?}"),
        );
    }
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut seen_instruction = false;
    while i < lines.len() {
        let first = i + 1;
        let trimmed = lines[i].trim();
        if trimmed.is_empty() {
            i += 1;
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if !seen_instruction && is_directive(comment) {
                return refuse(
                    Some(first),
                    "parser directives (# syntax=, # escape=) are not supported",
                );
            }
            i += 1;
            continue;
        }
        seen_instruction = true;
        // Join continuation lines the way Docker does: the backslash and
        // newline go; comment lines inside are dropped.
        let mut logical = String::new();
        let mut line = lines[i];
        loop {
            match strip_continuation(line) {
                Some(head) => {
                    logical.push_str(head);
                    i += 1;
                    loop {
                        match lines.get(i) {
                            None => {
                                return refuse(
                                    Some(first),
                                    "the fragment ends inside a line continuation (a trailing \\)",
                                );
                            }
                            Some(next) if next.trim_start().starts_with('#') => i += 1,
                            Some(next) => {
                                line = next;
                                break;
                            }
                        }
                    }
                }
                None => {
                    logical.push_str(line);
                    i += 1;
                    break;
                }
            }
        }
        let (word, rest) = split_word(logical.trim_start());
        let word = word.to_ascii_uppercase();
        let op = match word.as_str() {
            "RUN" => {
                let rest = rest.trim_start();
                if rest.starts_with("--") {
                    return refuse(
                        Some(first),
                        "RUN flags (--mount, --network, --security) are not allowed in an image change",
                    );
                }
                run(rest, &lines, &mut i, first)?
            }
            "ENV" => Op::Env(pairs(rest, first, true)?),
            "LABEL" => {
                let labels = pairs(rest, first, false)?;
                // bot-bottle's own labels name a bottle's image and its
                // inputs; a fragment may not set them, by any spelling.
                if let Some((key, _)) = labels.iter().find(|(k, _)| {
                    k.contains('$') || k.to_ascii_lowercase().starts_with("bot-bottle.")
                }) {
                    return refuse(
                        Some(first),
                        format!(
                            "LABEL {key:?}: names starting with bot-bottle. are bot-bottle's own, and a label's name is written out, not expanded"
                        ),
                    );
                }
                Op::Label(labels)
            }
            "ARG" => {
                let words = words(rest, first)?;
                match words.as_slice() {
                    [one] => match one.split_once('=') {
                        Some((name, default)) => Op::Arg(name.to_owned(), Some(default.to_owned())),
                        None => Op::Arg(one.clone(), None),
                    },
                    _ => return refuse(Some(first), "ARG takes one NAME or NAME=default"),
                }
            }
            "WORKDIR" => Op::Workdir(single(rest, first, "WORKDIR")?),
            "USER" => Op::User(single(rest, first, "USER")?),
            "SHELL" => match json_array(rest.trim()) {
                Some(argv) if !argv.is_empty() => Op::Shell(argv),
                _ => {
                    return refuse(
                        Some(first),
                        "SHELL takes a JSON array, as [\"/bin/bash\", \"-c\"]",
                    );
                }
            },
            "" => return refuse(Some(first), "an empty instruction"),
            other => {
                return refuse(
                    Some(first),
                    format!(
                        "instruction {other:?} is not allowed in an image change (allowed: {})",
                        INSTRUCTIONS.join(", ")
                    ),
                );
            }
        };
        if let Op::Env(list) | Op::Label(list) = &op
            && list.is_empty()
        {
            return refuse(Some(first), format!("{word} names nothing"));
        }
        for name in names(&op) {
            if !is_name(name) {
                return refuse(
                    Some(first),
                    format!("{name:?} is not a variable or label name"),
                );
            }
        }
        out.push(Instruction {
            op,
            lines: (first, i),
        });
        if out.len() > MAX_INSTRUCTIONS {
            return refuse(None, format!("more than {MAX_INSTRUCTIONS} instructions"));
        }
    }
    if out.is_empty() {
        return refuse(None, "the fragment has no instruction");
    }
    Ok(out)
}

fn names(op: &Op) -> Vec<&str> {
    match op {
        Op::Env(pairs) => pairs.iter().map(|(k, _)| k.as_str()).collect(),
        Op::Arg(name, _) => vec![name.as_str()],
        _ => Vec::new(),
    }
}

fn is_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_directive(comment: &str) -> bool {
    let lower = comment.trim().to_ascii_lowercase();
    ["syntax", "escape", "check"].iter().any(|d| {
        lower
            .strip_prefix(d)
            .is_some_and(|r| r.trim_start().starts_with('='))
    })
}

/// `line` without its trailing continuation backslash, if it has one
/// (Docker's rule: a backslash, then only blanks, ends the line).
fn strip_continuation(line: &str) -> Option<&str> {
    line.trim_end_matches([' ', '\t']).strip_suffix('\\')
}

fn split_word(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], &text[at..]),
        None => (text, ""),
    }
}

/// A `RUN`: exec form, a heredoc script, or a shell string (with any
/// heredocs it names appended, for the shell to read).
fn run(rest: &str, lines: &[&str], i: &mut usize, first: usize) -> Result<Op, FragmentError> {
    let rest = rest.trim();
    if rest.is_empty() {
        return refuse(Some(first), "RUN needs a command");
    }
    if rest.starts_with('[') {
        return match json_array(rest) {
            Some(argv) if !argv.is_empty() => Ok(Op::Run(Command::Exec(argv))),
            _ => refuse(
                Some(first),
                "RUN [...] is not a valid JSON array of strings (write a shell command instead)",
            ),
        };
    }
    let markers = heredoc_markers(rest).map_err(|m| FragmentError {
        line: Some(first),
        message: m,
    })?;
    if markers.is_empty() {
        return Ok(Op::Run(Command::Shell(rest.to_owned())));
    }
    let mut bodies = Vec::new();
    for (delimiter, strip_tabs) in &markers {
        let mut body = Vec::new();
        loop {
            let Some(line) = lines.get(*i) else {
                return refuse(
                    Some(first),
                    format!("the heredoc <<{delimiter} is not closed (no line {delimiter})"),
                );
            };
            *i += 1;
            let line = if *strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if line == delimiter {
                break;
            }
            body.push(line.to_owned());
        }
        bodies.push((delimiter.clone(), body));
    }
    // `RUN <<EOF` alone: the heredoc is the script.
    let only = rest.trim_start_matches("<<").trim_start_matches('-');
    if markers.len() == 1 && only.trim_matches(['\'', '"']) == markers[0].0 {
        let script = bodies[0].1.join("\n");
        if script.starts_with("#!") {
            return refuse(
                Some(first),
                "a heredoc script with a #! line is not supported: name the interpreter, as RUN python3 <<EOF",
            );
        }
        return Ok(Op::Run(Command::Shell(script)));
    }
    let mut script = rest.to_owned();
    for (delimiter, body) in bodies {
        script.push('\n');
        for line in body {
            script.push_str(&line);
            script.push('\n');
        }
        script.push_str(&delimiter);
    }
    Ok(Op::Run(Command::Shell(script)))
}

/// The heredocs a RUN line opens: `<<WORD`, `<<-WORD`, `<<'WORD'`,
/// `<<"WORD"` (not `<<<`, a here-string). Returns (delimiter, strip tabs).
fn heredoc_markers(line: &str) -> Result<Vec<(String, bool)>, String> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if !single => i += 1,
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            // A shell comment: the shell ignores the rest of the line,
            // so a heredoc marker there opens nothing for it — while this
            // parser would read the lines below as data. Refused, so the
            // steps shown are the steps run.
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                if line[i..].contains("<<") {
                    return Err(
                        "a heredoc marker after a # comment opens nothing for the shell: remove the comment".to_owned(),
                    );
                }
                break;
            }
            b'<' if !single && !double && bytes.get(i + 1) == Some(&b'<') => {
                if bytes.get(i + 2) == Some(&b'<') {
                    i += 3;
                    continue;
                }
                let mut j = i + 2;
                let strip = bytes.get(j) == Some(&b'-');
                if strip {
                    j += 1;
                }
                let quote = bytes.get(j).copied().filter(|b| *b == b'\'' || *b == b'"');
                if quote.is_some() {
                    j += 1;
                }
                let start = j;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                let word = &line[start..j];
                if word.is_empty() {
                    return Err("a heredoc needs a delimiter word, as <<EOF".to_owned());
                }
                if let Some(q) = quote {
                    if bytes.get(j) != Some(&q) {
                        return Err(format!(
                            "the heredoc delimiter {word} is not closed by its quote"
                        ));
                    }
                    j += 1;
                }
                out.push((word.to_owned(), strip));
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if single || double {
        return Err("a quote is not closed".to_owned());
    }
    Ok(out)
}

/// A JSON array of strings, or `None`.
fn json_array(text: &str) -> Option<Vec<String>> {
    serde_json::from_str::<Vec<String>>(text).ok()
}

/// Exactly one word (quotes allowed).
fn single(rest: &str, line: usize, what: &str) -> Result<String, FragmentError> {
    let words = words(rest, line)?;
    match words.as_slice() {
        [one] if !one.is_empty() => Ok(one.clone()),
        _ => refuse(Some(line), format!("{what} takes one value")),
    }
}

/// `KEY=value` pairs (ENV also takes the old `ENV KEY value…` form).
fn pairs(rest: &str, line: usize, legacy: bool) -> Result<Vec<(String, String)>, FragmentError> {
    let words = words(rest, line)?;
    if legacy && !words.is_empty() && !words[0].contains('=') {
        // `ENV KEY value with spaces`: the rest of the line is the value.
        let trimmed = rest.trim_start();
        let (key, value) = split_word(trimmed);
        if value.trim().is_empty() {
            return refuse(
                Some(line),
                format!("ENV {key} needs a value (ENV {key}=value)"),
            );
        }
        return Ok(vec![(key.to_owned(), value.trim().to_owned())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => refuse(Some(line), format!("{w:?} is not KEY=value")),
        })
        .collect()
}

/// Words as Dockerfile splits them: whitespace separates; double quotes
/// (with `\"` and `\\`) and single quotes group; a backslash escapes the
/// next character outside quotes. `$` stays for expansion at run time.
fn words(text: &str, line: usize) -> Result<Vec<String>, FragmentError> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return refuse(Some(line), "a double quote is not closed"),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => word.push(e),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return refuse(Some(line), "a double quote is not closed"),
                        },
                        Some(other) => word.push(other),
                    }
                }
            }
            '\'' => {
                in_word = true;
                // Single quotes keep `$` literal: mark it so expansion
                // leaves it alone.
                loop {
                    match chars.next() {
                        None => return refuse(Some(line), "a single quote is not closed"),
                        Some('\'') => break,
                        Some('$') => word.push_str("\\$"),
                        Some(other) => word.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('$') => word.push_str("\\$"),
                    Some(next) => word.push(next),
                    None => {}
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// `text` with `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}`
/// replaced from `vars` (unset: empty), and `\$` as a literal `$`, as
/// Dockerfile expands ENV, LABEL, WORKDIR, USER and ARG values. Any other
/// `${…}` form is an error rather than a guess.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                chars.next();
                out.push('$');
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => inner.push(c),
                        None => return Err(format!("${{{inner} is not closed")),
                    }
                }
                let (name, modifier) = match inner.find(':') {
                    Some(at) => (&inner[..at], Some(&inner[at..])),
                    None => (inner.as_str(), None),
                };
                if !is_name(name) {
                    return Err(format!("${{{inner}}} is not a variable"));
                }
                let value = vars.get(name).filter(|v| !v.is_empty());
                match modifier {
                    None => out.push_str(value.map_or("", String::as_str)),
                    Some(m) if m.starts_with(":-") => {
                        out.push_str(value.map_or(&m[2..], String::as_str));
                    }
                    Some(m) if m.starts_with(":+") => {
                        if value.is_some() {
                            out.push_str(&m[2..]);
                        }
                    }
                    Some(m) => return Err(format!("${{{name}{m}}}: only :- and :+ are supported")),
                }
            }
            '$' if chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') =>
            {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(vars.get(&name).map_or("", String::as_str));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    fn ops(text: &str) -> Vec<Op> {
        parse(text).unwrap().into_iter().map(|i| i.op).collect()
    }

    #[test]
    fn continuations_join_as_docker_joins_them() {
        let text = "# tools\nRUN apt-get update \\\n  # a comment inside\n  && apt-get install -y jq\nENV A=1\n";
        let steps = parse(text).unwrap();
        assert_eq!(
            steps[0].op,
            Op::Run(Command::Shell(
                "apt-get update   && apt-get install -y jq".into()
            ))
        );
        assert_eq!(steps[0].lines, (2, 4));
        assert_eq!(steps[1].op, Op::Env(vec![("A".into(), "1".into())]));
    }

    #[test]
    fn heredocs_are_scripts_or_shell_input() {
        assert_eq!(
            ops("RUN <<EOF\nset -e\necho hi\nEOF\n"),
            vec![Op::Run(Command::Shell("set -e\necho hi".into()))]
        );
        assert_eq!(
            ops("RUN cat > /etc/x <<'EOT'\n$HOME stays\nEOT"),
            vec![Op::Run(Command::Shell(
                "cat > /etc/x <<'EOT'\n$HOME stays\nEOT".into()
            ))]
        );
        assert_eq!(
            ops("RUN <<-EOF\n\techo tab\n\tEOF"),
            vec![Op::Run(Command::Shell("echo tab".into()))]
        );
        assert!(parse("RUN <<EOF\necho never closed").is_err());
        // Found by review: the shell ignores a marker in a comment.
        assert!(parse("RUN true # <<EOF\nrm -rf /\nEOF").is_err());
        assert_eq!(
            ops("RUN echo '#<<not' # fine"),
            vec![Op::Run(Command::Shell("echo '#<<not' # fine".into()))]
        );
        assert!(parse("RUN <<EOF\n#!/usr/bin/python3\nprint(1)\nEOF").is_err());
        assert_eq!(
            ops("RUN cat <<<word"),
            vec![Op::Run(Command::Shell("cat <<<word".into()))]
        );
    }

    #[test]
    fn forms_of_each_instruction() {
        assert_eq!(
            ops("RUN [\"/bin/echo\", \"a b\"]"),
            vec![Op::Run(Command::Exec(vec![
                "/bin/echo".into(),
                "a b".into()
            ]))]
        );
        assert_eq!(
            ops("ENV A=\"x y\" B=z\\ w C='$NOT'"),
            vec![Op::Env(vec![
                ("A".into(), "x y".into()),
                ("B".into(), "z w".into()),
                ("C".into(), "\\$NOT".into())
            ])]
        );
        assert_eq!(
            ops("ENV OLD value with spaces"),
            vec![Op::Env(vec![("OLD".into(), "value with spaces".into())])]
        );
        assert_eq!(ops("ARG V=1"), vec![Op::Arg("V".into(), Some("1".into()))]);
        assert_eq!(ops("workdir /opt/x"), vec![Op::Workdir("/opt/x".into())]);
        assert_eq!(
            ops("SHELL [\"/bin/bash\", \"-c\"]"),
            vec![Op::Shell(vec!["/bin/bash".into(), "-c".into()])]
        );
        assert_eq!(ops("USER nobody"), vec![Op::User("nobody".into())]);
    }

    #[test]
    fn what_cannot_be_parsed_whole_is_refused() {
        for bad in [
            "FROM debian",
            "RUN true\nFROM scratch",
            "COPY --from=evil / /",
            "ADD http://x/y /y",
            "ONBUILD RUN true",
            "ENTRYPOINT [\"sh\"]",
            "RUN echo \\",
            "",
            "# nothing",
            "# syntax=docker/dockerfile:1\nRUN true",
            "# escape=`\nRUN true",
            "RUN --network=host curl x",
            "RUN --mount=type=bind,target=/x true",
            "RUN [\"unclosed\"",
            "RUN true\r\nFROM x",
            "ENV",
            "ENV A=\"unclosed",
            "ENV 1A=x",
            "SHELL /bin/bash -c",
            "ARG A B",
            "WORKDIR",
            "RUN",
            "RUN echo 'unclosed",
            "LABEL bot-bottle.inputs=x",
            "LABEL a=b \"BOT-BOTTLE.managed\"=true",
            "LABEL bot\\-bottle.identity=x",
            "LABEL ${P}.inputs=x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse(&format!("RUN {}", "x".repeat(MAX_FRAGMENT_BYTES))).is_err());
        assert!(parse(&"RUN true\n".repeat(MAX_INSTRUCTIONS + 1)).is_err());
    }

    #[test]
    fn expansion_follows_dockerfile() {
        let vars: BTreeMap<String, String> = [
            ("A".to_owned(), "1".to_owned()),
            ("E".to_owned(), String::new()),
        ]
        .into();
        assert_eq!(
            expand("$A-${A}-${B:-d}-${A:+s}-${E:-x}-\\$A", &vars).unwrap(),
            "1-1-d-s-x-$A"
        );
        assert!(expand("${A?err}", &vars).is_err());
        assert!(expand("${A", &vars).is_err());
    }

    #[test]
    fn a_person_sees_the_exact_commands_escaped() {
        let text = "RUN echo hi \\\n && echo \u{202e}gone\tx\nENV P=\"a\u{200b}b\"";
        let shown = render_text(text);
        assert!(
            shown.contains("step 1 (lines 1-2 joined): RUN with the shell:"),
            "{shown}"
        );
        assert!(
            shown.contains("| echo hi  && echo \\u{202e}gone\tx"),
            "{shown}"
        );
        assert!(shown.contains("P=\"a\\\\u{200b}b\""), "{shown}");
        let broken = render_text("RUN true\n\u{1b}[31m");
        assert!(broken.starts_with("does not parse"), "{broken}");
        assert!(broken.contains("\\u{1b}[31m"), "{broken}");
    }
}
