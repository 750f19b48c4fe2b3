//! The one-way arrows of `shared/DESIGN.md` ("Parts and arrows"), checked
//! on the source: auth, policy and storage never reach the HTTP layer (the
//! `distribution` module, the face, or an HTTP crate), storage never reaches
//! auth, and policy never reaches storage; config, which every room reads,
//! reaches none of the rooms that read it; and no two rooms reach each
//! other, directly or around a loop. A new import that breaks a rule fails
//! here with the file and line.

use std::path::{Path, PathBuf};

/// What each room must not name, outside comments.
const RULES: &[(&str, &[&str])] = &[
    (
        "config",
        &[
            "crate::auth",
            "crate::distribution",
            "crate::server",
            "crate::cli",
            "axum",
            "hyper",
            "http::",
        ],
    ),
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
fn no_room_imports_what_it_must_not() {
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

/// The rooms of the import graph. The face (`cli`, `server`, `main.rs`)
/// is one room: it may reach everything, and its parts call each other.
const ROOMS: &[(&str, &[&str])] = &[
    ("face", &["cli", "server"]),
    ("config", &["config"]),
    ("distribution", &["distribution"]),
    ("auth", &["auth"]),
    ("policy", &["policy"]),
    ("storage", &["storage"]),
    ("oci", &["oci"]),
    ("telemetry", &["telemetry"]),
];

fn room_of(module: &str) -> Option<&'static str> {
    ROOMS
        .iter()
        .find(|(_, modules)| modules.contains(&module))
        .map(|(room, _)| *room)
}

/// Every `crate::<module>` a room's code names, as edges to other rooms,
/// each with the first line that makes it.
fn edges() -> std::collections::BTreeMap<(&'static str, &'static str), String> {
    let mut edges = std::collections::BTreeMap::new();
    for (room, modules) in ROOMS {
        for module in *modules {
            for file in files_of(module) {
                let text = std::fs::read_to_string(&file).expect("read");
                for (n, line) in text.lines().enumerate() {
                    for (i, _) in code(line).match_indices("crate::") {
                        if i > 0
                            && code(line)[..i]
                                .ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$')
                        {
                            continue;
                        }
                        let rest = &code(line)[i + "crate::".len()..];
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if let Some(to) = room_of(&name)
                            && to != *room
                        {
                            edges.entry((*room, to)).or_insert_with(|| {
                                format!("{}:{}: {}", file.display(), n + 1, line.trim())
                            });
                        }
                    }
                }
            }
        }
    }
    edges
}

#[test]
fn no_two_rooms_reach_each_other() {
    let edges = edges();
    // Depth-first search for a loop, reporting it with the lines that make it.
    fn visit(
        room: &'static str,
        edges: &std::collections::BTreeMap<(&'static str, &'static str), String>,
        path: &mut Vec<&'static str>,
        done: &mut Vec<&'static str>,
    ) -> Option<Vec<&'static str>> {
        if let Some(i) = path.iter().position(|r| *r == room) {
            let mut cycle = path[i..].to_vec();
            cycle.push(room);
            return Some(cycle);
        }
        if done.contains(&room) {
            return None;
        }
        path.push(room);
        for ((from, to), _) in edges.iter() {
            if *from == room
                && let Some(c) = visit(to, edges, path, done)
            {
                return Some(c);
            }
        }
        path.pop();
        done.push(room);
        None
    }
    let mut done = Vec::new();
    for (room, _) in ROOMS {
        if let Some(cycle) = visit(room, &edges, &mut Vec::new(), &mut done) {
            let lines: Vec<String> = cycle
                .windows(2)
                .map(|w| edges[&(w[0], w[1])].clone())
                .collect();
            panic!(
                "rooms reach each other: {}\n{}",
                cycle.join(" → "),
                lines.join("\n")
            );
        }
    }
    // The graph is read from the code, not assumed: the arrows the design
    // names are there, so a broken reader cannot pass this test by seeing none.
    for arrow in [
        ("distribution", "auth"),
        ("auth", "policy"),
        ("auth", "config"),
        ("face", "config"),
    ] {
        assert!(
            edges.contains_key(&arrow),
            "no {arrow:?} edge found in {:?}",
            edges.keys().collect::<Vec<_>>()
        );
    }
}
