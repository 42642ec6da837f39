//! The layout's promises, kept by a test rather than by review:
//! - no module of the server, herald or fleet crates imports, directly or through
//!   others, a module that imports it back (no import cycles);
//! - herald and the shared fleet crate link none of the edge's WebSocket, ZeroMQ or
//!   compression stack, and herald does not depend on the server crate.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pushfleet_tests::workspace_root;

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`edge::fanout::hub`, `edge::fanout` for its
/// `mod.rs`, `` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// Code without comments and without its `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b::C` and `super::x` references in `text`, as paths.
fn references(text: &str, module: &str, is_mod_file: bool) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for (marker, base) in [
        ("crate::", String::new()),
        ("super::", {
            let mut parts: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
            if !is_mod_file {
                parts.pop();
            }
            parts.join("::")
        }),
    ] {
        for (i, _) in text.match_indices(marker) {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest: String = text[i + marker.len()..]
                .chars()
                .take_while(|c| ident(*c))
                .collect();
            let rest = rest.trim_end_matches(':');
            out.push(if base.is_empty() {
                rest.to_owned()
            } else {
                format!("{base}::{rest}")
            });
        }
    }
    out
}

/// The module graph of the crate whose sources are in `src` (binaries excluded).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")) && !f.ends_with("main.rs"));
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let is_mod_file = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let mut edges = BTreeSet::new();
        for reference in references(&text, module, is_mod_file) {
            // The longest module the path starts with.
            let mut parts: Vec<&str> = reference.split("::").collect();
            while !parts.is_empty() && !modules.contains_key(&parts.join("::")) {
                parts.pop();
            }
            let target = parts.join("::");
            let nested = |a: &str, b: &str| a.starts_with(&format!("{b}::")) || b.is_empty();
            if !target.is_empty()
                && &target != module
                && !nested(module, &target)
                && !nested(&target, module)
            {
                edges.insert(target);
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// A cycle in `graph`, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            return Some(path[i..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycles() {
    for krate in ["server", "herald", "fleet", "protocol"] {
        let graph = module_graph(&workspace_root().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: found its modules");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import cycle {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(3));
    assert_eq!(
        references(
            "use super::worker::Worker;",
            "edge::connection::task",
            false
        ),
        ["edge::connection::worker::Worker"]
    );
}

/// The dependency names of a crate's `[dependencies]` table.
fn dependencies(krate: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace_root().join(krate).join("Cargo.toml")).unwrap();
    let table = text.split("[dependencies]").nth(1).unwrap_or_default();
    let table = table.split("\n[").next().unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn herald_and_fleet_link_no_data_path_stack() {
    let data_path = [
        "pushfleet-server",
        "zmq",
        "zeromq",
        "actix-http",
        "actix-codec",
        "flate2",
    ];
    for krate in ["herald", "fleet"] {
        let deps = dependencies(krate);
        assert!(deps.contains("pushfleet-protocol"), "{krate}: {deps:?}");
        for banned in data_path {
            assert!(!deps.contains(banned), "{krate} depends on {banned}");
        }
    }
    assert!(dependencies("herald").contains("pushfleet-fleet"));
}
