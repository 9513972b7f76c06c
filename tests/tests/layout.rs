//! The layout rules of docs/ARCHITECTURE.md, checked on the source tree:
//! no file of the listed crates over 800 lines, and no two modules of a
//! crate that import each other (a module depends on another when its
//! code, outside `#[cfg(test)] mod tests`, names a `crate::`, `super::` or
//! `self::` path into it; the longest path that is a module counts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose source files the 800-line rule covers.
const SIZED: [&str; 5] = ["proto", "web", "store", "server", "gm-agent"];

/// Crates whose modules may not import each other.
const ACYCLIC: [&str; 9] = [
    "proto",
    "web",
    "store",
    "server",
    "gm-agent",
    "wire",
    "model",
    "dataplane",
    "cli",
];

const MAX_LINES: usize = 800;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file defines, as path segments below the crate root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        segs.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segs.pop();
    }
    segs
}

/// The code without line comments and without the unit-test module.
fn code_of(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` tree names, braces expanded (`a::{b, c::d}` gives
/// `a::b` and `a::c::d`).
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let Some(close) = tree.rfind('}').filter(|c| *c > open) else {
        return Vec::new();
    };
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for ch in inner.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The `crate::`/`super::`/`self::` paths a module's code names.
fn paths_of(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    // `use` items: a line starting `use` (or `pub use`, `pub(crate) use`)
    // up to its `;`.
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let t = line.trim_start();
        let t = t
            .strip_prefix("pub ")
            .or_else(|| t.strip_prefix("pub(crate) "))
            .or_else(|| t.strip_prefix("pub(super) "))
            .unwrap_or(t);
        if let Some(tail) = t.strip_prefix("use ") {
            let at = start + (line.len() - tail.len());
            let rest = &code[at..];
            let end = rest.find(';').unwrap_or(rest.len());
            let tree: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
            paths.extend(expand(&tree));
        }
    }
    // Paths written inline in code.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let i = from + i;
            from = i + start.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let end = code[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| i + e);
            paths.push(code[i..end].to_owned());
        }
    }
    paths
}

/// The module a path leads into, seen from module `from`.
fn target_of(from: &[String], path: &str, modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segs = path.split("::").filter(|s| !s.is_empty()).peekable();
    let mut base: Vec<String> = match segs.peek().copied() {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("super") => {
            let mut b = from.to_vec();
            while segs.peek() == Some(&"super") {
                segs.next();
                b.pop();
            }
            b
        }
        Some("self") => {
            segs.next();
            from.to_vec()
        }
        _ => return None,
    };
    base.extend(segs.map(str::to_owned));
    (0..=base.len())
        .rev()
        .map(|k| base[..k].to_vec())
        .find(|m| modules.contains(m))
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut long = Vec::new();
    for krate in SIZED {
        let mut files = Vec::new();
        rust_files(&repo().join(krate).join("src"), &mut files);
        for f in files {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            if n > MAX_LINES {
                long.push(format!("{} ({n} lines)", f.display()));
            }
        }
    }
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut cycles = Vec::new();
    for krate in ACYCLIC {
        let src = repo().join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        // A binary's modules form a tree of their own under src/bin.
        files.retain(|f| !f.strip_prefix(&src).unwrap().starts_with("bin"));
        let modules: BTreeMap<Vec<String>, PathBuf> = files
            .iter()
            .map(|f| (module_of(&src, f), f.clone()))
            .collect();
        let names: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
        let mut deps: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (m, f) in &modules {
            let code = code_of(&std::fs::read_to_string(f).unwrap());
            let to: BTreeSet<Vec<String>> = paths_of(&code)
                .iter()
                .filter_map(|p| target_of(m, p, &names))
                .filter(|t| t != m)
                .collect();
            deps.insert(m, to);
        }
        for (a, to) in &deps {
            for b in to {
                if *a < b && deps.get(b).is_some_and(|back| back.contains(*a)) {
                    cycles.push(format!("{krate}: {} <-> {}", a.join("::"), b.join("::")));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules importing each other: {cycles:#?}"
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    // The parser's own check: a parent that imports its child and a child
    // that imports its parent through `super` are a pair; braces expand.
    let names: BTreeSet<Vec<String>> = [vec![], vec!["a".to_owned()], vec!["b".to_owned()]]
        .into_iter()
        .collect();
    let from_a = vec!["a".to_owned()];
    let paths = paths_of("use super::{b::X, c};\nfn f() { crate::a::g() }");
    let targets: BTreeSet<Vec<String>> = paths
        .iter()
        .filter_map(|p| target_of(&from_a, p, &names))
        .collect();
    assert!(targets.contains(&vec!["b".to_owned()]), "{paths:?}");
    assert!(targets.contains(&vec![]), "super::c resolves to the root");
    assert_eq!(
        expand("crate::{x::{Y, Z}, w}"),
        ["crate::x::Y", "crate::x::Z", "crate::w"]
    );
}
