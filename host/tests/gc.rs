//! `gantry gc` and the online schedule against the real binary (issue 11):
//! what no manifest references goes, what a tag reaches stays, a dry run
//! changes nothing, and pushes running beside collections all land whole.
//! `gc_s3.rs` runs these again on the s3 backend (moto).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Gantry, LIVENESS, Launch, Moto, Noise, gantry_bin, push_blob, put_image, sha256};

/// An image of one layer as `repo:tag`; returns (manifest, config, layer).
fn push_image(g: &Gantry, repo: &str, tag: &str, seed: u64) -> (String, String, String) {
    let layer_bytes = Noise::new(seed).bytes(50_000);
    let layer = push_blob(g, repo, &layer_bytes);
    let config = json!({"seed": seed}).to_string().into_bytes();
    let manifest = put_image(g, repo, tag, &config, &[(&layer, layer_bytes.len())]);
    (manifest, sha256(&config), layer)
}

fn status(g: &Gantry, path: &str) -> u16 {
    g.client()
        .get(g.url(path))
        .header("accept", support::OCI_MANIFEST)
        .send()
        .expect("GET")
        .status()
        .as_u16()
}

fn gc(g: &Gantry, args: &[&str]) -> String {
    let out = Command::new(gantry_bin())
        .arg("gc")
        .arg("--config")
        .arg(g.config_path())
        .args(args)
        .envs(Moto::credentials_env())
        .env_remove("RUST_LOG")
        .output()
        .expect("gantry gc");
    assert!(
        out.status.success(),
        "gantry gc failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn gc_removes_what_no_manifest_references_and_a_dry_run_changes_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let sections = |_: u16| "[storage.gc]\ninterval = \"0\"\ngrace = \"0\"\n".to_string();
    let g = Gantry::start_configured(&work.path().join("root"), &sections);
    let (kept, kept_config, kept_layer) = push_image(&g, "team/app", "v1", 1);
    let (gone, _, gone_layer) = push_image(&g, "team/app", "v2", 2);
    let (untagged, _, untagged_layer) = push_image(&g, "team/app", "v3", 3);
    let stray = push_blob(&g, "team/app", b"never referenced");
    // v2's manifest deleted: its layer is garbage. v3 untagged: kept
    // without --untagged.
    let r = g
        .client()
        .delete(g.url(&format!("/v2/team/app/manifests/{gone}")))
        .send()
        .expect("DELETE");
    assert_eq!(r.status(), 202);
    let r = g
        .client()
        .delete(g.url("/v2/team/app/manifests/v3"))
        .send()
        .expect("DELETE tag");
    assert_eq!(r.status(), 202);
    std::thread::sleep(Duration::from_millis(50));

    let dry = gc(&g, &["--dry-run"]);
    assert!(
        dry.contains(&format!("would remove blob {gone_layer}")),
        "{dry}"
    );
    assert!(dry.contains(&format!("would remove blob {stray}")), "{dry}");
    assert!(dry.contains("dry run:"), "{dry}");
    assert!(!dry.contains(&kept_layer), "{dry}");
    for d in [&gone_layer, &stray] {
        assert_eq!(
            status(&g, &format!("/v2/team/app/blobs/{d}")),
            200,
            "dry run removed {d}"
        );
    }

    let real = gc(&g, &[]);
    assert!(
        real.contains(&format!("removed blob {gone_layer}")),
        "{real}"
    );
    assert!(real.contains("bytes freed"), "{real}");
    for d in [&gone_layer, &stray, &gone] {
        assert_eq!(
            status(&g, &format!("/v2/team/app/blobs/{d}")),
            404,
            "{d} still served:\n{real}"
        );
    }
    for d in [&kept_config, &kept_layer, &untagged_layer] {
        assert_eq!(
            status(&g, &format!("/v2/team/app/blobs/{d}")),
            200,
            "{d} collected:\n{real}"
        );
    }
    assert_eq!(status(&g, "/v2/team/app/manifests/v1"), 200);
    assert_eq!(status(&g, &format!("/v2/team/app/manifests/{kept}")), 200);
    assert_eq!(
        status(&g, &format!("/v2/team/app/manifests/{untagged}")),
        200
    );

    let with_untagged = gc(&g, &["--untagged"]);
    assert!(
        with_untagged.contains(&format!("removed manifest team/app@{untagged}")),
        "{with_untagged}"
    );
    std::thread::sleep(Duration::from_millis(1300)); // the s3 cache bound
    assert_eq!(
        status(&g, &format!("/v2/team/app/manifests/{untagged}")),
        404
    );
    assert_eq!(
        status(&g, &format!("/v2/team/app/blobs/{untagged_layer}")),
        404
    );
    assert_eq!(status(&g, "/v2/team/app/manifests/v1"), 200);
}

/// The schedule collects on its own, and pushes made while collections run
/// (default grace: nothing young is touched) all land whole.
#[test]
fn the_schedule_collects_while_pushes_land_whole() {
    let work = tempfile::tempdir().expect("tempdir");
    let sections = |_: u16| "[storage.gc]\ninterval = \"1s\"\n".to_string();
    let g = Gantry::launch(
        &work.path().join("root"),
        Launch {
            sections: Some(&sections),
            ..Launch::default()
        },
    );
    let mut pushed = Vec::new();
    let deadline = Instant::now() + LIVENESS;
    let mut i = 0;
    // Push until at least two scheduled runs happened meanwhile.
    while g.log().matches("garbage collection finished").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the schedule never ran:\n{}",
            g.log()
        );
        pushed.push(push_image(&g, "busy/app", &format!("t{i}"), 100 + i));
        i += 1;
    }
    for (m, config, layer) in &pushed {
        assert_eq!(status(&g, &format!("/v2/busy/app/manifests/{m}")), 200);
        for d in [config, layer] {
            assert_eq!(
                status(&g, &format!("/v2/busy/app/blobs/{d}")),
                200,
                "{d} lost"
            );
        }
    }
    assert!(
        g.log().contains("gantry::gc"),
        "no gantry::gc event:\n{}",
        g.log()
    );
}
