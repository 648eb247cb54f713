//! The layering of `proxy/src`: each module imports only modules below it, so there is no
//! import loop and no import up the stack (docs/architecture.md draws the same layers).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top first. A module may use only modules in strictly lower layers; tests may reach anywhere.
const LAYERS: &[&[&str]] = &[
    &["server", "microbench", "fuzzing"],
    &["upgrade", "quick"],
    &["edge", "admin", "health"],
    &["status"],
    &["active"],
    &["reload"],
    &["pool"],
    &["config"],
    &["route"],
    &["cache", "tls"],
    &[
        "forwarding",
        "request_path",
        "host",
        "logging",
        "metrics",
        "connections",
        "systemd",
        "allocator",
    ],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

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

/// The top-level modules a source text names as `crate::x` or inside `crate::{x::…, y}`.
fn crate_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level entries of the group: `a::b`, `c`, `d::{e, f}`.
            let (mut depth, mut start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            found.insert(name);
                        }
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests sit at the end of a file and may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let Some(own) = layer(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer in this test",
                rel.display()
            ));
            continue;
        };
        for used in crate_modules(code) {
            if used == module {
                continue;
            }
            match layer(&used) {
                None => wrong.push(format!(
                    "{}: uses `{used}`, which has no layer",
                    rel.display()
                )),
                Some(l) if l <= own => wrong.push(format!(
                    "{}: `{module}` (layer {own}) uses `{used}` (layer {l}), not below it",
                    rel.display()
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn crate_modules_reads_paths_and_groups() {
    let text = "use crate::a::B;\nuse crate::{c::{D, e}, f, g::h as i};\nlet x = crate::j::k();";
    let got: Vec<_> = crate_modules(text).into_iter().collect();
    assert_eq!(got, ["a", "c", "f", "g", "j"]);
}
