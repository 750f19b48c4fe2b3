//! `gantry config check` lints: settings that are valid but have let
//! workloads in where they should not have been, in real incidents of
//! workload identity. Each has an id (`G1xx`), a severity, the issuer and
//! key path it is about, and the fix. An issuer silences one with
//! `allow_lints = [{ id = "G103", reason = "..." }]`.
//!
//! The expression lints read the settings of `builtin:cel` policies (their
//! `variables`, `validations`, `username` and `groups`); a custom component's
//! settings are its own language and are not read.

use std::fmt;

use serde_json::Value;

use super::Config;
use super::access::Grant;
use super::auth::IssuerEntry;
use crate::oci::{Action, ActionSet};
use crate::policy::{BuiltinModule, ModuleSource};

/// How much a lint matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A gap someone can walk through; `--deny-warnings` fails on it.
    Warning,
    /// Worth knowing; never fails a check.
    Note,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    pub id: &'static str,
    pub severity: Severity,
    /// The key path it is about (`auth.oidc[0].audiences`).
    pub path: String,
    /// The issuer it is about, if any.
    pub issuer: Option<String>,
    pub message: String,
    pub fix: &'static str,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{severity} {}: {}", self.id, self.path)?;
        if let Some(issuer) = &self.issuer {
            write!(f, " ({issuer})")?;
        }
        write!(f, ": {}\n    fix: {}", self.message, self.fix)
    }
}

/// Every lint id, for `allow_lints` validation.
pub const IDS: &[&str] = &[
    "G101", "G102", "G103", "G104", "G105", "G106", "G107", "G108", "G109",
];

/// Issuers anyone can get a token from (any repository, project or account
/// on the platform), with the claim that pins the tenant and its name.
const GLOBAL_ISSUERS: &[(&str, &[&str], &str)] = &[
    (
        "https://token.actions.githubusercontent.com",
        &["repository_owner_id"],
        "GitHub Actions",
    ),
    (
        "https://gitlab.com",
        &["namespace_id", "project_id"],
        "gitlab.com",
    ),
    (
        "https://app.terraform.io",
        &["terraform_organization_id"],
        "Terraform Cloud",
    ),
    ("https://accounts.google.com", &["hd"], "Google"),
    (
        "https://login.microsoftonline.com/common/v2.0",
        &["tid"],
        "Microsoft Entra (common)",
    ),
];

/// Claims that name something renameable, with the id claims that pin it.
const MUTABLE: &[(&str, &[&str])] = &[
    ("repository", &["repository_id", "repository_owner_id"]),
    ("repository_owner", &["repository_owner_id"]),
    ("project_path", &["project_id", "namespace_id"]),
    ("namespace_path", &["namespace_id", "project_id"]),
];

/// Audiences that other relying parties accept too: a token for them is a
/// token for Gantry.
const SHARED_AUDIENCES: &[&str] = &[
    "sts.amazonaws.com",
    "api://AzureADTokenExchange",
    "kubernetes",
    "https://kubernetes.default.svc",
    "https://kubernetes.default.svc.cluster.local",
];

/// A lifetime cap above this is no cap for CI tokens (which live minutes).
const LONG_LIFETIME_SECONDS: u64 = 24 * 3600;

/// The CEL expressions of a `builtin:cel` policy: (matching, all). The
/// matching ones are `variables` and `validations`, which decide who gets
/// in; all adds `username` and `groups`.
fn expressions(issuer: &IssuerEntry) -> Option<(Vec<String>, Vec<String>)> {
    if !matches!(
        issuer.policy.source,
        super::auth::PolicySource::Module(ModuleSource::Builtin(BuiltinModule::Cel))
    ) {
        return None;
    }
    let s = &issuer.policy.settings;
    let list = |key: &str| -> Vec<String> {
        s.get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("expression")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut matching = list("variables");
    matching.extend(list("validations"));
    let mut all = matching.clone();
    for key in ["username", "groups"] {
        if let Some(e) = s.get(key).and_then(Value::as_str) {
            all.push(e.to_owned());
        }
    }
    Some((matching, all))
}

/// Whether `expr` reads claim `name` (`claims.name`, `claims['name']`,
/// `claims["name"]`, or `has(claims.name)`).
fn mentions(expr: &str, name: &str) -> bool {
    let dotted = format!("claims.{name}");
    expr.match_indices(&dotted).any(|(i, m)| {
        !expr[i + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    }) || expr.contains(&format!("claims['{name}']"))
        || expr.contains(&format!("claims[\"{name}\"]"))
}

fn any_mentions(exprs: &[String], name: &str) -> bool {
    exprs.iter().any(|e| mentions(e, name))
}

/// The literals of `startsWith(...)` calls in `expr`.
fn starts_with_literals(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("startsWith(") {
        rest = &rest[i + "startsWith(".len()..];
        let trimmed = rest.trim_start();
        let Some(quote) = trimmed.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        if let Some(end) = trimmed[1..].find(quote) {
            out.push(trimmed[1..1 + end].to_owned());
        }
    }
    out
}

/// Every lint of `config`, those its issuers allow left out.
pub fn lint(config: &Config) -> Vec<Lint> {
    let mut out = Vec::new();
    if let Some(auth) = &config.auth {
        for issuer in &auth.oidc {
            let mut found = Vec::new();
            lint_issuer(config, issuer, &mut found);
            found.retain(|l| !issuer.allow_lints.iter().any(|a| a.id == l.id));
            out.extend(found);
        }
    }
    lint_access(config, &mut out);
    out
}

fn lint_issuer(config: &Config, e: &IssuerEntry, out: &mut Vec<Lint>) {
    let iss = e.verifier.issuer.trim_end_matches('/');
    let at = |key: &str| format!("auth.oidc[{}].{key}", e.index);
    let mut push = |id, severity, path: String, message: String, fix| {
        out.push(Lint {
            id,
            severity,
            path,
            issuer: Some(e.verifier.issuer.clone()),
            message,
            fix,
        })
    };
    for aud in &e.verifier.audiences {
        if SHARED_AUDIENCES.contains(&aud.as_str()) || aud.trim_end_matches('/') == iss {
            push(
                "G102",
                Severity::Warning,
                at("audiences"),
                format!(
                    "audience `{aud}` is accepted by other relying parties too: a token minted for them also logs in here"
                ),
                "use an audience only Gantry accepts, such as the registry's own URL",
            );
        }
    }
    match e.verifier.max_token_lifetime {
        None => push(
            "G108",
            Severity::Note,
            at("max_token_lifetime_seconds"),
            "no lifetime cap: a long-lived token (a leaked Kubernetes secret token, say) is accepted until it expires".into(),
            "set max_token_lifetime_seconds to what the platform issues (GitHub: 600; Kubernetes projected tokens: 3600-86400)",
        ),
        Some(d) if d.as_secs() > LONG_LIFETIME_SECONDS => push(
            "G108",
            Severity::Warning,
            at("max_token_lifetime_seconds"),
            format!("{} s lets day-long tokens in", d.as_secs()),
            "lower it to what the platform issues (at most 86400)",
        ),
        Some(_) => {}
    }
    // Prefixes: a name this issuer can mint that another identity owns.
    if let Some(ac) = &config.access_control
        && let Some(admin) = &ac.admin_policy
    {
        let user = admin
            .users
            .iter()
            .find(|u| u.starts_with(&e.username_prefix));
        let group = admin
            .groups
            .iter()
            .find(|g| g.starts_with(&e.groups_prefix));
        if let Some(name) = user.or(group) {
            push(
                "G107",
                Severity::Warning,
                at(if user.is_some() {
                    "username_prefix"
                } else {
                    "groups_prefix"
                }),
                format!("the policy can answer a name that makes it `{name}` of admin_policy"),
                "give the issuer its own prefix, and name admin identities with another",
            );
        }
    }
    if let Some(auth) = &config.auth {
        for other in auth.oidc.iter().filter(|o| o.index != e.index) {
            if other.username_prefix.starts_with(&e.username_prefix)
                && (e.username_prefix != other.username_prefix || e.index < other.index)
            {
                push(
                    "G107",
                    Severity::Warning,
                    at("username_prefix"),
                    format!(
                        "prefix `{}` covers `{}` of issuer {}: this issuer can mint its names",
                        e.username_prefix, other.username_prefix, other.verifier.issuer
                    ),
                    "give each issuer a prefix that is not the start of another's",
                );
            }
        }
    }
    let Some((matching, all)) = expressions(e) else {
        return;
    };
    if let Some((_, ids, platform)) = GLOBAL_ISSUERS.iter().find(|(g, ..)| *g == iss)
        && !ids.iter().any(|id| any_mentions(&matching, id))
    {
        push(
            "G101",
            Severity::Warning,
            at("policy.settings"),
            format!(
                "{platform} issues tokens to everyone on it, and no validation pins `{}`: any of them could log in",
                ids[0]
            ),
            "add a validation on the immutable tenant id claim, e.g. claims.repository_owner_id == '<id>'",
        );
    }
    for (name, ids) in MUTABLE {
        if any_mentions(&matching, name) && !ids.iter().any(|id| any_mentions(&all, id)) {
            push(
                "G103",
                Severity::Warning,
                at("policy.settings"),
                format!(
                    "`{name}` is matched, a name that can be renamed and registered again by someone else"
                ),
                "match the id claim instead (or as well): repository_id, repository_owner_id, project_id, namespace_id",
            );
        }
    }
    for literal in matching.iter().flat_map(|e| starts_with_literals(e)) {
        // A prefix that ends with a separator names a family on purpose
        // (`team-`, `refs/heads/`); one that ends in a name does not.
        if !literal.is_empty() && !literal.ends_with(['/', ':', '-', '.', '@']) {
            push(
                "G104",
                Severity::Warning,
                at("policy.settings"),
                format!("startsWith('{literal}') also matches '{literal}-evil'"),
                "end the prefix with its separator: startsWith('my-org/') or startsWith('project:')",
            );
        }
    }
    if iss == "https://token.actions.githubusercontent.com"
        && !any_mentions(&matching, "event_name")
        && !any_mentions(&matching, "runner_environment")
        && let Some(grant) = push_grant(config, e)
    {
        push(
            "G105",
            Severity::Warning,
            at("policy.settings"),
            format!(
                "{grant} lets this issuer's identities push, and nothing pins event_name or runner_environment: pull_request_target workflows and self-hosted runners get the same identity"
            ),
            "validate claims.event_name (not pull_request_target) and claims.runner_environment == 'github-hosted'",
        );
    }
    if any_mentions(&all, "email") && !any_mentions(&all, "email_verified") {
        push(
            "G106",
            Severity::Warning,
            at("policy.settings"),
            "`email` is used without `email_verified`: anyone can claim an address they do not own"
                .into(),
            "add a validation claims.email_verified == true",
        );
    }
}

/// Where access control lets identities of issuer `e` push (create or
/// update), named by its key path; `None` when nothing does. Without
/// `[access_control]` every authenticated identity may push.
fn push_grant(config: &Config, e: &IssuerEntry) -> Option<String> {
    let pushes = |a: ActionSet| a.contains(Action::Create) || a.contains(Action::Update);
    let Some(ac) = &config.access_control else {
        return Some("the absence of [access_control]".into());
    };
    let ours = |g: &Grant| {
        pushes(g.actions)
            && (g.users.iter().any(|u| u.starts_with(&e.username_prefix))
                || g.groups.iter().any(|g| g.starts_with(&e.groups_prefix)))
    };
    if ac.admin_policy.as_ref().is_some_and(ours) {
        return Some("access_control.admin_policy".into());
    }
    ac.repositories.iter().find_map(|r| {
        let at = format!("access_control.repositories.\"{}\"", r.pattern);
        if pushes(r.default_policy) {
            Some(format!("{at}.default_policy"))
        } else {
            r.policies
                .iter()
                .any(ours)
                .then(|| format!("{at}.policies"))
        }
    })
}

fn lint_access(config: &Config, out: &mut Vec<Lint>) {
    let Some(ac) = &config.access_control else {
        return;
    };
    for r in &ac.repositories {
        let grants_read = r.default_policy.contains(Action::Read)
            || r.policies.iter().any(|g| g.actions.contains(Action::Read));
        if r.anonymous_policy.contains(Action::Read) && !grants_read {
            out.push(Lint {
                id: "G109",
                severity: Severity::Warning,
                path: format!("access_control.repositories.\"{}\"", r.pattern),
                issuer: None,
                message: "anonymous callers may read, authenticated ones may not: a client that logs in gets 403".into(),
                fix: "add \"read\" to default_policy",
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lints(text: &str) -> Vec<Lint> {
        let c = Config::from_toml_str(text, "t.toml", std::path::Path::new("/etc/gantry"))
            .unwrap_or_else(|e| panic!("{e}"));
        lint(&c)
    }

    fn ids(text: &str) -> Vec<&'static str> {
        let mut v: Vec<_> = lints(text)
            .into_iter()
            .filter(|l| l.severity == Severity::Warning)
            .map(|l| l.id)
            .collect();
        v.dedup();
        v
    }

    const GITHUB_OK: &str = r#"
[auth]
[[auth.oidc]]
issuer = "https://token.actions.githubusercontent.com"
audiences = ["https://registry.example.com"]
max_token_lifetime_seconds = 600
username_prefix = "gh:"
groups_prefix = "gh:"
[auth.oidc.policy.settings]
username = "claims.repository"
validations = [
  { expression = "claims.repository_owner_id == '65432109'", message = "octo-org" },
  { expression = "claims.event_name in ['push', 'workflow_dispatch']", message = "events" },
  { expression = "claims.runner_environment == 'github-hosted'", message = "hosted" },
]
"#;

    #[test]
    fn a_pinned_github_issuer_is_clean() {
        assert_eq!(lints(GITHUB_OK), vec![]);
    }

    #[test]
    fn each_lint_fires_on_its_config() {
        let cases: &[(&str, String)] = &[
            ("G101", GITHUB_OK.replace("claims.repository_owner_id == '65432109'", "claims.repository_owner == 'octo-org'")),
            ("G102", GITHUB_OK.replace("https://registry.example.com", "sts.amazonaws.com")),
            ("G103", GITHUB_OK.replace("claims.repository_owner_id == '65432109'", "claims.repository == 'octo-org/app' && claims.event_name != ''")),
            ("G104", GITHUB_OK.replace("claims.runner_environment == 'github-hosted'", "claims.runner_environment == 'github-hosted' && claims.ref.startsWith('refs/heads/release')")),
            ("G105", GITHUB_OK.replace("claims.event_name in ['push', 'workflow_dispatch']", "true").replace("claims.runner_environment == 'github-hosted'", "true")),
            ("G106", GITHUB_OK.replace("username = \"claims.repository\"", "username = \"claims.email\"")),
            ("G107", format!("{GITHUB_OK}\n[access_control.admin_policy]\nusers = [\"gh:root\"]\nactions = [\"delete\"]\n")),
            ("G108", GITHUB_OK.replace("max_token_lifetime_seconds = 600", "max_token_lifetime_seconds = 604800")),
            ("G109", format!("{GITHUB_OK}\n[access_control.repositories.\"public/**\"]\nanonymous_policy = [\"read\"]\n")),
        ];
        for (id, text) in cases {
            let found = ids(text);
            assert!(
                found.contains(id),
                "{id} not found in {found:?} for\n{text}"
            );
            let l = lints(text).into_iter().find(|l| l.id == *id).expect("lint");
            assert!(!l.fix.is_empty() && !l.path.is_empty(), "{l}");
        }
        assert_eq!(IDS.len(), cases.len());
    }

    #[test]
    fn unpinned_events_matter_only_where_the_issuer_may_push() {
        let unpinned = GITHUB_OK
            .replace("claims.event_name in ['push', 'workflow_dispatch']", "true")
            .replace("claims.runner_environment == 'github-hosted'", "true");
        let pull_only = format!(
            "{unpinned}\n[access_control.repositories.\"**\"]\ndefault_policy = [\"read\"]\n\
             [[access_control.repositories.\"**\".policies]]\nusers = [\"ci:deployer\"]\nactions = [\"read\", \"create\"]\n"
        );
        assert!(!ids(&pull_only).contains(&"G105"), "{pull_only}");
        let ours = pull_only.replace("ci:deployer", "gh:octo-org/app");
        let found = lints(&ours);
        let g105 = found.iter().find(|l| l.id == "G105").expect("G105");
        assert!(
            g105.message
                .starts_with("access_control.repositories.\"**\".policies lets"),
            "{g105}"
        );
        let by_group = pull_only.replace("users = [\"ci:deployer\"]", "groups = [\"gh:octo-org\"]");
        assert!(ids(&by_group).contains(&"G105"), "{by_group}");
        let for_all = pull_only.replace(
            "default_policy = [\"read\"]",
            "default_policy = [\"read\", \"update\"]",
        );
        assert!(ids(&for_all).contains(&"G105"), "{for_all}");
    }

    #[test]
    fn two_issuers_with_nested_prefixes_and_shared_audiences() {
        let text = r#"
[auth]
[[auth.oidc]]
issuer = "https://k8s-a.example.com"
audiences = ["https://k8s-a.example.com"]
max_token_lifetime_seconds = 3600
username_prefix = "k8s"
groups_prefix = "k8s"
[[auth.oidc]]
issuer = "https://k8s-b.example.com"
audiences = ["gantry"]
max_token_lifetime_seconds = 3600
username_prefix = "k8s-b:"
groups_prefix = "k8s-b:"
"#;
        let found = lints(text);
        assert!(
            found
                .iter()
                .any(|l| l.id == "G107" && l.path == "auth.oidc[0].username_prefix"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|l| l.id == "G102" && l.path == "auth.oidc[0].audiences"),
            "{found:?}"
        );
        assert!(
            !found.iter().any(|l| l.path.starts_with("auth.oidc[1]")),
            "{found:?}"
        );
    }

    #[test]
    fn an_issuer_can_allow_a_lint_with_a_reason() {
        let text = GITHUB_OK.replace(
            "username_prefix = \"gh:\"",
            "username_prefix = \"gh:\"\nallow_lints = [{ id = \"G102\", reason = \"our STS federation is the same trust boundary\" }]",
        )
        .replace("https://registry.example.com", "sts.amazonaws.com");
        assert_eq!(ids(&text), Vec::<&str>::new());
    }

    /// The repository's own examples pass clean: the default configuration,
    /// and each CEL example policy under the issuer it is written for.
    #[test]
    fn the_repositorys_examples_pass_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let default = Config::embedded_default().expect("embedded default");
        assert_eq!(lint(&default), vec![]);
        for (file, issuer) in [
            (
                "github-actions",
                "https://token.actions.githubusercontent.com",
            ),
            ("gitlab-ci", "https://gitlab.com"),
            ("kubernetes", "https://k8s.example.com"),
        ] {
            let path = root.join(format!("examples/policies/cel/{file}.toml"));
            let settings = std::fs::read_to_string(&path).expect("example");
            // The file's tables become tables of the issuer's settings.
            let settings = settings
                .replace("[[variables]]", "[[auth.oidc.policy.settings.variables]]")
                .replace(
                    "[[validations]]",
                    "[[auth.oidc.policy.settings.validations]]",
                );
            let text = format!(
                "[auth]\n[[auth.oidc]]\nissuer = \"{issuer}\"\naudiences = [\"https://registry.example.com\"]\nmax_token_lifetime_seconds = 3600\nusername_prefix = \"{file}:\"\ngroups_prefix = \"{file}:\"\n[auth.oidc.policy.settings]\n{settings}"
            );
            let found = lints(&text);
            assert_eq!(
                found,
                vec![],
                "{}:\n{}",
                path.display(),
                found
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }

    #[test]
    fn starts_with_literals_are_found() {
        assert_eq!(
            starts_with_literals("claims.sub.startsWith('a:b') || x.startsWith( \"c/\" )"),
            ["a:b", "c/"]
        );
        assert!(mentions(
            "claims['repository_owner_id'] == '1'",
            "repository_owner_id"
        ));
        assert!(!mentions(
            "claims.repository_owner_id == '1'",
            "repository_owner"
        ));
        assert!(mentions(
            "has(claims.email) && claims.email_verified",
            "email"
        ));
    }
}
