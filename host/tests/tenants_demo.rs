//! The tenants demo, `examples/tenants/run.sh`, as part of the test run: it
//! runs against this build's `gantry` (`GANTRY_BIN`), must exit 0, and every
//! step it numbers must have printed PASS, the tenants' story among them
//! (publish, confine, refuse broken pushes, shadow, swap and roll back,
//! status).
//!
//! The script needs node with the provider's `node_modules`
//! (`examples/e2e/provider`), skopeo, curl, python3 and a bcrypt hasher
//! (htpasswd, or python3's bcrypt or crypt); `.ci/run` and `scripts/test.sh`
//! install them. Without them its first step fails and says what is
//! missing. `cargo test -p gantry --test tenants_demo -- --nocapture` shows
//! its report.

mod support;

use std::time::Duration;

/// How long the whole demo may take before the test calls it hung: a debug
/// build starts slowly and each policy push is validated (compiled, run on
/// its fixtures) before its tag moves.
const HUNG: Duration = Duration::from_secs(15 * 60);

/// Steps the demo must show; each a substring of one step's description.
const REQUIRED: &[&str] = &[
    "gantry config check",
    "no policy published yet: team-a's workload gets 401",
    "gantry policy test",
    "gantry policy push --cel --tag live",
    "team-b's admin tests and publishes team-b's policy",
    "pushes and pulls team-a/app",
    "pushes and pulls team-b/app",
    "403 in the other tenant's namespace",
    "may read its policy, not rewrite it: 403",
    "team-b's admin may not rewrite team-a's policy",
    "_catalog lists only team-a's repositories",
    "CEL does not compile: 400 MANIFEST_INVALID",
    "fixture fails: 400 MANIFEST_INVALID",
    "gantry::shadow",
    "gantry tenant status",
    "pushed to :live renames team-a's workload",
    "rolls back",
    "team-b's admin cannot read team-a's status: 403",
    "audit log",
];

#[test]
fn the_tenants_demo_passes_every_step() {
    support::demo::run(
        "tenants/run.sh",
        // A debug build of gantry evaluates policies far more slowly than
        // a release build: raise the tenants' `max_timeout_ms` there (the
        // script's default is the documented 100 ms).
        &[(
            "GANTRY_TENANTS_POLICY_TIMEOUT_MS",
            if cfg!(debug_assertions) {
                "1000"
            } else {
                "100"
            },
        )],
        &["GANTRY_TENANTS_KEEP"],
        REQUIRED,
        HUNG,
    );
}
