//! The import graph of `src/` (docs/architecture-plan.md): files are nodes, an edge is a
//! `crate::…`, `super::…` or `self::…` path (in `use` lists too) naming another file's module;
//! inline `#[cfg(test)] mod tests` aside. No cycle may form; no file imports a layer above its
//! own ([`LAYERS`], bottom to top); the rule kit (`trace/kit/`) imports no rule; only the
//! reference model and the transports match on `ImageRef`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The layers, bottom to top: a file may import its own layer and the layers below, never one
/// above (docs/architecture-plan.md). A module is named by its path under `src/` without `.rs`;
/// a folder stands for every file in it.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "error",
            "digest",
            "reference",
            "image",
            "elf",
            "ldcache",
            "targuard",
            "growing",
            "progress",
            "par",
        ],
    ),
    // The layer streams and the merged tree: the archive transport reads its layers through
    // them, and a batch's blob cache shares their parses.
    ("rootfs", &["rootfs"]),
    // Cosign signatures are referrers read and written through the registry.
    ("transport", &["transport", "sign"]),
    ("packages", &["packages"]),
    ("trace", &["trace"]),
    ("build", &["plan", "layer", "sbom"]),
    ("verify", &["policy", "probe"]),
    ("report", &["report"]),
    (
        "commands",
        &[
            "cli", "harden", "batch", "inspect", "serve", "fuzzing", "lib",
        ],
    ),
];

/// The layer of a file (`trace/kit/cx.rs` → trace).
fn layer_of(rel: &str) -> Option<usize> {
    let m = rel.trim_end_matches(".rs");
    LAYERS.iter().position(|(_, mods)| {
        mods.iter()
            .any(|x| m == *x || m.starts_with(&format!("{x}/")))
    })
}

/// `a/b.rs` → `[a, b]`; `a/mod.rs` → `[a]`; `lib.rs` → `[]`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, base, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(
                p.strip_prefix(base)
                    .expect("under src")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// The paths a source names: (`crate`|`super`|`self`, segments), `use` lists expanded one
/// level (`use super::{a, b::c}` → `super::a`, `super::b::c`).
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !ident(b[i - 1]);
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| at_word && b[i..].starts_with(h.as_bytes()));
        let Some(h) = head else {
            i += 1;
            continue;
        };
        let mut j = i + h.len();
        let mut segs = Vec::new();
        loop {
            if b[j..].starts_with(b"{") {
                // A use list: each entry's first segments.
                let end = code[j..].find('}').map_or(b.len(), |e| j + e);
                for item in code[j + 1..end].split(',') {
                    let item: Vec<String> = item
                        .trim()
                        .split("::")
                        .map(|x| x.trim().to_string())
                        .filter(|x| {
                            !x.is_empty() && x.chars().all(|c| c.is_alphanumeric() || c == '_')
                        })
                        .collect();
                    if item.is_empty() {
                        continue;
                    }
                    let mut all = segs.clone();
                    all.extend(item);
                    out.push((h.trim_end_matches("::").to_string(), all));
                }
                j = end;
                segs.clear();
                break;
            }
            let s = j;
            while j < b.len() && ident(b[j]) {
                j += 1;
            }
            if j > s {
                segs.push(code[s..j].to_string());
            }
            if j > s && b[j..].starts_with(b"::") {
                j += 2;
                continue;
            }
            break;
        }
        if !segs.is_empty() {
            out.push((h.trim_end_matches("::").to_string(), segs));
        }
        i = j.max(i + 1);
    }
    out
}

/// Tarjan's strongly connected components with more than one file.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct St<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit(st: &mut St, v: &str) {
        let n = st.index.len();
        st.index.insert(v.to_string(), n);
        st.low.insert(v.to_string(), n);
        st.stack.push(v.to_string());
        st.on.insert(v.to_string());
        let next: Vec<String> = st.edges.get(v).into_iter().flatten().cloned().collect();
        for w in next {
            if !st.index.contains_key(&w) {
                visit(st, &w);
                let lw = st.low[&w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if st.on.contains(&w) {
                let iw = st.index[&w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(&w);
                let done = w == v;
                comp.insert(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                st.out.push(comp);
            }
        }
    }
    let mut st = St {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out
}

/// The file-level graph. `children`: also count a parent's `child::…` paths (a `mod child;`
/// it declares). The cycle check leaves them out, as the plan defines the graph (a parent
/// dispatching to its children while they use its types is one module); the layer and kit
/// checks count them (the trace driver's table names every rule).
fn graph(src: &Path, children: bool) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, src, &mut files);
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .filter(|f| f.as_str() != "main.rs")
        .map(|f| (module_of(f), f.clone()))
        .collect();
    let resolve = |parts: &[String]| -> Option<String> {
        (1..=parts.len())
            .rev()
            .find_map(|k| modules.get(&parts[..k]).cloned())
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.as_str() != "main.rs") {
        let text = fs::read_to_string(src.join(f)).expect("read a source");
        let me = module_of(f);
        let e = edges.entry(f.clone()).or_default();
        // `name::…` where the file declares `mod name;` is a path to its child.
        let kids: Vec<String> = if !children {
            Vec::new()
        } else {
            text.lines()
                .filter_map(|l| {
                    let l = l.trim_start();
                    let l = l
                        .strip_prefix("pub(crate) ")
                        .or(l.strip_prefix("pub "))
                        .unwrap_or(l);
                    l.strip_prefix("mod ")?
                        .strip_suffix(';')
                        .map(str::to_string)
                })
                .collect()
        };
        let mut found = paths(&text);
        for c in &kids {
            for (at, _) in text.match_indices(&format!("{c}::")) {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == ':') {
                    continue;
                }
                let rest = &text[at..];
                let end = rest
                    .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == ':'))
                    .unwrap_or(rest.len());
                let segs: Vec<String> = rest[..end]
                    .split("::")
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect();
                found.push(("self".to_string(), segs));
            }
        }
        for (head, segs) in found {
            let mut parts: Vec<String> = match head.as_str() {
                "crate" => Vec::new(),
                "super" => me[..me.len().saturating_sub(1)].to_vec(),
                _ => me.clone(),
            };
            parts.extend(segs);
            if let Some(t) = resolve(&parts)
                && &t != f
            {
                e.insert(t);
            }
        }
    }
    edges
}

#[test]
fn the_paths_of_a_source_are_read() {
    let got = paths(
        "use super::{a, b::c, self};\nuse crate::trace::Cx;\nlet x = crate::rootfs::display(p);\nfn f() { superb::x(); }\n#[cfg(test)]\nmod tests {\n    use crate::late;\n}\n",
    );
    let s = |h: &str, v: &[&str]| {
        (
            h.to_string(),
            v.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        got,
        vec![
            s("super", &["a"]),
            s("super", &["b", "c"]),
            s("super", &["self"]),
            s("crate", &["trace", "Cx"]),
            s("crate", &["rootfs", "display"]),
        ]
    );
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    e.entry("b".into()).or_default().insert("a".into());
    e.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycles(&e), vec![["a".to_string(), "b".to_string()].into()]);
}

/// The reader sees a circle made of `use super::` (the one `trace/config` and `trace/pathref`
/// formed before the kit), and a parent's `child::` paths.
#[test]
fn the_reader_catches_a_circle_of_use_super() {
    let dir = std::env::temp_dir().join(format!("pare-arch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("trace")).expect("mkdir");
    let write = |p: &str, t: &str| fs::write(dir.join(p), t).expect("write");
    write("lib.rs", "pub mod trace;\n");
    write(
        "trace/mod.rs",
        "mod config;\nmod pathref;\nfn f() { pathref::PathRefs; }\n",
    );
    write("trace/config.rs", "use super::{Cx, pathref};\n");
    write(
        "trace/pathref.rs",
        "use super::{Cx, Evidence, config, dir_of};\nuse crate::error::Result;\n",
    );
    let edges = graph(&dir, true);
    fs::remove_dir_all(&dir).ok();
    assert!(edges["trace/pathref.rs"].contains("trace/config.rs"));
    assert!(edges["trace/config.rs"].contains("trace/pathref.rs"));
    assert!(edges["trace/mod.rs"].contains("trace/pathref.rs"));
    let c = cycles(&edges);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].contains("trace/config.rs") && c[0].contains("trace/mod.rs"));
}

#[test]
fn no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src, false);
    let mut found = Vec::new();
    for c in cycles(&edges) {
        let inside: Vec<String> = c
            .iter()
            .flat_map(|f| {
                edges[f]
                    .iter()
                    .filter(|t| c.contains(*t))
                    .map(move |t| format!("  {f} → {t}"))
            })
            .collect();
        found.push(format!(
            "{}\n{}",
            c.iter().cloned().collect::<Vec<_>>().join(", "),
            inside.join("\n")
        ));
    }
    assert!(
        found.is_empty(),
        "import cycles (each with its edges):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_file_has_a_layer_and_no_import_goes_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src, true);
    let mut up = Vec::new();
    for (from, tos) in &edges {
        let lf = layer_of(from).unwrap_or_else(|| panic!("{from} has no layer in LAYERS"));
        for to in tos {
            let lt = layer_of(to).unwrap_or_else(|| panic!("{to} has no layer in LAYERS"));
            if lt > lf {
                up.push(format!(
                    "{from} ({}) imports {to} ({})",
                    LAYERS[lf].0, LAYERS[lt].0
                ));
            }
        }
    }
    assert!(
        up.is_empty(),
        "imports from a lower layer to a higher one:\n{}",
        up.join("\n")
    );
}

#[test]
fn the_rule_kit_imports_no_rule() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src, true);
    let mut bad = Vec::new();
    for (from, tos) in edges.iter().filter(|(f, _)| f.starts_with("trace/kit/")) {
        for to in tos {
            if to.starts_with("trace/") && !to.starts_with("trace/kit/") {
                bad.push(format!("{from} imports the rule {to}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Commands and stages never match on a transport: `ImageRef::` is written only in the
/// reference model and in `transport/` (everything else asks a `Sink` or the source functions).
#[test]
fn only_the_reference_and_the_transports_match_on_image_refs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        if f == "reference.rs" || f.starts_with("transport/") {
            continue;
        }
        let text = fs::read_to_string(src.join(&f)).expect("read a source");
        for (n, line) in text.lines().enumerate() {
            if line.contains("ImageRef::") {
                bad.push(format!("{f}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
