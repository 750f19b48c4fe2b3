//! The default CEL policy (`builtin:cel`, the component embedded in the
//! binary) through the host's policy runtime: realistic Kubernetes, GitHub
//! Actions and GitLab CI claim sets, every settings field, every way settings
//! or an evaluation can fail, and every example settings file in the repo.
//!
//! The CEL logic itself is unit-tested natively in `plugins/cel-policy`;
//! these tests prove the same behaviour holds inside the sandbox, with the
//! settings and claims as the host passes them.

use std::path::{Path, PathBuf};

use gantry::policy::{
    Decision, Identity, Limits, LoadedPolicy, ModuleSource, PolicyEngine, PolicyError,
};
use serde_json::{Value, json};

/// One engine for the whole file: the CEL component is compiled once.
fn engine() -> PolicyEngine {
    gantry_tests::shared_engine()
}

fn cel() -> ModuleSource {
    "builtin:cel"
        .parse()
        .unwrap_or_else(|e| panic!("builtin:cel: {e}"))
}

/// Keeps one CEL policy loaded for the whole test binary. The engine keeps a
/// compiled module only while some policy uses it, and these tests run in
/// parallel, each on its own runtime: without a keeper, a test starting when
/// none happens to hold the module would compile the component again.
async fn keep_compiled() {
    static KEEPER: tokio::sync::OnceCell<LoadedPolicy> = tokio::sync::OnceCell::const_new();
    KEEPER
        .get_or_init(|| async {
            engine()
                .load(
                    "https://keeper.example",
                    &cel(),
                    &json!({}),
                    Limits::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("loading builtin:cel: {e}"))
        })
        .await;
}

async fn load(owner: &str, settings: Value) -> LoadedPolicy {
    keep_compiled().await;
    engine()
        .load(owner, &cel(), &settings, Limits::default())
        .await
        .unwrap_or_else(|e| panic!("loading builtin:cel for {owner} with {settings}: {e}"))
}

/// The message of a load that must fail because `init` refused the settings.
async fn refused(owner: &str, settings: Value) -> String {
    keep_compiled().await;
    match engine()
        .load(owner, &cel(), &settings, Limits::default())
        .await
    {
        Ok(_) => panic!("settings {settings} should be refused"),
        Err(e @ PolicyError::SettingsRefused { .. }) => {
            let text = e.to_string();
            assert!(text.contains(owner), "the error names the issuer: {text}");
            text
        }
        Err(other) => panic!("expected SettingsRefused, got {other:?}"),
    }
}

async fn decide(policy: &LoadedPolicy, claims: &Value) -> Decision {
    policy
        .evaluate(claims)
        .await
        .unwrap_or_else(|e| panic!("evaluating {claims}: {e}"))
}

async fn deny_reason(policy: &LoadedPolicy, claims: &Value) -> String {
    match decide(policy, claims).await {
        Decision::Deny(reason) => reason,
        allow => panic!("{} should deny {claims}, got {allow:?}", policy.owner()),
    }
}

fn allow(username: &str, groups: &[&str]) -> Decision {
    Decision::Allow(Identity {
        username: username.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    })
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| panic!("tests/ has a parent"))
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A claim set of `tests/fixtures/claims/`.
fn fixture(name: &str) -> Value {
    let path = repo_root()
        .join("tests/fixtures/claims")
        .join(format!("{name}.json"));
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A settings file (TOML or JSON) as the JSON document `init` receives.
fn settings_file(path: &Path) -> Value {
    let text = read(path);
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        Some("json") => {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }
        _ => panic!("{}: settings are .toml or .json", path.display()),
    }
}

fn example(name: &str) -> Value {
    settings_file(
        &repo_root()
            .join("examples/policies/cel")
            .join(format!("{name}.toml")),
    )
}

// --- Realistic claim sets ----------------------------------------------------

#[tokio::test]
async fn kubernetes_service_account_token() {
    let policy = load(
        "https://oidc.prod-eu.k8s.example.com",
        json!({
            "variables": [
                { "name": "ns", "expression": "claims['kubernetes.io'].namespace" },
                { "name": "sa", "expression": "claims['kubernetes.io'].serviceaccount.name" },
            ],
            "validations": [
                { "expression": "vars.ns.startsWith('team-')", "message": "not a team namespace" },
                { "expression": "has(claims['kubernetes.io'].pod)", "message": "not bound to a pod" },
                { "expression": "'https://registry.example.com' in claims.aud", "message": "wrong audience" },
            ],
            "username": "'system:serviceaccount:' + vars.ns + ':' + vars.sa",
            "groups": "['namespace:' + vars.ns] + claims.aud.map(a, 'aud:' + a.split('//')[1])",
        }),
    )
    .await;
    let claims = fixture("kubernetes");
    assert_eq!(
        decide(&policy, &claims).await,
        allow(
            "system:serviceaccount:team-payments:image-pusher",
            &["namespace:team-payments", "aud:registry.example.com"]
        )
    );

    let mut kube_system = claims.clone();
    kube_system["kubernetes.io"]["namespace"] = json!("kube-system");
    assert_eq!(
        deny_reason(&policy, &kube_system).await,
        "not a team namespace"
    );

    let mut unbound = claims.clone();
    if let Some(k8s) = unbound["kubernetes.io"].as_object_mut() {
        k8s.remove("pod");
    }
    assert_eq!(deny_reason(&policy, &unbound).await, "not bound to a pod");
}

#[tokio::test]
async fn github_actions_token() {
    let policy = load(
        "https://token.actions.githubusercontent.com",
        json!({
            "variables": [
                { "name": "owner_id", "expression": "int(claims.repository_owner_id)" },
                { "name": "workflow", "expression": "claims.job_workflow_ref.split('@')[0]" },
            ],
            "validations": [
                { "expression": "vars.owner_id == 65432109", "message": "foreign owner" },
                { "expression": "vars.workflow.endsWith('/publish-image.yml')", "message": "wrong workflow" },
                { "expression": "claims.ref.startsWith('refs/tags/v') || claims.ref == 'refs/heads/main'", "message": "wrong ref" },
            ],
            "username": "claims.repository",
            "groups": "[claims.repository_owner, claims.runner_environment]",
        }),
    )
    .await;
    let claims = fixture("github-actions");
    assert_eq!(
        decide(&policy, &claims).await,
        allow("octo-org/payments-api", &["octo-org", "github-hosted"])
    );

    // A same-named organisation re-registered by someone else has another id.
    let mut impostor = claims.clone();
    impostor["repository_owner_id"] = json!("99999999");
    assert_eq!(deny_reason(&policy, &impostor).await, "foreign owner");

    let mut feature = claims.clone();
    feature["ref"] = json!("refs/heads/feature/x");
    assert_eq!(deny_reason(&policy, &feature).await, "wrong ref");
}

#[tokio::test]
async fn gitlab_ci_token() {
    let policy = load(
        "https://gitlab.example.com",
        json!({
            "validations": [
                { "expression": "claims.namespace_path.split('/')[0] == 'platform'", "message": "not a platform project" },
                { "expression": "claims.ref_type == 'branch' && claims.ref_protected == 'true'", "message": "unprotected ref" },
                { "expression": "claims.runner_id > 0 && !(claims.pipeline_source in ['merge_request_event'])", "message": "untrusted pipeline" },
            ],
            "username": "claims.project_path",
            "groups": "claims.user_access_level == 'maintainer' ? ['maintainers'] : []",
        }),
    )
    .await;
    let claims = fixture("gitlab-ci");
    assert_eq!(
        decide(&policy, &claims).await,
        allow("platform/build/image-builder", &["maintainers"])
    );

    let mut mr = claims.clone();
    mr["pipeline_source"] = json!("merge_request_event");
    assert_eq!(deny_reason(&policy, &mr).await, "untrusted pipeline");

    let mut developer = claims.clone();
    developer["user_access_level"] = json!("developer");
    assert_eq!(
        decide(&policy, &developer).await,
        allow("platform/build/image-builder", &[])
    );
}

#[tokio::test]
async fn empty_settings_take_the_username_from_sub() {
    let policy = load("https://defaults.example", json!({})).await;
    assert_eq!(
        decide(&policy, &fixture("gitlab-ci")).await,
        allow(
            "project_path:platform/build/image-builder:ref_type:branch:ref:main",
            &[]
        )
    );
}

// --- Example settings files --------------------------------------------------

/// Every settings file under `examples/policies/cel/` loads and allows the
/// claim fixture of the same name: a new example is covered as soon as it
/// lands, and one without a fixture fails here.
#[tokio::test]
async fn every_example_settings_file_loads_and_allows_its_fixture() {
    let dir = repo_root().join("examples/policies/cel");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "toml" || ext == "json")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the kubernetes, github-actions and gitlab-ci examples: {files:?}"
    );

    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_else(|| panic!("{}: no file name", file.display()));
        let fixture_path = repo_root()
            .join("tests/fixtures/claims")
            .join(format!("{stem}.json"));
        assert!(
            fixture_path.is_file(),
            "{} has no claim fixture: add {}",
            file.display(),
            fixture_path.display()
        );
        let owner = format!("https://{stem}.example");
        let settings = settings_file(&file);
        keep_compiled().await;
        let policy = engine()
            .load(&owner, &cel(), &settings, Limits::default())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        match decide(&policy, &fixture(stem)).await {
            Decision::Allow(identity) => assert!(!identity.username.is_empty()),
            Decision::Deny(reason) => panic!("{} denies its own fixture: {reason}", file.display()),
        }
    }
}

#[tokio::test]
async fn example_policies_decide_as_documented() {
    let kubernetes = load("https://k8s.example", example("kubernetes")).await;
    let claims = fixture("kubernetes");
    assert_eq!(
        decide(&kubernetes, &claims).await,
        allow(
            "system:serviceaccount:team-payments:image-pusher",
            &["team:payments", "namespace:team-payments"]
        )
    );
    let mut default_sa = claims.clone();
    default_sa["kubernetes.io"]["serviceaccount"]["name"] = json!("default");
    assert_eq!(
        deny_reason(&kubernetes, &default_sa).await,
        "the default and builder service accounts may not use the registry"
    );

    let github = load("https://github.example", example("github-actions")).await;
    let claims = fixture("github-actions");
    assert_eq!(
        decide(&github, &claims).await,
        allow("octo-org/payments-api", &["octo-org", "releases"])
    );
    let mut prerelease = claims.clone();
    prerelease["ref"] = json!("refs/tags/v1.4.2-rc1");
    prerelease["ref_type"] = json!("tag");
    assert_eq!(
        deny_reason(&github, &prerelease).await,
        "only main and vX.Y.Z tags may use the registry"
    );
    let mut other_workflow = claims.clone();
    other_workflow["job_workflow_ref"] =
        json!("octo-org/payments-api/.github/workflows/release.yml@refs/tags/v1.4.2");
    assert_eq!(
        deny_reason(&github, &other_workflow).await,
        "only the shared publish-image workflow may use the registry"
    );

    let gitlab = load("https://gitlab.example", example("gitlab-ci")).await;
    let claims = fixture("gitlab-ci");
    assert_eq!(
        decide(&gitlab, &claims).await,
        allow(
            "platform/build/image-builder",
            &["gitlab:platform", "deployers"]
        )
    );
    let mut no_environment = claims.clone();
    if let Some(map) = no_environment.as_object_mut() {
        map.remove("environment_protected");
    }
    assert_eq!(
        decide(&gitlab, &no_environment).await,
        allow("platform/build/image-builder", &["gitlab:platform"])
    );
    let mut mr = claims.clone();
    mr["pipeline_source"] = json!("merge_request_event");
    assert_eq!(
        deny_reason(&gitlab, &mr).await,
        "merge-request and other untrusted pipelines may not use the registry"
    );
}

// --- Settings refused at load ------------------------------------------------

#[tokio::test]
async fn a_compile_error_names_the_field_the_expression_and_the_position() {
    let text = refused(
        "https://compile-error.example",
        json!({
            "validations": [
                { "expression": "true", "message": "a" },
                { "expression": "true", "message": "b" },
                { "expression": "claims.sub.startsWith('x'", "message": "c" },
            ],
        }),
    )
    .await;
    assert!(text.contains("validations[2].expression"), "{text}");
    assert!(text.contains("`claims.sub.startsWith('x'`"), "{text}");
    assert!(text.contains("line 1, column 26"), "{text}");
}

#[tokio::test]
async fn an_unknown_settings_key_is_refused() {
    let text = refused(
        "https://unknown-key.example",
        json!({ "usernme": "claims.email" }),
    )
    .await;
    assert!(text.contains("unknown field `usernme`"), "{text}");
    let text = refused(
        "https://unknown-nested-key.example",
        json!({ "validations": [{ "expression": "true", "mesage": "typo" }] }),
    )
    .await;
    assert!(
        text.contains("settings.validations[0]: unknown field `mesage`"),
        "{text}"
    );
}

#[tokio::test]
async fn a_misspelt_variable_or_identifier_is_refused_at_load() {
    let text = refused(
        "https://typo.example",
        json!({ "validations": [{ "expression": "claim.sub != ''", "message": "m" }] }),
    )
    .await;
    assert!(
        text.contains("validations[0].expression") && text.contains("unknown identifier `claim`"),
        "{text}"
    );

    let text = refused(
        "https://vars-typo.example",
        json!({
            "variables": [{ "name": "namespace", "expression": "claims['kubernetes.io'].namespace" }],
            "username": "vars.namespcae",
        }),
    )
    .await;
    assert!(
        text.contains("username") && text.contains("`vars.namespcae`"),
        "{text}"
    );
}

#[tokio::test]
async fn an_invalid_regex_literal_is_refused_at_load() {
    let text = refused(
        "https://regex.example",
        json!({ "username": "claims.sub.matches('(') ? 'a' : 'b'" }),
    )
    .await;
    assert!(
        text.contains("username") && text.contains("not a valid regex"),
        "{text}"
    );
}

// --- Evaluation failures deny, naming the expression ---------------------------

#[tokio::test]
async fn evaluation_failures_deny_and_never_allow() {
    let claims = fixture("kubernetes");
    let cases = [
        // A missing key.
        (
            json!({ "validations": [{ "expression": "claims.email.endsWith('@example.com')", "message": "m" }] }),
            "validations[0].expression `claims.email.endsWith('@example.com')` failed",
        ),
        // A type error.
        (
            json!({ "validations": [{ "expression": "claims.exp + '1' == '2'", "message": "m" }] }),
            "validations[0].expression `claims.exp + '1' == '2'` failed",
        ),
        // A validation that is not a bool.
        (
            json!({ "validations": [{ "expression": "claims.aud", "message": "m" }] }),
            "validations[0].expression `claims.aud` must yield a bool, got list",
        ),
        // A failing variable.
        (
            json!({ "variables": [{ "name": "repo", "expression": "claims.repository" }] }),
            "variables[0].expression `claims.repository` failed",
        ),
        // An empty username.
        (
            json!({ "username": "claims['kubernetes.io'].namespace.substring(0, 0)" }),
            "username `claims['kubernetes.io'].namespace.substring(0, 0)` yielded an empty username",
        ),
        // A username that is not a string.
        (
            json!({ "username": "claims.exp" }),
            "username `claims.exp` must yield a string, got int",
        ),
        // Groups that are not a list, or not of strings.
        (
            json!({ "groups": "claims.sub" }),
            "groups `claims.sub` must yield a list of strings, got string",
        ),
        (
            json!({ "groups": "[claims.sub, claims.exp]" }),
            "groups `[claims.sub, claims.exp]` must yield a list of strings, but item 1 is int",
        ),
    ];
    for (i, (settings, want)) in cases.into_iter().enumerate() {
        let policy = load(&format!("https://failure-{i}.example"), settings.clone()).await;
        let reason = deny_reason(&policy, &claims).await;
        assert!(
            reason.contains(want),
            "{settings}: {reason:?} should contain {want:?}"
        );
    }
}

/// A deny is an answer, not a failure: the instance that gave it serves the
/// next evaluation, whatever the previous one hit.
#[tokio::test]
async fn denies_do_not_disturb_later_evaluations() {
    let policy = load(
        "https://mixed.example",
        json!({
            "validations": [{ "expression": "claims.sub.startsWith('system:serviceaccount:')", "message": "not a service account" }],
            "username": "claims.sub",
        }),
    )
    .await;
    let kubernetes = fixture("kubernetes");
    let github = fixture("github-actions");
    for _ in 0..5 {
        assert!(matches!(
            decide(&policy, &kubernetes).await,
            Decision::Allow(_)
        ));
        assert_eq!(deny_reason(&policy, &github).await, "not a service account");
        assert!(
            deny_reason(&policy, &json!({}))
                .await
                .contains("claims.sub")
        );
    }
}

/// Two issuers on the same built-in module keep their own settings.
#[tokio::test]
async fn issuers_sharing_the_module_keep_their_own_settings() {
    let a = load(
        "https://a.example",
        json!({ "username": "'a:' + claims.sub" }),
    )
    .await;
    let b = load(
        "https://b.example",
        json!({ "username": "'b:' + claims.sub" }),
    )
    .await;
    let claims = json!({ "sub": "workload" });
    for _ in 0..3 {
        assert_eq!(decide(&a, &claims).await, allow("a:workload", &[]));
        assert_eq!(decide(&b, &claims).await, allow("b:workload", &[]));
    }
}
