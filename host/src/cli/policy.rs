//! `gantry policy ...`: tools for policy authors.
//!
//! Owns: `gantry policy test`, the policy author's loop: load a module with
//! its settings (from flags, or from an issuer of a gantry config, prefixes
//! included), evaluate one claims file or every case of a fixture file,
//! print the decisions and check expectations; `--explain` shows what each
//! expression of `builtin:cel` settings yielded.
//! Must not: start the registry, touch its storage, print timings unless
//! asked (`--verbose`; the default output is stable enough to golden-test),
//! or print a stack trace for a user mistake: every failure is one message
//! naming the file and the problem. Exit codes: 0 success, 1 an expectation
//! failed (or `--explain` disagreed with the component), 2 a usage, file,
//! load or (single-claims) evaluation error.
//!
//! Layout: this file (flags, loading, output), `fixtures` (cases and
//! expectations), `explain` (rendering the CEL explanation).

mod explain;
mod push;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::policy::fixtures::{self, Case, Expectation, Mismatch};
use crate::policy::{
    Decision, EngineOptions, Identity, Limits, LoadedPolicy, ModuleSource, PolicyEngine,
};

/// `gantry policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Evaluate claims against a policy module: one claims file, or every
    /// case of a fixture file; check expectations; explain CEL decisions.
    ///
    /// One claims file:
    ///   gantry policy test --module builtin:cel --settings team-a.toml
    ///     --claims k8s-token.json --expect allow --username team-a:pusher
    ///
    /// A fixture file (prints a PASS/FAIL table, exits 1 if any case fails):
    ///   gantry policy test --module policy.wasm --settings s.toml --fixtures cases.toml
    ///
    /// Why did builtin:cel decide that (every variable's value, every
    /// validation's result, the username and groups):
    ///   gantry policy test --module builtin:cel --settings s.toml --claims c.json --explain
    ///
    /// As the server would, with an issuer's module, settings, limits and
    /// username/groups prefixes from the registry's config (final names):
    ///   gantry policy test --config gantry.toml --issuer https://k8s.example.com
    ///     --fixtures cases.toml
    ///
    /// A fixture file (TOML or JSON) is a list of cases: `[[case]]` tables
    /// in TOML, `{"case": [...]}` or a bare list in JSON. Each case has
    /// `name`, `claims` (a table, or a string holding a JSON object), `expect`
    /// ("allow" or "deny"), and optionally `username` and `groups` (checked
    /// on an allow; groups in any order) or `reason_contains` (on a deny).
    ///
    /// Exit codes: 0 all expectations met, 1 one failed, 2 a usage, file,
    /// load or evaluation error.
    #[command(verbatim_doc_comment)]
    Test(Box<TestArgs>),
    /// Push a policy artifact to a registry (like any client: --token, or
    /// --username/--password) and print its digest. The registry validates
    /// it (compile, init with the settings, every fixture) before the tag
    /// moves, and says why not.
    ///
    ///   gantry policy push --registry http://127.0.0.1:5000
    ///     --repository team-a/policies/k8s --tag next --cel
    ///     --settings k8s.toml --fixtures cases.toml --username admin --password ...
    #[command(verbatim_doc_comment)]
    Push(Box<push::PushArgs>),
}

/// Arguments of `gantry policy test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The policy: `builtin:cel` or the path of a `.wasm` component.
    #[arg(
        long,
        value_name = "builtin:cel|PATH.wasm",
        required_unless_present_any = ["config", "artifact"],
        conflicts_with_all = ["config", "artifact"]
    )]
    pub module: Option<String>,
    /// A policy artifact on disk, evaluated exactly as the server loads it
    /// (module or builtin:cel, settings and limits from its config; its
    /// bundled fixtures unless --claims or --fixtures is given): an OCI
    /// layout directory, or a directory with config.json and policy.wasm
    /// and/or fixtures.toml.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "settings"])]
    pub artifact: Option<PathBuf>,
    /// The module's settings, as TOML or JSON (by file extension). Omitted: `{}`.
    #[arg(
        long,
        value_name = "SETTINGS.toml|SETTINGS.json",
        conflicts_with = "config"
    )]
    pub settings: Option<PathBuf>,
    /// A gantry config: test with the `[[auth.oidc]]` entry of `--issuer`
    /// (its module, settings, limits, and username/groups prefixes, which
    /// expectations are then compared against).
    #[arg(long, value_name = "GANTRY.toml", requires = "issuer")]
    pub config: Option<PathBuf>,
    /// The issuer of `--config` whose policy to test, exactly as configured.
    #[arg(long, value_name = "ISSUER", requires = "config")]
    pub issuer: Option<String>,
    /// The verified claims to evaluate: a JSON object.
    #[arg(
        long,
        value_name = "CLAIMS.json",
        required_unless_present_any = ["fixtures", "artifact"],
        conflicts_with = "fixtures"
    )]
    pub claims: Option<PathBuf>,
    /// A fixture file of cases (TOML or JSON): evaluate each, print a
    /// PASS/FAIL table, exit 1 if any case fails.
    #[arg(long, value_name = "CASES.toml|CASES.json")]
    pub fixtures: Option<PathBuf>,
    /// For `builtin:cel`: show what every variable, validation, username
    /// and groups expression yielded, and which one denied.
    #[arg(long)]
    pub explain: bool,
    /// Fail (exit 1) unless the decision is this.
    #[arg(long, value_enum, conflicts_with = "fixtures")]
    pub expect: Option<Expect>,
    /// Fail (exit 1) unless the policy allows with this username.
    #[arg(long, conflicts_with = "fixtures")]
    pub username: Option<String>,
    /// Fail (exit 1) unless the policy allows with exactly these groups
    /// (comma-separated, in any order; `--groups ''` expects none).
    #[arg(long, value_delimiter = ',', num_args = 0.., conflicts_with = "fixtures")]
    pub groups: Option<Vec<String>>,
    /// Fail (exit 1) unless the policy denies with a reason containing this.
    #[arg(long, value_name = "TEXT", conflicts_with = "fixtures")]
    pub reason_contains: Option<String>,
    /// Keep compiled modules here so the next run skips the JIT.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Time budget per guest call, in milliseconds (overrides the issuer's
    /// `timeout_ms` with `--config`).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Also print the module's digest, load and evaluation timings.
    #[arg(long, short)]
    pub verbose: bool,
}

/// The decision `--expect` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Expect {
    /// The policy allows.
    Allow,
    /// The policy denies.
    Deny,
}

impl From<Expect> for fixtures::Expect {
    fn from(e: Expect) -> fixtures::Expect {
        match e {
            Expect::Allow => fixtures::Expect::Allow,
            Expect::Deny => fixtures::Expect::Deny,
        }
    }
}

/// Runs a `gantry policy` subcommand; returns the process exit code.
pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Test(args) => match test(&args) {
            Ok(report) => {
                print!("{}", report.stdout);
                eprint!("{}", report.stderr);
                ExitCode::from(report.code)
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
        },
        PolicyCommand::Push(args) => {
            let runtime = match super::runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(push::push(&args)) {
                Ok(digest) => {
                    println!("{digest}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What `test` prints, and its exit code: 1 when an expectation failed or
/// the explanation disagreed with the component, 2 when the one claim set
/// of `--claims` could not be evaluated.
struct TestReport {
    stdout: String,
    stderr: String,
    code: u8,
}

/// The policy under test, wherever it was configured.
struct Target {
    source: ModuleSource,
    /// An artifact's module layer, when `--artifact` names one.
    module_bytes: Option<Vec<u8>>,
    /// An artifact's bundled fixtures.
    fixtures: Vec<Case>,
    settings: serde_json::Value,
    limits: Limits,
    /// The policy's owner, for the runtime's messages.
    owner: String,
    /// With `--config`: the issuer's entry.
    issuer: Option<IssuerTarget>,
}

struct IssuerTarget {
    issuer: String,
    index: usize,
    username_prefix: String,
    groups_prefix: String,
}

/// One case, evaluated.
struct Evaluated {
    /// The final decision: the component's, prefixed for an issuer. An
    /// error as text.
    outcome: Result<Decision, String>,
    /// The component's decision before prefixes, when they differ.
    unprefixed: Option<Identity>,
    /// Rendered `--explain` text.
    explanation: Option<String>,
    /// The warning when the explanation disagrees with the component.
    disagreement: Option<String>,
    elapsed: Duration,
}

fn test(args: &TestArgs) -> Result<TestReport, String> {
    let target = target(args)?;
    // Several cases (a fixtures file, or the artifact's bundled ones) get
    // the fixture report; one `--claims` file gets its decision printed.
    let bundled = args.fixtures.is_none() && args.claims.is_none();
    let cases = match (&args.claims, &args.fixtures) {
        (_, Some(path)) => fixtures::read(path).map_err(|e| e.to_string())?,
        (Some(path), None) => vec![Case {
            name: path.display().to_string(),
            claims: read_claims(path)?,
            expect: Expectation {
                decision: args.expect.map(Into::into),
                username: args.username.clone(),
                groups: args.groups.clone(),
                reason_contains: args.reason_contains.clone(),
            },
        }],
        (None, None) if !target.fixtures.is_empty() => target.fixtures.clone(),
        (None, None) if args.artifact.is_some() => {
            return Err(
                "the artifact bundles no fixtures: give --claims FILE or --fixtures FILE"
                    .to_owned(),
            );
        }
        (None, None) => return Err("give --claims FILE or --fixtures FILE".to_owned()),
    };

    // Evaluations run one after another: a single-threaded runtime will do.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let engine = PolicyEngine::new(EngineOptions {
        cache_dir: args.cache_dir.clone(),
        ..EngineOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let loaded = match &target.module_bytes {
        // An artifact's module, loaded from its bytes as the server does.
        Some(bytes) => runtime.block_on(engine.load_bytes(
            &target.owner,
            &target.source,
            std::borrow::Cow::Owned(bytes.clone()),
            &target.settings,
            target.limits.clone(),
        )),
        None => runtime.block_on(engine.load(
            &target.owner,
            &target.source,
            &target.settings,
            target.limits.clone(),
        )),
    };
    let policy: LoadedPolicy = loaded.map_err(|e| e.to_string())?;
    if args.explain && !policy.can_explain() {
        return Err(format!(
            "--explain needs a module that exports gantry:cel/explain, as builtin:cel does (it \
             explains CEL settings expression by expression); {} does not: test it with \
             --fixtures, or log from the policy",
            target.source
        ));
    }
    let mut out = String::new();
    header(&mut out, args, &target, &policy);

    let evaluated: Vec<Evaluated> = cases
        .iter()
        .map(|case| evaluate(&runtime, &policy, args.explain, &target, &case.claims))
        .collect();

    let mut stderr = String::new();
    let mut failed = false;
    for e in &evaluated {
        if let Some(warning) = &e.disagreement {
            let _ = writeln!(stderr, "{warning}");
            failed = true;
        }
    }
    if args.fixtures.is_some() || bundled {
        let _ = writeln!(out, "cases:    {}", cases.len());
        failed |= fixture_report(&mut out, args.verbose, &cases, &evaluated);
    } else if let (Some(case), Some(e)) = (cases.first(), evaluated.first()) {
        if let Some(text) = &e.explanation {
            let _ = writeln!(out);
            out.push_str(text);
            let _ = writeln!(out);
        }
        if args.verbose {
            let _ = writeln!(out, "evaluated in {:.2} ms", e.elapsed.as_secs_f64() * 1e3);
        }
        match &e.outcome {
            Ok(decision) => {
                decision_lines(&mut out, decision, e.unprefixed.as_ref());
                for Mismatch { message, .. } in case.expect.check(Ok(decision)) {
                    let _ = writeln!(stderr, "expectation failed: {message}");
                    failed = true;
                }
            }
            Err(error) => {
                let _ = writeln!(stderr, "error: {}", printable(error));
                return Ok(TestReport {
                    stdout: out,
                    stderr,
                    code: 2,
                });
            }
        }
    }
    Ok(TestReport {
        stdout: out,
        stderr,
        code: u8::from(failed),
    })
}

/// The policy to test: from `--module`/`--settings`, or from the config
/// entry of `--issuer`.
fn target(args: &TestArgs) -> Result<Target, String> {
    let mut target = match (&args.config, &args.issuer, &args.module) {
        (Some(config), Some(issuer), _) => issuer_target(config, issuer)?,
        (None, None, None) if args.artifact.is_some() => {
            let dir = args.artifact.as_deref().unwrap_or(Path::new("."));
            artifact_target(dir)?
        }
        (None, None, Some(module)) => Target {
            source: module.parse().map_err(|e| format!("--module: {e}"))?,
            module_bytes: None,
            fixtures: Vec::new(),
            settings: match &args.settings {
                Some(path) => read_settings(path)?,
                None => serde_json::Value::Object(serde_json::Map::new()),
            },
            limits: Limits::default(),
            owner: "gantry-policy-test".to_owned(),
            issuer: None,
        },
        _ => {
            return Err(
                "give --module (and --settings), --artifact DIR, or --config with --issuer"
                    .to_owned(),
            );
        }
    };
    if let Some(ms) = args.timeout_ms {
        target.limits.timeout = Duration::from_millis(ms);
    }
    Ok(target)
}

/// The policy of an artifact on disk: an OCI layout (`index.json` and
/// `blobs/`, as `oras copy --to-oci-layout` writes it), or a directory of
/// its files (`config.json`, the config blob; `policy.wasm` and
/// `fixtures.toml`, as `oras pull` names the layers). Loaded exactly as the
/// server loads it, under the default ceilings.
fn artifact_target(dir: &Path) -> Result<Target, String> {
    use crate::policy::artifact::{self, PolicyArtifact};
    let at = |what: &str, e: &dyn std::fmt::Display| {
        format!("--artifact {}: {what}: {e}", dir.display())
    };
    let optional = |name: &str| -> Result<Option<Vec<u8>>, String> {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(name, &e)),
        }
    };
    let artifact = if let Some(index) = optional("index.json")? {
        let blob = |digest: &crate::oci::Digest| {
            let p = dir.join("blobs").join(digest.algorithm().as_str()).join(digest.hex());
            std::fs::read(&p).map_err(|e| at(&format!("blob {digest}"), &e))
        };
        let index: serde_json::Value =
            serde_json::from_slice(&index).map_err(|e| at("index.json", &e))?;
        let descriptors = index
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        let mut found = None;
        for d in &descriptors {
            let Some(digest) = d.get("digest").and_then(|v| v.as_str()) else {
                continue;
            };
            let digest: crate::oci::Digest = digest.parse().map_err(|e| at("index.json", &e))?;
            let bytes = blob(&digest)?;
            let json: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| at(&format!("manifest {digest}"), &e))?;
            if artifact::is_policy(&json) {
                if found.is_some() {
                    return Err(at("index.json", &"holds more than one policy artifact"));
                }
                found = Some((digest, json));
            }
        }
        let Some((digest, json)) = found else {
            return Err(at("index.json", &"holds no policy artifact"));
        };
        let m = artifact::parse_manifest(&json).map_err(|e| at("manifest", &e))?;
        let config = blob(&m.config.digest)?;
        let module = m.module.as_ref().map(|b| blob(&b.digest)).transpose()?;
        let fixtures = m.fixtures.as_ref().map(|b| blob(&b.digest)).transpose()?;
        PolicyArtifact::assemble(digest, &config, module, fixtures.as_deref())
    } else {
        let config = optional("config.json")?.ok_or_else(|| {
            at(
                "config.json",
                &"missing: give an OCI layout or a directory with config.json (oras manifest fetch-config)",
            )
        })?;
        let module = optional("policy.wasm")?;
        let fixtures = optional("fixtures.toml")?;
        let digest = crate::oci::Digest::sha256_of(&config);
        PolicyArtifact::assemble(digest, &config, module, fixtures.as_deref())
    }
    .map_err(|e| at("artifact", &e))?;
    let source = match artifact.config.builtin {
        Some(b) => ModuleSource::Builtin(b),
        None => ModuleSource::Artifact(format!("{} ({})", dir.display(), artifact.digest)),
    };
    Ok(Target {
        source,
        limits: artifact.limits(&Limits::default()),
        settings: artifact.config.settings.clone(),
        module_bytes: artifact.module.clone(),
        fixtures: artifact.fixtures.clone(),
        owner: "gantry-policy-test".to_owned(),
        issuer: None,
    })
}

fn issuer_target(path: &Path, issuer: &str) -> Result<Target, String> {
    let config =
        crate::config::Config::load(path).map_err(|e| e.to_string().trim_end().to_owned())?;
    let entries = config.auth.map(|auth| auth.oidc).unwrap_or_default();
    let Some(entry) = entries.iter().find(|e| e.verifier.issuer == issuer) else {
        let configured = if entries.is_empty() {
            "it configures no [[auth.oidc]] issuer".to_owned()
        } else {
            let names: Vec<&str> = entries.iter().map(|e| e.verifier.issuer.as_str()).collect();
            format!("its issuers: {}", names.join(", "))
        };
        return Err(format!(
            "--issuer {issuer}: no [[auth.oidc]] entry in {} has this issuer ({configured})",
            path.display()
        ));
    };
    let source = match &entry.policy.source {
        crate::config::auth::PolicySource::Module(m) => m.clone(),
        crate::config::auth::PolicySource::Oci(o) => {
            return Err(format!(
                "--issuer {issuer}: its policy is the artifact {o}, published in the registry: \
                 pull it (oras pull, or an OCI layout) and test it with --artifact"
            ));
        }
    };
    Ok(Target {
        source,
        module_bytes: None,
        fixtures: Vec::new(),
        settings: entry.policy.settings.clone(),
        limits: entry.policy.limits.clone(),
        owner: entry.verifier.issuer.clone(),
        issuer: Some(IssuerTarget {
            issuer: entry.verifier.issuer.clone(),
            index: entry.index,
            username_prefix: entry.username_prefix.clone(),
            groups_prefix: entry.groups_prefix.clone(),
        }),
    })
}

/// Evaluates one claim set with the component (and, for `--explain`, has
/// the component explain it), and applies the issuer's prefixes.
fn evaluate(
    runtime: &tokio::runtime::Runtime,
    policy: &LoadedPolicy,
    explain: bool,
    target: &Target,
    claims: &serde_json::Value,
) -> Evaluated {
    // The same claims text for both calls.
    let claims = claims.to_string();
    let started = Instant::now();
    let component = runtime
        .block_on(policy.evaluate_json(&claims))
        .map_err(|e| e.to_string());
    let elapsed = started.elapsed();
    let (explanation, disagreement) = match explain {
        false => (None, None),
        true => match runtime.block_on(policy.explain(&claims)) {
            Ok(Some(explained)) => {
                let decision =
                    explain::as_host_decision(&explained, target.limits.max_output_bytes);
                let disagreement = explain::disagreement(
                    component.as_ref().map_err(String::as_str),
                    decision.as_ref().map_err(String::as_str),
                );
                (Some(explain::render(&explained)), disagreement)
            }
            // Checked before any case ran.
            Ok(None) => (None, None),
            Err(e) => (
                Some(format!("(no explanation: explain failed: {e})\n")),
                None,
            ),
        },
    };
    let (outcome, unprefixed) = match (component, &target.issuer) {
        (Ok(Decision::Allow(identity)), Some(issuer)) => {
            let prefixed = crate::auth::apply_prefixes(
                &issuer.username_prefix,
                &issuer.groups_prefix,
                &identity,
            );
            (Ok(Decision::Allow(prefixed)), Some(identity))
        }
        (outcome, _) => (outcome, None),
    };
    Evaluated {
        outcome,
        unprefixed,
        explanation,
        disagreement,
        elapsed,
    }
}

/// Where the policy came from: module, settings or issuer, fixture file.
fn header(out: &mut String, args: &TestArgs, target: &Target, policy: &LoadedPolicy) {
    if let (Some(issuer), Some(config)) = (&target.issuer, &args.config) {
        let _ = writeln!(
            out,
            "issuer:   {} (auth.oidc[{}] in {})",
            issuer.issuer,
            issuer.index,
            config.display()
        );
    }
    let _ = write!(out, "module:   {}", target.source);
    if args.verbose {
        let report = policy.report();
        let _ = write!(
            out,
            " (sha256:{}, {:?}, loaded in {:.1} ms, init {:.1} ms)",
            &report.digest[..12.min(report.digest.len())],
            report.origin,
            report.compile_time.as_secs_f64() * 1e3,
            report.init_time.as_secs_f64() * 1e3,
        );
    }
    let _ = writeln!(out);
    if let Some(path) = &args.settings {
        let _ = writeln!(out, "settings: {}", path.display());
    }
    if let Some(issuer) = &target.issuer {
        let _ = writeln!(
            out,
            "prefixes: username {:?}, groups {:?}",
            issuer.username_prefix, issuer.groups_prefix
        );
    }
    if let Some(path) = &args.fixtures {
        let _ = writeln!(out, "fixtures: {}", path.display());
    } else if let Some(path) = &args.claims {
        let _ = writeln!(out, "claims:   {}", path.display());
    }
}

/// `decision:`, then `username:`/`groups:` or `reason:`.
fn decision_lines(out: &mut String, decision: &Decision, unprefixed: Option<&Identity>) {
    match decision {
        Decision::Allow(identity) => {
            let _ = writeln!(out, "decision: allow");
            let _ = writeln!(out, "username: {}", identity.username);
            let _ = writeln!(out, "groups:   [{}]", identity.groups.join(", "));
            if let Some(policy) = unprefixed {
                let _ = writeln!(
                    out,
                    "policy:   username {:?}, groups {:?} (before the issuer's prefixes)",
                    policy.username, policy.groups
                );
            }
        }
        Decision::Deny(reason) => {
            let _ = writeln!(out, "decision: deny");
            let _ = writeln!(out, "reason:   {}", printable(reason));
        }
    }
}

/// `text` with control characters escaped (`\n`, `\u{1b}`): a deny
/// reason may quote a claim, and this goes to a terminal.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// The fixture table, each failure's differences under its row, and the
/// summary line. Returns whether any case failed.
fn fixture_report(
    out: &mut String,
    verbose: bool,
    cases: &[Case],
    evaluated: &[Evaluated],
) -> bool {
    // With --explain: every case's explanation first, the table after.
    for (i, (case, e)) in cases.iter().zip(evaluated).enumerate() {
        if let Some(text) = &e.explanation {
            let _ = writeln!(out, "\n--- case #{} {:?}", i + 1, case.name);
            out.push_str(text);
            match &e.outcome {
                Ok(decision) => decision_lines(out, decision, e.unprefixed.as_ref()),
                Err(error) => {
                    let _ = writeln!(out, "error:    {}", printable(error));
                }
            }
        }
    }
    let number_width = cases.len().to_string().len().max(1);
    let name_width = cases
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("case".len());
    let _ = writeln!(out);
    let _ = write!(
        out,
        "{:>number_width$}  {:name_width$}  expect  got    result",
        "#", "case"
    );
    let _ = writeln!(out, "{}", if verbose { "  time" } else { "" });
    let (mut passed, mut failed) = (0usize, 0usize);
    for (i, (case, e)) in cases.iter().zip(evaluated).enumerate() {
        let mismatches = case
            .expect
            .check(e.outcome.as_ref().map_err(String::as_str));
        let got = match &e.outcome {
            Ok(Decision::Allow(_)) => "allow",
            Ok(Decision::Deny(_)) => "deny",
            Err(_) => "error",
        };
        let expect = match case.expect.decision {
            Some(fixtures::Expect::Allow) => "allow",
            Some(fixtures::Expect::Deny) => "deny",
            None => "-",
        };
        let ok = mismatches.is_empty() && e.disagreement.is_none();
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
        let _ = write!(
            out,
            "{:>number_width$}  {}{}  {expect:<6}  {got:<5}  {}",
            i + 1,
            case.name,
            " ".repeat(name_width - case.name.chars().count()),
            if ok { "PASS" } else { "FAIL" },
        );
        if verbose {
            // Under `time`, past the 6 characters of `result`.
            let _ = write!(out, "    {:.2} ms", e.elapsed.as_secs_f64() * 1e3);
        }
        let _ = writeln!(out);
        let indent = " ".repeat(number_width + 4);
        for Mismatch { aspect, message } in &mismatches {
            let _ = writeln!(out, "{indent}{:<9} {message}", format!("{aspect}:"));
        }
        if e.disagreement.is_some() {
            let _ = writeln!(
                out,
                "{indent}explain:  disagrees with the component (see the warning)"
            );
        }
        if let (true, Ok(Decision::Allow(_)), Some(policy)) =
            (!mismatches.is_empty(), &e.outcome, &e.unprefixed)
        {
            let _ = writeln!(
                out,
                "{indent}(before the issuer's prefixes: username {:?}, groups {:?})",
                policy.username, policy.groups
            );
        }
    }
    let _ = writeln!(out, "\n{passed} passed, {failed} failed");
    failed > 0
}

/// Reads a settings file: TOML or JSON by extension, converted to JSON.
fn read_settings(path: &Path) -> Result<serde_json::Value, String> {
    let text = read_text(path, "settings")?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("toml") => {
            let value: toml::Value = toml::from_str(&text)
                .map_err(|e| format!("settings file {}: invalid TOML: {e}", path.display()))?;
            Ok(crate::policy::toml_to_json(value))
        }
        Some("json") => serde_json::from_str(&text)
            .map_err(|e| format!("settings file {}: invalid JSON: {e}", path.display())),
        _ => Err(format!(
            "settings file {}: unknown format: name it .toml or .json",
            path.display()
        )),
    }
}

/// Reads a claims file: one JSON object.
fn read_claims(path: &Path) -> Result<serde_json::Value, String> {
    let text = read_text(path, "claims")?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("claims file {}: invalid JSON: {e}", path.display()))?;
    if !value.is_object() {
        return Err(format!(
            "claims file {}: must be a JSON object",
            path.display()
        ));
    }
    Ok(value)
}

fn read_text(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{what} file {}: cannot read: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_formats() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let toml_path = dir.path().join("s.toml");
        std::fs::write(
            &toml_path,
            "username = \"claims.sub\"\n[[validations]]\nexpression = \"true\"\nmessage = \"m\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let v = read_settings(&toml_path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["username"], "claims.sub");
        assert_eq!(v["validations"][0]["message"], "m");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "username = ").unwrap_or_else(|e| panic!("{e}"));
        let err = read_settings(&bad).err().unwrap_or_default();
        assert!(
            err.contains("bad.toml") && err.contains("invalid TOML"),
            "{err}"
        );

        let yaml = dir.path().join("s.yaml");
        std::fs::write(&yaml, "a: b").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            read_settings(&yaml)
                .err()
                .unwrap_or_default()
                .contains("unknown format")
        );

        let missing = read_settings(&dir.path().join("nope.json"))
            .err()
            .unwrap_or_default();
        assert!(
            missing.contains("nope.json") && missing.contains("cannot read"),
            "{missing}"
        );
    }

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(printable("plain: ü"), "plain: ü");
        assert_eq!(printable("a\nb\u{1b}[0m"), "a\\nb\\u{1b}[0m");
    }

    #[test]
    fn claims_must_be_an_object() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.json");
        std::fs::write(&path, "[1, 2]").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            read_claims(&path)
                .err()
                .unwrap_or_default()
                .contains("must be a JSON object")
        );
    }
}
