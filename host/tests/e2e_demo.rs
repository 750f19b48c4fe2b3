//! The end-to-end demo, `examples/e2e/run.sh`, as part of the test run: it
//! runs against this build's `gantry` (`GANTRY_BIN`), must exit 0, and every
//! step it numbers must have printed PASS, the matrix's steps among them.
//!
//! The script needs node with the provider's `node_modules`, skopeo, podman,
//! curl, python3 and componentize-py (`.ci/run` and `scripts/test.sh`
//! install them); without them its first step fails and says what is
//! missing. `cargo test -p gantry --test e2e_demo -- --nocapture` shows its
//! report.

mod support;

use std::time::Duration;

/// How long the whole demo may take before the test calls it hung: it
/// builds the Python policy (~20 s) and a debug build compiles it twice
/// (`config check`, then `serve`).
const HUNG: Duration = Duration::from_secs(20 * 60);

/// Steps the demo must show; each a substring of one step's description.
const REQUIRED: &[&str] = &[
    "gantry config check",
    "push without a token: 401",
    "push with cluster 1's team-a:pusher token",
    "another audience: 401",
    "team-a:reader authenticates but gets 403 on push",
    "team-a:reader's _catalog is empty",
    "raw bearer (--src-registry-token): blobs identical",
    "token endpoint (--src-creds): blobs identical",
    "podman login",
    "podman push",
    "podman pull",
    "team-b:builder pushes team-b/app via the Python policy",
    "team-b:builder gets 403 on team-a/app",
    "audit log",
];

#[test]
fn the_end_to_end_demo_passes_every_step() {
    support::demo::run(
        "e2e/run.sh",
        // The Python policy's README: a debug build of gantry takes 30-80 ms
        // to create an instance, so raise `timeout_ms` there (the script's
        // default is the production 100 ms).
        &[(
            "GANTRY_E2E_POLICY_TIMEOUT_MS",
            if cfg!(debug_assertions) {
                "1000"
            } else {
                "100"
            },
        )],
        &["PYTHON_POLICY_WASM", "GANTRY_E2E_KEEP"],
        REQUIRED,
        HUNG,
    );
}
