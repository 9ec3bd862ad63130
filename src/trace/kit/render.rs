//! A trace printed: the lddtree-like tree, the kept list, the JSON document.

use super::*;
use std::collections::HashSet;

use crate::rootfs::display;

/// Print the tree like lddtree: each object once, with how each name was found. Iterative, so
/// a hostile chain of thousands of libraries cannot overflow the stack.
pub fn render_tree(t: &Trace) -> String {
    enum Item {
        Expand(usize, usize),
        Line(usize, usize),
    }
    let mut by_from: std::collections::HashMap<usize, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, e) in t.edges.iter().enumerate() {
        by_from.entry(e.from).or_default().push(i);
    }
    let mut out = String::new();
    let mut expanded = HashSet::new();
    for &r in &t.roots {
        let o = &t.objects[r];
        out.push_str(&display(&o.path));
        if let Some(i) = &o.facts.interpreter {
            out.push_str(&format!(" (interpreter => {i})"));
        }
        out.push('\n');
        let mut stack = vec![Item::Expand(r, 0)];
        while let Some(item) = stack.pop() {
            match item {
                Item::Expand(idx, depth) => {
                    if !expanded.insert(idx) {
                        continue;
                    }
                    for &e in by_from.get(&idx).into_iter().flatten().rev() {
                        stack.push(Item::Line(e, depth + 1));
                    }
                }
                Item::Line(e, depth) => {
                    let e = &t.edges[e];
                    let pad = "    ".repeat(depth.min(32));
                    match e.to {
                        Some(to) if e.via != "already loaded" => {
                            out.push_str(&format!(
                                "{pad}{} => {} [{}]\n",
                                e.name,
                                display(&t.objects[to].path),
                                e.via
                            ));
                            stack.push(Item::Expand(to, depth));
                        }
                        Some(_) => {}
                        None => out.push_str(&format!("{pad}{} => not found\n", e.name)),
                    }
                }
            }
        }
    }
    out
}

/// Every kept path with its evidence, one per line (files, then symlinks), and the libc
/// features that fired: what `pare trace` prints after the tree.
pub fn render_kept(t: &Trace) -> String {
    let mut out = String::new();
    if !t.features.is_empty() {
        out.push_str("libc features:\n");
        for f in &t.features {
            out.push_str(&format!(
                "    {} <= {} in {}\n",
                f.feature, f.trigger, f.object
            ));
        }
    }
    out.push_str("kept:\n");
    for (p, ev) in t.files.iter().chain(t.symlinks.iter()) {
        let first = ev.first();
        out.push_str(&format!(
            "    {:<56} [{}] {}",
            display(p),
            first.map(|e| kind_name(e.kind)).unwrap_or_default(),
            first.map(|e| e.detail.as_str()).unwrap_or("")
        ));
        if ev.len() > 1 {
            out.push_str(&format!(" (+{} more)", ev.len() - 1));
        }
        out.push('\n');
    }
    out
}

/// The trace as JSON: every kept path with its evidence, the libc features that fired, what
/// was looked at and dropped, and the warnings.
pub fn json(t: &Trace) -> serde_json::Value {
    let files: serde_json::Map<String, serde_json::Value> = t
        .files
        .iter()
        .chain(t.symlinks.iter())
        .map(|(p, ev)| {
            (
                display(p),
                serde_json::json!({
                    "reason": ev.first().map(|e| e.detail.clone()).unwrap_or_default(),
                    "evidence": ev,
                }),
            )
        })
        .collect();
    let dropped: serde_json::Map<String, serde_json::Value> = t
        .dropped
        .iter()
        .map(|(p, why)| (display(p), serde_json::Value::String(why.clone())))
        .collect();
    serde_json::json!({
        "argv": t.argv,
        "entrypoint": display(&t.entrypoint),
        "files": files,
        "features": t.features,
        "programs": t.programs.iter().map(|p| display(p)).collect::<Vec<_>>(),
        "dropped": dropped,
        "warnings": t.warnings,
        "open_questions": t.questions,
    })
}
