//! Files that are secrets by name or by content: left out of a `--cwd`
//! copy unless the person names them. The rules aim at what holds a
//! credential by convention — dotenv files, private keys, the credential
//! files of clouds, forges and package registries — and at private key
//! blocks wherever they are; they do not guess at ordinary source.

use std::io::Read;
use std::path::Path;

/// Bytes of a file read to look for secrets in it.
const READ_BYTES: u64 = 1 << 20;

/// Why a file is a secret, if it is one.
pub fn why_secret(rel: &Path, full: &Path) -> Option<&'static str> {
    let name = rel.file_name()?.to_string_lossy().to_ascii_lowercase();
    let parent = rel
        .parent()
        .and_then(Path::file_name)
        .map(|p| p.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if let Some(why) = by_name(&name, &parent) {
        return Some(why);
    }
    let content = head(full)?;
    by_content(&name, &content)
}

fn by_name(name: &str, parent: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    if name.starts_with(".env") {
        return Some("an environment file (.env*)");
    }
    if matches!(
        name,
        "id_rsa" | "id_dsa" | "id_ecdsa" | "id_ed25519" | "id_ecdsa_sk" | "id_ed25519_sk"
    ) {
        return Some("an SSH private key");
    }
    if matches!(
        ext,
        "key" | "p12" | "pfx" | "jks" | "keystore" | "ppk" | "p8"
    ) {
        return Some("a private key or key store");
    }
    if matches!(
        name,
        ".netrc"
            | "_netrc"
            | ".git-credentials"
            | ".pgpass"
            | ".htpasswd"
            | ".boto"
            | ".s3cfg"
            | ".terraformrc"
            | "credentials.tfrc.json"
            | "application_default_credentials.json"
            | "kubeconfig"
    ) || name.ends_with(".tfstate")
        || name.ends_with(".tfstate.backup")
    {
        return Some("a credential file");
    }
    if name.starts_with("secrets.")
        || (name.starts_with("service-account") || name.starts_with("client_secret"))
            && ext == "json"
        || matches!(
            name,
            "credentials.json" | ".vault-token" | ".git-credentials"
        )
        || ext == "tfvars"
    {
        return Some("a credential file");
    }
    match (parent, name) {
        (".cargo", "credentials" | "credentials.toml") => Some("crates.io credentials"),
        (".gem", "credentials") => Some("RubyGems credentials"),
        (".aws", "credentials" | "config") => Some("AWS credentials"),
        (".kube", "config") => Some("a Kubernetes configuration with credentials"),
        (".docker", "config.json") => Some("Docker registry credentials"),
        ("gh", "hosts.yml") | (".config", "hub") => Some("forge credentials"),
        (".azure", _) | ("gcloud", _) => Some("cloud credentials"),
        _ => None,
    }
}

fn by_content(name: &str, content: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(content);
    if text.contains("-----BEGIN") && text.contains("PRIVATE KEY") {
        return Some("it holds a private key");
    }
    // Registry configurations hold tokens by these names.
    let registry = matches!(
        name,
        ".npmrc" | ".yarnrc" | ".yarnrc.yml" | ".pypirc" | "pip.conf"
    );
    if registry
        && [
            "_authtoken",
            "_auth",
            "_password",
            "password",
            "npmauthtoken",
        ]
        .iter()
        .any(|k| text.to_ascii_lowercase().contains(k))
    {
        return Some("a package registry configuration with a token");
    }
    if text.contains("aws_secret_access_key") {
        return Some("it holds an AWS secret key");
    }
    if holds_token(&text) {
        return Some("it holds a token of a well-known format");
    }
    None
}

/// Well-known token formats: a prefix and the fewest characters of the
/// token alphabet (`A-Z a-z 0-9 _ -`) that follow it.
const TOKEN_SHAPES: &[(&str, usize)] = &[
    ("ghp_", 30),
    ("gho_", 30),
    ("ghu_", 30),
    ("ghs_", 30),
    ("ghr_", 30),
    ("github_pat_", 30),
    ("glpat-", 20),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxr-", 10),
    ("xoxs-", 10),
    ("sk-", 20),
    ("AKIA", 16),
    ("ASIA", 16),
    ("AIza", 30),
    ("npm_", 30),
    ("pypi-", 40),
    ("hf_", 30),
    ("glsa_", 30),
    ("dop_v1_", 40),
];

/// What in `text` looks like a credential wherever it is, if anything: a
/// token of a well-known format, an authorization header's value, a URL
/// parameter named for a secret, a private key block. Aimed at what a
/// configuration value or a log line may carry; a file's content is judged
/// by [`why_secret`].
pub fn secret_in_text(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("-----begin") && lower.contains("private key") {
        return Some("it holds a private key");
    }
    if [
        "authorization:",
        "private-token:",
        "x-api-key:",
        "api-key:",
        "cookie:",
        "bearer ",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return Some("it holds an authorization header");
    }
    if holds_token(text) {
        return Some("it holds a token of a well-known format");
    }
    // A word of the parameter's name (`private_token`, `X-Amz-Signature`).
    const SECRET_PARAMS: &[&str] = &[
        "token",
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "signature",
        "sig",
        "auth",
        "credential",
    ];
    for param in lower.split(['?', '&', ';']).skip(1) {
        if let Some((name, value)) = param.split_once('=')
            && !value.is_empty()
            && name
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| SECRET_PARAMS.contains(&word))
        {
            return Some("a URL parameter holds a secret");
        }
    }
    None
}

/// Whether `text` holds a token of a well-known format.
pub fn holds_token(text: &str) -> bool {
    for (prefix, min) in TOKEN_SHAPES {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let boundary = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            let run: Vec<char> = text[start + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            // Random tokens this long hold a digit; words joined by
            // hyphens (`sk-learn-…`) do not.
            if boundary && run.len() >= *min && run.iter().any(char::is_ascii_digit) {
                return true;
            }
            from = start + prefix.len();
        }
    }
    false
}

/// The first bytes of a regular file.
fn head(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut out = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(READ_BYTES)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(rel: &str) -> Option<&'static str> {
        let rel = Path::new(rel);
        by_name(
            &rel.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_ascii_lowercase(),
            &rel.parent()
                .and_then(Path::file_name)
                .map(|p| p.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default(),
        )
    }

    #[test]
    fn secrets_by_name() {
        for secret in [
            ".env",
            "app/.env.production",
            ".envrc",
            "keys/id_ed25519",
            "tls/server.key",
            "store.p12",
            ".netrc",
            "home/.aws/credentials",
            "x/.kube/config",
            ".docker/config.json",
            "infra/terraform.tfstate",
            "secrets.yaml",
            "credentials.json",
            "client_secret_123.apps.json",
            ".cargo/credentials.toml",
            ".vault-token",
            "prod.tfvars",
            ".gem/credentials",
        ] {
            assert!(named(secret).is_some(), "{secret}");
        }
        for ordinary in [
            "src/main.rs",
            "id_ed25519.pub",
            "README.md",
            "config.json",
            "environment.yml",
        ] {
            assert_eq!(named(ordinary), None, "{ordinary}");
        }
    }

    #[test]
    fn secrets_in_text() {
        for secret in [
            "!curl -H 'Authorization: token abc' https://x",
            "Bearer eyJhbGciOi",
            &format!("https://h/r.git?private_token={}", "z".repeat(12)),
            &format!("x ghp_{}", "a1".repeat(18)),
            &format!("github_pat_{}", "B2".repeat(20)),
            &format!("sshpass -p AKIA{} ssh", "Q3".repeat(8)),
            &format!("glpat-{}", "c4".repeat(10)),
            "-----BEGIN RSA PRIVATE KEY-----",
        ] {
            assert!(secret_in_text(secret).is_some(), "{secret}");
        }
        for ordinary in [
            "https://github.com/me/repo.git",
            "+refs/heads/*:refs/remotes/origin/*",
            "ghp_short",
            "task-list: ask-about-it",
            "commit (amend): fix the key lookup",
            "git@github.com:me/repo.git",
            "https://h/search?q=keyboard&design=1",
            "sk-learn-model-selection-and-more",
        ] {
            assert_eq!(secret_in_text(ordinary), None, "{ordinary}");
        }
    }

    #[test]
    fn secrets_by_content() {
        let key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(by_content("cert.pem", key).is_some());
        assert!(by_content("notes.txt", key).is_some());
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(by_content("cert.pem", cert), None);
        assert!(by_content(".npmrc", b"//registry.npmjs.org/:_authToken=npm_abc\n").is_some());
        assert_eq!(
            by_content(".npmrc", b"registry=https://registry.npmjs.org/\n"),
            None
        );
    }
}
