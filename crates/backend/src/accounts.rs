//! The host's accounts by id. bot-bottle is one static binary, and a
//! static glibc cannot load the name service's modules (`systemd`, `sss`,
//! `ldap` in `nsswitch.conf`): asking it for an id the local files do not
//! have crashes the process. So the name service is asked through
//! `getent`, which is linked as the host's programs are, and the local
//! file is read where there is no `getent`.

use std::path::Path;

/// The name `database` (`passwd`, `group`) gives `id`: `Some(Some(name))`
/// when it has one, `Some(None)` when it has none, `None` when it could
/// not be asked and the local file could not be read.
pub fn name_of(database: &str, id: u32) -> Option<Option<String>> {
    answer(
        database,
        id,
        ask(database, id).and_then(|c| c.wait_with_output()),
    )
}

/// Whether `id` is free: the name service (directory services included)
/// knows neither a user nor a group by it; both are asked at once. An id
/// that could not be asked about is taken: never guess an id free.
pub fn unnamed(id: u32) -> bool {
    let asked = ["passwd", "group"].map(|database| (database, ask(database, id)));
    // Both waited for before either answer counts: no child is left
    // unreaped by a short-circuit.
    let answers = asked
        .map(|(database, child)| answer(database, id, child.and_then(|c| c.wait_with_output())));
    answers.iter().all(|name| *name == Some(None))
}

/// `getent DATABASE ID`, started.
fn ask(database: &str, id: u32) -> std::io::Result<std::process::Child> {
    std::process::Command::new("getent")
        .args([database, &id.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
}

/// What `getent` answered, or the local file where it could not answer.
fn answer(
    database: &str,
    id: u32,
    asked: std::io::Result<std::process::Output>,
) -> Option<Option<String>> {
    match asked {
        Ok(out) if out.status.code() == Some(0) => Some(Some(first_field(&out.stdout))),
        // getent's "not found".
        Ok(out) if out.status.code() == Some(2) => Some(None),
        _ => {
            let text = std::fs::read(Path::new("/etc").join(database)).ok()?;
            let id = id.to_string();
            Some(
                text.split(|b| *b == b'\n')
                    .find(|line| line.split(|b| *b == b':').nth(2) == Some(id.as_bytes()))
                    .map(first_field),
            )
        }
    }
}

/// An entry's name (what comes before the first `:`).
fn first_field(entry: &[u8]) -> String {
    let name = entry.split(|b| *b == b':').next().unwrap_or_default();
    String::from_utf8_lossy(name).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_known_and_an_unused_id_is_not() {
        assert_eq!(name_of("passwd", 0), Some(Some("root".to_owned())));
        assert_eq!(name_of("group", 0), Some(Some("root".to_owned())));
        assert_eq!(name_of("passwd", 0x7fff_fff0), Some(None));
        assert!(!unnamed(0));
        assert!(unnamed(0x7fff_fff0));
    }
}
