//! The one-way arrows of `shared/DESIGN.md` ("Parts and arrows"), checked
//! on the source: auth, policy and storage never reach the HTTP layer (the
//! `distribution` module, the face, or an HTTP crate), storage never reaches
//! auth, and policy never reaches storage. A new import that breaks a rule
//! fails here with the file and line.

use std::path::{Path, PathBuf};

/// What each room must not name, outside comments.
const RULES: &[(&str, &[&str])] = &[
    (
        "auth",
        &[
            "crate::distribution",
            "crate::server",
            "crate::cli",
            "axum",
            "hyper",
            "http::",
        ],
    ),
    (
        "policy",
        &[
            "crate::distribution",
            "crate::server",
            "crate::cli",
            "crate::storage",
            "axum",
            "hyper",
            "http::",
        ],
    ),
    (
        "storage",
        &[
            "crate::distribution",
            "crate::server",
            "crate::cli",
            "crate::auth",
            "axum",
            "hyper",
            "http::",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `room`'s files: `src/<room>.rs` and everything under `src/<room>/`.
fn files_of(room: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let single = src.join(format!("{room}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let dir = src.join(room);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    }
    assert!(!files.is_empty(), "no source for {room}");
    files
}

/// The code of a line: without a `//` comment (doc comments included).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

#[test]
fn auth_policy_and_storage_never_import_what_they_must_not() {
    let mut broken = Vec::new();
    for (room, forbidden) in RULES {
        for file in files_of(room) {
            let text = std::fs::read_to_string(&file).expect("read");
            for (n, line) in text.lines().enumerate() {
                let code = code(line);
                for f in *forbidden {
                    // `http::` as a path, not as part of `https://` or a word.
                    let hit = code.match_indices(f).any(|(i, _)| {
                        i == 0
                            || !code[..i]
                                .chars()
                                .next_back()
                                .is_some_and(|c| c.is_alphanumeric() || c == '_')
                    });
                    if hit {
                        broken.push(format!(
                            "{}:{}: {room} names `{f}`: {}",
                            file.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "one-way rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_a_violation() {
    // The matcher itself: a planted import is found, a URL or comment is not.
    let planted = "use crate::distribution::error::ApiError;";
    assert!(code(planted).contains("crate::distribution"));
    assert!(!code("// see crate::distribution").contains("crate::distribution"));
    assert!(
        code("let u = \"https://x\";")
            .match_indices("http::")
            .next()
            .is_none()
    );
}
