//! Property tests of the parsers' round trips (proptest, in the normal
//! suite): whatever a parser accepts prints back as the same text, what the
//! grammar generates is accepted, and no input makes a parser panic.

use gantry::config::{Config, parse_duration};
use gantry::distribution::path::{Route, parse};
use gantry::oci::{Digest, Reference, RepoName, Tag};
use proptest::prelude::*;

/// Repository names from the OCI grammar (a few components, each
/// alphanumeric runs joined by `.`, `_`, `__` or dashes).
fn repo_name() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,6}((\\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}";
    prop::collection::vec(component, 1..4).prop_map(|parts| parts.join("/"))
}

fn tag() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,40}"
}

fn digest() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|hex| format!("sha256:{hex}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn names_from_the_grammar_parse_and_print_back(name in repo_name()) {
        let parsed: RepoName = name.parse().map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        prop_assert_eq!(parsed.to_string(), name);
    }

    #[test]
    fn any_accepted_name_tag_or_digest_prints_back(s in "\\PC{0,80}") {
        if let Ok(n) = s.parse::<RepoName>() {
            prop_assert_eq!(n.to_string(), s.clone());
            prop_assert!(!s.contains("..") && !s.starts_with('/') && !s.ends_with('/') && !s.contains('%'));
        }
        if let Ok(t) = s.parse::<Tag>() {
            prop_assert_eq!(t.to_string(), s.clone());
        }
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert_eq!(d.to_string(), s.clone());
        }
    }

    #[test]
    fn tags_and_digests_from_their_grammar_round_trip(t in tag(), d in digest()) {
        let parsed: Tag = t.parse().map_err(|e| TestCaseError::fail(format!("{t}: {e}")))?;
        prop_assert_eq!(parsed.to_string(), t);
        let parsed: Digest = d.parse().map_err(|e| TestCaseError::fail(format!("{d}: {e}")))?;
        prop_assert_eq!(parsed.to_string(), d);
    }

    #[test]
    fn api_paths_parse_to_their_route(name in repo_name(), t in tag(), d in digest()) {
        match parse(&format!("{name}/manifests/{t}")) {
            Ok(Route::Manifest(repo, Reference::Tag(tag))) => {
                prop_assert_eq!(repo.to_string(), name.clone());
                prop_assert_eq!(tag.to_string(), t);
            }
            _ => prop_assert!(false, "manifest by tag"),
        }
        match parse(&format!("{name}/manifests/{d}")) {
            Ok(Route::Manifest(repo, Reference::Digest(digest))) => {
                prop_assert_eq!(repo.to_string(), name.clone());
                prop_assert_eq!(digest.to_string(), d.clone());
            }
            _ => prop_assert!(false, "manifest by digest"),
        }
        match parse(&format!("{name}/blobs/{d}")) {
            Ok(Route::Blob(repo, digest)) => {
                prop_assert_eq!(repo.to_string(), name.clone());
                prop_assert_eq!(digest.to_string(), d);
            }
            _ => prop_assert!(false, "blob"),
        }
        let upload = parse(&format!("{name}/blobs/uploads/"));
        prop_assert!(matches!(upload, Ok(Route::UploadStart(_))));
        let tags = parse(&format!("{name}/tags/list"));
        prop_assert!(matches!(tags, Ok(Route::Tags(_))));
    }

    #[test]
    fn no_path_makes_the_parser_panic(s in "\\PC{0,120}") {
        let _ = parse(&s);
    }

    #[test]
    fn durations_with_a_unit_parse_to_their_length(n in 1u64..1_000_000, unit in 0usize..5) {
        let (suffix, seconds) = [("ms", 0), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)][unit];
        let got = parse_duration(&format!("{n}{suffix}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = if seconds == 0 {
            std::time::Duration::from_millis(n)
        } else {
            std::time::Duration::from_secs(n * seconds)
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn no_configuration_text_makes_the_loader_panic(s in "\\PC{0,200}") {
        let _ = Config::from_toml_str(&s, "prop", std::path::Path::new("/"));
    }

    #[test]
    fn no_configuration_value_makes_the_loader_panic(
        key in prop::sample::select(vec!["listen", "tls_cert_file", "reload_poll_seconds", "metrics_listen", "max_connections", "idle_timeout"]),
        value in prop_oneof!["\\PC{0,20}".prop_map(|s| format!("{s:?}")), any::<i64>().prop_map(|n| n.to_string()), Just("[]".to_string()), Just("{}".to_string())],
    ) {
        let _ = Config::from_toml_str(&format!("[server]\n{key} = {value}\n"), "prop", std::path::Path::new("/"));
    }
}
