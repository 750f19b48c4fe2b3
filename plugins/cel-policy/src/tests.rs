//! Native tests of the policy: the CEL operators write, the settings, and
//! every way an expression can fail to compile or to evaluate.

use crate::{Decision, Policy};
use serde_json::json;

const KUBERNETES: &str = include_str!("../../../tests/fixtures/claims/kubernetes.json");
const GITHUB: &str = include_str!("../../../tests/fixtures/claims/github-actions.json");
const GITLAB: &str = include_str!("../../../tests/fixtures/claims/gitlab-ci.json");

fn policy(settings: serde_json::Value) -> Policy {
    match Policy::new(&settings.to_string()) {
        Ok(policy) => policy,
        Err(e) => panic!("settings {settings} refused: {e}"),
    }
}

fn init_error(settings: serde_json::Value) -> String {
    match Policy::new(&settings.to_string()) {
        Ok(_) => panic!("settings {settings} accepted"),
        Err(e) => e,
    }
}

fn deny_reason(decision: Decision) -> String {
    match decision {
        Decision::Deny(reason) => reason,
        allow => panic!("expected a deny, got {allow:?}"),
    }
}

fn allow(username: &str, groups: &[&str]) -> Decision {
    Decision::Allow {
        username: username.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// Evaluates `expr` as the username against `claims`, expecting a string.
fn eval_string(claims: &str, expr: &str) -> String {
    match policy(json!({ "username": expr })).evaluate(claims) {
        Decision::Allow { username, .. } => username,
        Decision::Deny(reason) => panic!("`{expr}` denied: {reason}"),
    }
}

/// Evaluates `expr` as the only validation against `claims`.
fn eval_bool(claims: &str, expr: &str) -> bool {
    let p = policy(json!({ "validations": [{ "expression": expr, "message": "false" }] }));
    match p.evaluate(claims) {
        Decision::Allow { .. } => true,
        Decision::Deny(reason) if reason == "false" => false,
        Decision::Deny(reason) => panic!("`{expr}` failed: {reason}"),
    }
}

#[test]
fn default_settings_map_sub_to_the_username() {
    for settings in ["", "{}", "null"] {
        let p = Policy::new(settings).expect("defaults");
        assert_eq!(
            p.evaluate(KUBERNETES),
            allow("system:serviceaccount:team-payments:image-pusher", &[])
        );
    }
}

#[test]
fn the_cel_operators_write_is_supported() {
    let true_on_kubernetes = [
        // field and index access, nested objects
        "claims['kubernetes.io'].serviceaccount.name == 'image-pusher'",
        "claims.aud[0] == 'https://registry.example.com'",
        // has(), in, comparisons, logic, ternary
        "has(claims['kubernetes.io'].pod) && !has(claims.email)",
        "'https://registry.example.com' in claims.aud && 'namespace' in claims['kubernetes.io']",
        "claims.exp > claims.iat && claims.exp - claims.iat <= 3600 && claims.nbf >= 1767225600",
        "(claims.sub == 'x' || true) && !(1 > 2)",
        "(has(claims.email) ? claims.email : 'none') == 'none'",
        // size
        "size(claims.aud) == 1 && claims.aud.size() == 1 && size(claims.sub) > 10",
        // strings
        "claims.sub.startsWith('system:serviceaccount:') && claims.sub.endsWith(':image-pusher')",
        "claims.sub.contains(':team-payments:')",
        "claims.sub.matches('^system:serviceaccount:[a-z0-9-]+:[a-z0-9-]+$')",
        "claims.sub.split(':')[2] == 'team-payments' && size(claims.sub.split(':')) == 4",
        "'Team-Payments'.lowerAscii() == claims['kubernetes.io'].namespace",
        // list macros
        "claims.aud.exists(a, a.startsWith('https://'))",
        "claims.aud.all(a, a.endsWith('.com'))",
        "claims.aud.map(a, a.size()) == [28]",
        "claims.aud.filter(a, a.contains('registry')) == claims.aud",
        "claims['kubernetes.io'].exists(k, k == 'pod')",
        // conversions
        "string(claims.exp) == '1767229200' && int('42') == 42 && int(claims.exp) == claims.exp",
        "string(true) == 'true' && int(2.7) == 2",
        // types of JSON numbers and the namespaces the environment registers
        "type(claims.exp) == int && type(claims.aud) == list && type(claims.sub) == string",
        "strings.quote('a') == '\"a\"' && optional.of(1).hasValue()",
    ];
    for expr in true_on_kubernetes {
        assert!(eval_bool(KUBERNETES, expr), "`{expr}` should be true");
    }
    assert!(!eval_bool(KUBERNETES, "claims.sub.startsWith('repo:')"));
}

#[test]
fn github_and_gitlab_claims_are_usable() {
    assert!(eval_bool(
        GITHUB,
        "int(claims.repository_owner_id) == 65432109"
    ));
    assert!(eval_bool(
        GITHUB,
        "claims.job_workflow_ref.split('@')[1] == 'refs/heads/main'"
    ));
    assert!(eval_bool(
        GITHUB,
        "claims.ref.matches(r'^refs/tags/v[0-9]+\\.[0-9]+\\.[0-9]+$')"
    ));
    assert_eq!(
        eval_string(GITHUB, "claims.repository_owner + '/' + claims.ref_type"),
        "octo-org/tag"
    );
    assert!(eval_bool(
        GITLAB,
        "claims.runner_id == 118 && claims.ref_type == 'branch'"
    ));
    assert_eq!(
        eval_string(GITLAB, "claims.project_path.split('/')[0]"),
        "platform"
    );
}

#[test]
fn every_settings_field_works_together() {
    let p = policy(json!({
        "variables": [
            { "name": "ns", "expression": "claims['kubernetes.io'].namespace" },
            { "name": "team", "expression": "vars.ns.substring(5)" },
        ],
        "validations": [
            { "expression": "vars.ns.startsWith('team-')", "message": "not a team namespace" },
            { "expression": "vars['team'] != 'root'", "message": "no root team" },
        ],
        "username": "claims['kubernetes.io'].serviceaccount.name + '@' + vars.ns",
        "groups": "['team:' + vars.team, 'all']",
    }));
    assert_eq!(
        p.evaluate(KUBERNETES),
        allow("image-pusher@team-payments", &["team:payments", "all"])
    );
    assert!(
        p.summary().contains("2 variable(s), 2 validation(s)"),
        "{}",
        p.summary()
    );
}

#[test]
fn vars_reads_the_same_by_name_as_a_whole_and_under_a_macro() {
    // `vars.<name>` resolves as a qualified name; `vars['x']`, `has(vars.x)`,
    // `size(vars)` and `'x' in vars` need the map: both must agree, at every
    // step, with a variable defined after the map was first bound.
    let p = policy(json!({
        "variables": [
            { "name": "ns", "expression": "claims['kubernetes.io'].namespace" },
            { "name": "seen", "expression": "size(vars)" },
            { "name": "k8s", "expression": "claims['kubernetes.io']" },
        ],
        "validations": [
            { "expression": "vars.seen == 1 && size(vars) == 3", "message": "sizes" },
            { "expression": "vars['k8s'].serviceaccount.name == vars.k8s.serviceaccount.name", "message": "index" },
            { "expression": "has(vars.k8s) && has(vars.k8s.pod) && !has(vars.k8s.nope)", "message": "has" },
            { "expression": "'ns' in vars && !('nope' in vars)", "message": "in" },
            // A macro's own variable named `vars` shadows the policy's.
            { "expression": "[{'ns': 'x'}].all(vars, vars.ns == 'x')", "message": "shadow" },
        ],
        "username": "vars.ns + ':' + vars['k8s'].serviceaccount.name",
    }));
    assert_eq!(
        p.evaluate(KUBERNETES),
        allow("team-payments:image-pusher", &[])
    );

    // By name alone, no expression needs the map.
    let p = policy(json!({
        "variables": [
            { "name": "k8s", "expression": "claims['kubernetes.io']" },
            { "name": "ns", "expression": "vars.k8s.namespace" },
        ],
        "validations": [{ "expression": "has(vars.k8s.pod)", "message": "no pod" }],
        "username": "vars.ns + ':' + vars.k8s.serviceaccount.name",
        "groups": "[vars.ns]",
    }));
    assert_eq!(
        p.evaluate(KUBERNETES),
        allow("team-payments:image-pusher", &["team-payments"])
    );
}

#[test]
fn the_first_false_validation_denies_with_its_message() {
    let p = policy(json!({
        "validations": [
            { "expression": "true", "message": "first" },
            { "expression": "claims.sub.startsWith('repo:')", "message": "only GitHub repositories" },
            { "expression": "false", "message": "third" },
        ],
    }));
    assert_eq!(
        p.evaluate(KUBERNETES),
        Decision::Deny("only GitHub repositories".to_owned())
    );
}

#[test]
fn compile_errors_name_the_field_the_expression_and_the_position() {
    let err = init_error(json!({
        "validations": [
            { "expression": "true", "message": "a" },
            { "expression": "true", "message": "b" },
            { "expression": "claims.sub ==", "message": "c" },
        ],
    }));
    assert!(
        err.starts_with("validations[2].expression: `claims.sub ==` does not compile:"),
        "{err}"
    );
    assert!(err.contains("line 1, column 14"), "{err}");

    let err = init_error(json!({ "username": "claims.sub +\n  )" }));
    assert!(err.starts_with("username: "), "{err}");
    assert!(err.contains("line 2, column 3"), "{err}");

    let err = init_error(
        json!({ "variables": [{ "name": "x", "expression": "claims.sub.startsWith('a'" }] }),
    );
    assert!(err.starts_with("variables[0].expression: "), "{err}");

    let err = init_error(json!({ "groups": "[claims.sub" }));
    assert!(
        err.starts_with("groups: `[claims.sub` does not compile"),
        "{err}"
    );

    let err = init_error(json!({ "username": "   " }));
    assert_eq!(err, "username: the expression is empty");
}

#[test]
fn unknown_identifiers_are_refused_at_init_with_their_position() {
    let err = init_error(
        json!({ "validations": [{ "expression": "true && claim.sub == 'x'", "message": "m" }] }),
    );
    assert!(
        err.starts_with(
            "validations[0].expression: `true && claim.sub == 'x'` at line 1, column 9:"
        ),
        "{err}"
    );
    assert!(err.contains("unknown identifier `claim`"), "{err}");

    // A macro's variable is known inside it, and only there.
    policy(json!({ "username": "claims.aud.exists(a, a == 'x') ? 'a' : 'b'" }));
    let err = init_error(json!({ "username": "claims.aud.exists(a, a == 'x') ? a : 'b'" }));
    assert!(err.contains("unknown identifier `a`"), "{err}");
}

#[test]
fn vars_must_name_an_earlier_variable() {
    let err = init_error(json!({
        "variables": [
            { "name": "a", "expression": "vars.b" },
            { "name": "b", "expression": "1" },
        ],
    }));
    assert!(
        err.starts_with("variables[0].expression: `vars.b` at line 1, column 1:"),
        "{err}"
    );
    assert!(err.contains("no variable is defined before it"), "{err}");

    let err = init_error(json!({
        "variables": [{ "name": "ns", "expression": "claims.sub" }],
        "username": "vars.namespace",
    }));
    assert!(err.contains("`vars.namespace` is not a variable defined before this expression (defined before it: ns)"), "{err}");

    let err = init_error(json!({
        "variables": [{ "name": "ns", "expression": "claims.sub" }],
        "groups": "[vars['nope']]",
    }));
    assert!(err.contains("`vars.nope`"), "{err}");
}

#[test]
fn variable_names_are_checked() {
    for (name, problem) in [
        ("1st", "is not a valid name"),
        ("a-b", "is not a valid name"),
        ("", "is not a valid name"),
        ("in", "is a CEL keyword"),
        ("null", "is a CEL keyword"),
    ] {
        let err = init_error(json!({ "variables": [{ "name": name, "expression": "1" }] }));
        assert!(
            err.starts_with("variables[0].name: ") && err.contains(problem),
            "{name}: {err}"
        );
    }
    // Reserved as identifiers, yet valid after `vars.`.
    let p = policy(json!({
        "variables": [{ "name": "namespace", "expression": "'ns'" }, { "name": "package", "expression": "'p'" }],
        "username": "vars.namespace + '/' + vars.package",
    }));
    assert_eq!(p.evaluate(KUBERNETES), allow("ns/p", &[]));

    let err = init_error(json!({
        "variables": [{ "name": "x", "expression": "1" }, { "name": "x", "expression": "2" }],
    }));
    assert!(
        err.starts_with("variables[1].name: `x` is already defined"),
        "{err}"
    );
}

#[test]
fn unknown_settings_keys_and_empty_messages_are_refused() {
    let err = init_error(json!({ "validation": [] }));
    assert!(
        err.starts_with("settings: unknown field `validation`"),
        "{err}"
    );
    let err = init_error(json!({ "validations": [{ "expression": "true", "message": " " }] }));
    assert_eq!(err, "validations[0].message: must not be empty");
}

#[test]
fn a_missing_key_denies_naming_the_expression() {
    let p = policy(
        json!({ "validations": [{ "expression": "claims.email.endsWith('@example.com')", "message": "m" }] }),
    );
    let reason = deny_reason(p.evaluate(KUBERNETES));
    assert!(
        reason.starts_with(
            "validations[0].expression `claims.email.endsWith('@example.com')` failed:"
        ),
        "{reason}"
    );
    assert!(reason.contains("email"), "{reason}");

    let p = policy(json!({ "variables": [{ "name": "repo", "expression": "claims.repository" }] }));
    let reason = deny_reason(p.evaluate(KUBERNETES));
    assert!(
        reason.starts_with("variables[0].expression `claims.repository` failed:"),
        "{reason}"
    );

    let p = policy(json!({ "username": "claims.email" }));
    assert!(deny_reason(p.evaluate(GITHUB)).starts_with("username `claims.email` failed:"));
}

#[test]
fn a_type_error_denies_naming_the_expression() {
    let p = policy(
        json!({ "validations": [{ "expression": "claims.exp + 'x' == 'y'", "message": "m" }] }),
    );
    let reason = deny_reason(p.evaluate(KUBERNETES));
    assert!(
        reason.starts_with("validations[0].expression `claims.exp + 'x' == 'y'` failed:"),
        "{reason}"
    );

    let p = policy(json!({ "username": "int(claims.sub)" }));
    assert!(deny_reason(p.evaluate(KUBERNETES)).starts_with("username `int(claims.sub)` failed:"));
}

#[test]
fn a_validation_that_is_not_a_bool_denies() {
    for (expr, got) in [
        ("claims.sub", "string \"system:"),
        ("claims.exp", "int"),
        ("claims.aud", "list"),
    ] {
        let p = policy(json!({ "validations": [{ "expression": expr, "message": "m" }] }));
        let reason = deny_reason(p.evaluate(KUBERNETES));
        assert!(
            reason.starts_with(&format!(
                "validations[0].expression `{expr}` must yield a bool, got {got}"
            )),
            "{reason}"
        );
    }
}

#[test]
fn the_username_must_be_a_non_empty_string() {
    let reason = deny_reason(policy(json!({ "username": "''" })).evaluate(KUBERNETES));
    assert_eq!(reason, "username `''` yielded an empty username");
    let reason = deny_reason(policy(json!({ "username": "claims.exp" })).evaluate(KUBERNETES));
    assert_eq!(reason, "username `claims.exp` must yield a string, got int");
    let reason = deny_reason(policy(json!({ "username": "claims.aud" })).evaluate(KUBERNETES));
    assert_eq!(
        reason,
        "username `claims.aud` must yield a string, got list"
    );
}

#[test]
fn the_groups_must_be_a_list_of_strings() {
    let reason = deny_reason(policy(json!({ "groups": "claims.sub" })).evaluate(KUBERNETES));
    assert!(
        reason.starts_with("groups `claims.sub` must yield a list of strings, got string"),
        "{reason}"
    );
    let reason = deny_reason(policy(json!({ "groups": "['a', claims.exp]" })).evaluate(KUBERNETES));
    assert_eq!(
        reason,
        "groups `['a', claims.exp]` must yield a list of strings, but item 1 is int"
    );
    let reason = deny_reason(policy(json!({ "groups": "['a', '']" })).evaluate(KUBERNETES));
    assert_eq!(
        reason,
        "groups `['a', '']` yielded an empty group at index 1"
    );
    assert_eq!(
        policy(json!({ "groups": "[]" })).evaluate(GITLAB),
        allow(
            "project_path:platform/build/image-builder:ref_type:branch:ref:main",
            &[]
        )
    );
}

#[test]
fn claims_must_be_a_json_object() {
    let p = Policy::new("{}").expect("defaults");
    assert_eq!(
        deny_reason(p.evaluate("[1, 2]")),
        "claims must be a JSON object"
    );
    assert!(deny_reason(p.evaluate("{not json")).starts_with("claims are not valid JSON"));
    assert!(deny_reason(p.evaluate("{}")).starts_with("username `claims.sub` failed:"));
}

#[test]
fn deny_messages_are_bounded() {
    let long = "x".repeat(10_000);
    let claims = json!({ "sub": long }).to_string();
    let p =
        policy(json!({ "validations": [{ "expression": "claims.sub + 1 == 2", "message": "m" }] }));
    let reason = deny_reason(p.evaluate(&claims));
    assert!(
        reason.len() <= 1024 + '…'.len_utf8(),
        "{} bytes",
        reason.len()
    );
    assert!(reason.ends_with('…'));
}

#[test]
fn one_policy_evaluates_many_claim_sets_independently() {
    let p = policy(json!({
        "variables": [{ "name": "who", "expression": "has(claims.repository) ? claims.repository : claims.sub" }],
        "username": "vars.who",
    }));
    for _ in 0..3 {
        assert_eq!(p.evaluate(GITHUB), allow("octo-org/payments-api", &[]));
        assert_eq!(
            p.evaluate(KUBERNETES),
            allow("system:serviceaccount:team-payments:image-pusher", &[])
        );
    }
}

#[test]
fn matches_patterns_are_compiled_at_init() {
    let err = init_error(
        json!({ "validations": [{ "expression": "true && claims.sub.matches('[a-')", "message": "m" }] }),
    );
    assert!(
        err.starts_with(
            "validations[0].expression: `true && claims.sub.matches('[a-')` at line 1, column "
        ),
        "{err}"
    );
    assert!(err.contains("`[a-` is not a valid regex"), "{err}");

    // Unicode general categories are not compiled in: refused at load, never
    // silently false.
    let err = init_error(json!({ "username": "matches(claims.sub, '\\\\p{L}') ? 'a' : 'b'" }));
    assert!(
        err.starts_with("username: ") && err.contains("is not a valid regex"),
        "{err}"
    );

    assert!(eval_bool(
        KUBERNETES,
        "matches(claims.sub, ':image-pusher$')"
    ));
    assert!(!eval_bool(KUBERNETES, "claims.sub.matches('^repo:')"));
}

#[test]
fn a_pattern_built_at_evaluation_works_and_an_invalid_one_denies() {
    assert!(eval_bool(
        KUBERNETES,
        "claims.sub.matches('^' + 'system:' + '.*' + claims['kubernetes.io'].namespace)"
    ));
    let claims = json!({ "sub": "x", "pattern": "(" }).to_string();
    let p = policy(
        json!({ "validations": [{ "expression": "claims.sub.matches(claims.pattern)", "message": "m" }] }),
    );
    let reason = deny_reason(p.evaluate(&claims));
    assert!(reason.contains("`(` is not a valid regex"), "{reason}");
}

/// The claims are converted only as far as the expressions read them; what
/// they decide must not change.
#[test]
fn reading_only_some_claims_changes_no_decision() {
    // `size(claims)` reads the whole map.
    let p =
        policy(json!({ "validations": [{ "expression": "size(claims) == 30", "message": "m" }] }));
    assert!(matches!(p.evaluate(GITHUB), Decision::Allow { .. }));
    // A key computed at evaluation.
    let p = policy(json!({
        "variables": [{ "name": "k", "expression": "'repository'" }],
        "username": "claims[vars.k]",
    }));
    assert_eq!(p.evaluate(GITHUB), allow("octo-org/payments-api", &[]));
    // A macro variable named `claims` shadows the claims.
    let p = policy(json!({
        "validations": [{ "expression": "[{'sub': 1}].all(claims, claims.sub == 1)", "message": "m" }],
        "username": "claims.repository",
    }));
    assert_eq!(p.evaluate(GITHUB), allow("octo-org/payments-api", &[]));
    // A claim read by one expression is there for all of them.
    let p = policy(json!({
        "validations": [{ "expression": "has(claims.environment) || claims.ref_type == 'tag'", "message": "m" }],
        "username": "claims['repository_owner']",
        "groups": "[claims.actor]",
    }));
    assert_eq!(p.evaluate(GITHUB), allow("octo-org", &["octocat"]));
}
