//! The module structure: which top-level modules of `src/` use which (`crate::…` paths
//! outside `#[cfg(test)]` code), and no cycle among them beyond the known ones listed here,
//! which may only shrink. README "Architecture" draws the same map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Cycles that exist today and are being taken apart (issue 15). A new cycle fails this
/// test; so does a listed one that is gone (remove it here, and from the README).
const KNOWN_CYCLES: &[&[&str]] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level module a source file belongs to (`None` for the crate root and `main`).
fn module_of(path: &Path, src: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The code of a file without its `#[cfg(test)]` module (by convention, the file's end)
/// and without comments.
fn production_code(text: &str) -> String {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named by `crate::x` paths, including `crate::{x, y::z}` groups.
fn referenced(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: split on commas at brace depth 0.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(ident(item.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

fn graph() -> Result<Graph, Box<dyn std::error::Error>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.clone()];
    let mut g = Graph::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                files.push(entry?.path());
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let Some(from) = module_of(&path, &src) else {
            continue;
        };
        let uses = referenced(&production_code(&std::fs::read_to_string(&path)?));
        let edges = g.entry(from.clone()).or_default();
        edges.extend(uses.into_iter().filter(|m| *m != from));
    }
    Ok(g)
}

/// Modules reachable from `start`.
fn reachable(g: &Graph, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(m) = todo.pop() {
        for next in g.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

/// Strongly connected components with more than one module.
fn cycles(g: &Graph) -> BTreeSet<BTreeSet<String>> {
    let reach: BTreeMap<&String, BTreeSet<String>> =
        g.keys().map(|m| (m, reachable(g, m))).collect();
    let mut out = BTreeSet::new();
    for (m, r) in &reach {
        let scc: BTreeSet<String> = r
            .iter()
            .filter(|o| reach.get(o).is_some_and(|back| back.contains(*m)))
            .cloned()
            .collect();
        if scc.len() > 1 {
            out.insert(scc);
        }
    }
    out
}

#[test]
fn modules_depend_one_way_but_for_the_known_cycles() -> Result<(), Box<dyn std::error::Error>> {
    let g = graph()?;
    for (m, uses) in &g {
        println!(
            "{m} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let found = cycles(&g);
    let known: BTreeSet<BTreeSet<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "modules that now depend on each other: {new:?}"
    );
    assert!(
        gone.is_empty(),
        "cycles taken apart (remove them from KNOWN_CYCLES): {gone:?}"
    );
    Ok(())
}

#[test]
fn the_scanner_reads_paths_and_groups() {
    let code = "use crate::config::{A, B};\nuse crate::{auth, session::model::X};\nlet x = crate::route::f();\n// crate::ignored\n";
    let got = referenced(&production_code(code));
    let want: BTreeSet<String> = ["config", "auth", "session", "route"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("a".into());
    g.entry("c".into()).or_default().insert("a".into());
    let c = cycles(&g);
    assert_eq!(c.len(), 1);
    assert!(c.iter().all(|s| s.len() == 2 && !s.contains("c")));
}

/// Every `source` label the code gives `sessiongate_sessions_created_total` or
/// `_revoked_total` (a literal right after the metric's name) is one `metrics` creates at
/// start, so each series exists before the first event (issue 18).
#[test]
fn session_sources_are_precreated_series() -> Result<(), Box<dyn std::error::Error>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src];
    let mut seen = BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                files.push(entry?.path());
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("metrics.rs") {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&path)?);
        for (metric, allowed) in [
            (".sessions_created", sessiongate::metrics::CREATION_SOURCES),
            (
                ".sessions_revoked",
                sessiongate::metrics::REVOCATION_SOURCES,
            ),
        ] {
            for (at, _) in code.match_indices(metric) {
                let after = &code[at..];
                let label = after
                    .split_once("with_label_values(&[\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(label, _)| label)
                    .ok_or_else(|| {
                        format!("{}: no literal label after {metric}", path.display())
                    })?;
                assert!(
                    allowed.contains(&label),
                    "{}: {metric} label {label:?} is not pre-created",
                    path.display()
                );
                seen.insert(label.to_string());
            }
        }
    }
    for label in sessiongate::metrics::CREATION_SOURCES
        .iter()
        .chain(sessiongate::metrics::REVOCATION_SOURCES)
    {
        assert!(
            seen.contains(*label),
            "{label} is pre-created but never emitted"
        );
    }
    Ok(())
}
