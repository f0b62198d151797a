//! Property tests of the parsers that face the agent or the person's
//! manifest: host names, allow rules, Dockerfile fragments, variable
//! expansion and the manifest loader. None may panic, and each keeps its
//! promises (normalising twice changes nothing, a rule allows its own
//! host, a fragment that parses renders).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bottle_manifest::fragment;
use bottle_manifest::host::{Host, HostRule, normalize_host, split_host_port};
use proptest::prelude::*;

/// Host-like text: labels, dots, digits, brackets, colons, Unicode,
/// percent signs and the odd control character.
fn hostish() -> impl Strategy<Value = String> {
    prop::string::string_regex("[a-zA-Z0-9._\\-\\[\\]:%@*ÄöЖ\u{ff0e}\u{200b}\\\\ ]{0,40}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalising_never_panics_and_is_idempotent(raw in hostish()) {
        if let Ok(host) = normalize_host(&raw) {
            let again = normalize_host(&host.to_string());
            prop_assert_eq!(again, Ok(host.clone()), "{}", raw);
            if let Host::Name(name) = &host {
                prop_assert!(name.len() <= 253);
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'), "{}", name);
            }
        }
    }

    #[test]
    fn a_rule_allows_its_own_host_and_nothing_odd(raw in hostish(), port in proptest::option::of(1u16..)) {
        let text = match port { Some(p) => format!("{raw}:{p}"), None => raw.clone() };
        if let Ok(rule) = HostRule::parse(&text) {
            if let bottle_manifest::host::HostPattern::Exact(name) = &rule.host {
                let host = Host::Name(name.clone());
                prop_assert!(rule.allows(&host, rule.port.unwrap_or(443), 443));
            }
            // Re-parsing a rule's own text gives the same rule.
            prop_assert!(HostRule::parse(&rule.text).unwrap().same_as(&rule));
        }
    }

    #[test]
    fn authorities_split_without_panicking(raw in "[\\[\\]a-z0-9:.@]{0,30}") {
        if let Ok((host, Some(port))) = split_host_port(&raw) {
            prop_assert!(port > 0);
            prop_assert!(!host.contains('@') || raw.contains('@'));
        }
    }

    #[test]
    fn fragments_parse_whole_or_not_at_all(text in "(RUN|ENV|ARG|WORKDIR|LABEL|USER|SHELL|FROM|run|#|<<|EOF|\\\\|\"|'|\\[|\\]|=|\\$|\\{|\\}| |\t|\n|a|b|-)*") {
        match fragment::parse(&text) {
            Ok(steps) => {
                prop_assert!(!steps.is_empty());
                let lines = text.split('\n').count();
                for step in &steps {
                    prop_assert!(step.lines.0 >= 1 && step.lines.0 <= step.lines.1 && step.lines.1 <= lines);
                }
                let shown = fragment::render(&steps);
                prop_assert!(shown.starts_with("step 1 "));
                prop_assert!(!shown.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{:?}", shown);
            }
            Err(err) => prop_assert!(!err.message.is_empty()),
        }
        let _ = fragment::render_text(&text);
    }

    #[test]
    fn arbitrary_fragments_never_panic(text in ".{0,300}") {
        let _ = fragment::parse(&text);
        let shown = fragment::render_text(&text);
        prop_assert!(!shown.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    }

    #[test]
    fn expansion_never_panics(text in "[$a-zA-Z_{}:+\\-\\\\ ]{0,40}") {
        let vars: BTreeMap<String, String> =
            [("A".to_owned(), "x".to_owned()), ("B".to_owned(), String::new())].into();
        let _ = fragment::expand(&text, &vars);
    }
}

/// A JSON value of any shape, small.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z0-9./*:@ _-]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("agents".to_owned()),
                    Just("bottles".to_owned()),
                    Just("bottle".to_owned()),
                    Just("allow".to_owned()),
                    Just("command".to_owned()),
                    Just("env".to_owned()),
                    Just("resources".to_owned()),
                    Just("egress_proxy".to_owned()),
                    Just("routes".to_owned()),
                    Just("git".to_owned()),
                    Just("allow_private".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn any_manifest_is_checked_without_panicking(value in json()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bottle.json");
        std::fs::write(&path, value.to_string()).unwrap();
        if let Ok(manifest) = bottle_manifest::load::load(&path) {
            let ctx = bottle_manifest::validate::Context {
                home: dir.path().to_owned(),
                base_dir: dir.path().to_owned(),
            };
            let _ = bottle_manifest::validate::check(&manifest, &ctx);
        }
    }
}
