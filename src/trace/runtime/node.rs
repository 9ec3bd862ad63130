//! Node.js, found from the interpreter's name (`node`, `nodejs`). Its own library is built
//! into the binary. Kept: the script, then its `require()` / `import` / `export … from` /
//! `import()` graph resolved as Node resolves it: relative paths with the extensions and
//! `index` files, bare names through `node_modules` up the directory chain and `NODE_PATH`
//! (a package kept whole, entered by `package.json` `main` or `exports`); built-in modules
//! (`fs`, `node:path`, …) are not files.

use super::{Lang, Req, Root, graph};
use crate::error::Result;
use crate::rootfs::{Kind, display};
use crate::trace::kit::{Cx, Evidence, Exec, Interpreter, Rule, Why, abs_in, join};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Node.js",
    names: &["node", "nodejs"],
    library: Some("libnode"),
    embedded: false,
    extensions: &["js"],
    takes_value: &[
        "-r",
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
    ],
    code: &["-e", "--eval", "-p", "--print"],
    script_option: &[],
};

/// Largest package kept whole; a larger one is kept by its graph only.
const MAX_PACKAGE_BYTES: u64 = 128 << 20;

const BUILTINS: &[&str] = &[
    "assert",
    "async_hooks",
    "buffer",
    "child_process",
    "cluster",
    "console",
    "constants",
    "crypto",
    "dgram",
    "diagnostics_channel",
    "dns",
    "domain",
    "events",
    "fs",
    "http",
    "http2",
    "https",
    "inspector",
    "module",
    "net",
    "os",
    "path",
    "perf_hooks",
    "process",
    "punycode",
    "querystring",
    "readline",
    "repl",
    "stream",
    "string_decoder",
    "sys",
    "timers",
    "tls",
    "trace_events",
    "tty",
    "url",
    "util",
    "v8",
    "vm",
    "wasi",
    "worker_threads",
    "zlib",
    "test",
];

#[derive(Default)]
pub(crate) struct Node;

struct NodeLang {
    node_path: Vec<String>,
    /// Packages kept whole (canonical dirs).
    packages: Vec<String>,
}

impl Rule for Node {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let (a0, file) = e.names();
        if !matches!(a0, "node" | "nodejs") && !matches!(file, "node" | "nodejs") {
            return Ok(());
        }
        if cx.elf(&e.path)?.is_none() {
            return Ok(());
        }
        let command = INTERPRETER.command(e);
        let script = command.script.map(|(_, s)| s);
        let roots: Vec<String> = command
            .options
            .into_iter()
            .filter(|(o, _)| INTERPRETER.takes_value.contains(&o.as_str()))
            .filter_map(|(_, v)| v)
            .collect();
        // NODE_PATH, then the global folders: PREFIX/lib/node, and the directories Debian's
        // node searches for its packaged modules.
        let mut node_path: Vec<String> = cx
            .run
            .env_var("NODE_PATH")
            .map(|v| {
                v.split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| abs_in(cx.run.cwd(), d))
                    .collect()
            })
            .unwrap_or_default();
        let prefix = crate::trace::kit::dir_of(&crate::trace::kit::dir_of(&e.path)[1..]);
        node_path.push(join(&prefix, "lib/node"));
        for d in [
            "/usr/local/lib/nodejs",
            "/usr/local/share/nodejs",
            "/usr/lib/nodejs",
            "/usr/share/nodejs",
            "/usr/lib/x86_64-linux-gnu/nodejs",
            "/usr/lib/aarch64-linux-gnu/nodejs",
        ] {
            node_path.push(d.to_string());
        }
        // Sources of the script's directory tree (its node_modules) and the global folders,
        // read in one pass.
        let mut trees = node_path.clone();
        if let Some(s) = &script {
            trees.push(crate::trace::kit::dir_of(
                abs_in(cx.run.cwd(), s).trim_start_matches('/'),
            ));
        }
        super::prefetch_sources(cx, &trees, &[".js", ".mjs", ".cjs", ".json"])?;
        let mut sources = Vec::new();
        if let Some(s) = script {
            let p = abs_in(cx.run.cwd(), &s);
            let mut lang = NodeLang {
                node_path: node_path.clone(),
                packages: vec![],
            };
            let req = Req::named(p.clone());
            match lang.resolve(cx, &req, "")? {
                Some(files) if !files.is_empty() => {
                    let canon = cx.keep_if_file(
                        &files[0],
                        Evidence::new(
                            Why::Runtime,
                            Some(&e.path),
                            format!("Node.js script run by {}", display(&e.path)),
                        ),
                    );
                    sources.extend(canon);
                }
                _ => cx.warn(format!(
                    "{}: runs the script {s}, which is not in the image",
                    display(&e.path)
                )),
            }
        }
        let from = sources.first().cloned().unwrap_or_default();
        let roots = roots
            .into_iter()
            .map(|m| Root {
                req: Req::named(m),
                from: from.clone(),
                budget: 1,
                quiet: false,
            })
            .collect();
        graph(
            cx,
            &mut NodeLang {
                node_path,
                packages: vec![],
            },
            &e.path,
            roots,
            sources,
        )
    }
}

fn kind(cx: &Cx, p: &str) -> Option<Kind> {
    cx.fs
        .resolve(p, true)
        .ok()
        .and_then(|r| cx.fs.get(&r.path).map(|n| n.kind.clone()))
}

impl NodeLang {
    /// A file or directory as Node loads it: the path, with .js/.mjs/.cjs/.json/.node, or a
    /// directory's package.json `main` / `index.js`.
    fn load_path(&self, cx: &mut Cx, p: &str) -> Result<Option<String>> {
        if matches!(kind(cx, p), Some(Kind::File { .. })) {
            return Ok(Some(p.to_string()));
        }
        for ext in [".js", ".mjs", ".cjs", ".json", ".node"] {
            let c = format!("{p}{ext}");
            if matches!(kind(cx, &c), Some(Kind::File { .. })) {
                return Ok(Some(c));
            }
        }
        if matches!(kind(cx, p), Some(Kind::Dir)) {
            if let Some(main) = self.package_entry(cx, p)? {
                let m = join(p, main.trim_start_matches("./"));
                for c in [m.clone(), format!("{m}.js"), join(&m, "index.js")] {
                    if matches!(kind(cx, &c), Some(Kind::File { .. })) {
                        return Ok(Some(c));
                    }
                }
            }
            for idx in [
                "index.js",
                "index.mjs",
                "index.cjs",
                "index.json",
                "index.node",
            ] {
                let c = join(p, idx);
                if matches!(kind(cx, &c), Some(Kind::File { .. })) {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// `exports["."]` (a string, or its `require` / `node` / `default` / `import`) or `main`.
    fn package_entry(&self, cx: &mut Cx, dir: &str) -> Result<Option<String>> {
        let Some((canon, _)) = cx.resolve_file(&join(dir, "package.json"))? else {
            return Ok(None);
        };
        let Some(text) = cx.text(&canon)? else {
            return Ok(None);
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(None);
        };
        let pick = |x: &serde_json::Value| -> Option<String> {
            match x {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => ["require", "node", "default", "import"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(|v| v.as_str().map(str::to_string))),
                _ => None,
            }
        };
        let from_exports = v.get("exports").and_then(|e| match e {
            serde_json::Value::Object(o) if o.contains_key(".") => o.get(".").and_then(pick),
            other => pick(other),
        });
        Ok(from_exports.or_else(|| v.get("main").and_then(|m| m.as_str().map(str::to_string))))
    }
}

impl Lang for NodeLang {
    fn name(&self) -> &'static str {
        "Node.js"
    }

    fn parse(&self, text: &str) -> Vec<Req> {
        let mut out = Vec::new();
        let mut in_block = false;
        for (n, line) in text.lines().enumerate() {
            let mut t = line.trim_start();
            if in_block {
                match t.find("*/") {
                    Some(i) => {
                        in_block = false;
                        t = &t[i + 2..];
                    }
                    None => continue,
                }
            }
            if t.starts_with("//") {
                continue;
            }
            if t.starts_with("/*") && !t.contains("*/") {
                in_block = true;
                continue;
            }
            for kw in ["require(", "import(", "from ", "import "] {
                let glued = |c: char| c.is_alphanumeric() || c == '_' || c == '$' || c == '.';
                for after in super::after_keyword(t, kw, glued) {
                    if let Some(spec) = super::quoted(after) {
                        let relative = spec.starts_with("./")
                            || spec.starts_with("../")
                            || spec == "."
                            || spec == "..";
                        out.push(Req {
                            spec,
                            line: n + 1,
                            nested: false,
                            relative,
                            waits_for: None,
                        });
                    }
                }
            }
        }
        out
    }

    fn resolve(&mut self, cx: &mut Cx, req: &Req, from: &str) -> Result<Option<Vec<String>>> {
        let spec = req.spec.trim_start_matches("node:");
        if req.spec.starts_with("node:")
            || BUILTINS.contains(&spec.split('/').next().unwrap_or(spec))
        {
            return Ok(Some(vec![]));
        }
        let dir = display(from.rsplit_once('/').map_or("", |(d, _)| d));
        if spec.starts_with('/') || req.relative {
            let p = abs_in(&dir, spec);
            return Ok(self.load_path(cx, &p)?.map(|f| vec![f]));
        }
        // Bare: node_modules in each parent directory, then NODE_PATH.
        let (pkg, sub) = match spec.strip_prefix('@') {
            Some(scoped) => {
                let mut parts = scoped.splitn(3, '/');
                let a = parts.next().unwrap_or("");
                let b = parts.next().unwrap_or("");
                (format!("@{a}/{b}"), parts.next().unwrap_or("").to_string())
            }
            None => match spec.split_once('/') {
                Some((a, b)) => (a.to_string(), b.to_string()),
                None => (spec.to_string(), String::new()),
            },
        };
        let mut bases = Vec::new();
        let mut d = dir.clone();
        loop {
            if !d.ends_with("/node_modules") {
                bases.push(join(&d, "node_modules"));
            }
            if d == "/" || d.is_empty() {
                break;
            }
            d = match d.rfind('/') {
                Some(0) | None => "/".into(),
                Some(i) => d[..i].to_string(),
            };
        }
        bases.extend(self.node_path.iter().cloned());
        for b in bases {
            let pdir = join(&b, &pkg);
            let Ok(r) = cx.fs.resolve(&pdir, true) else {
                continue;
            };
            if !cx.fs.get(&r.path).is_some_and(|n| n.is_dir()) {
                continue;
            }
            let target = if sub.is_empty() {
                pdir.clone()
            } else {
                join(&pdir, &sub)
            };
            let Some(f) = self.load_path(cx, &target)? else {
                continue;
            };
            if !self.packages.contains(&r.path) {
                self.packages.push(r.path.clone());
                if cx.tree_bytes(&r.path, MAX_PACKAGE_BYTES) <= MAX_PACKAGE_BYTES {
                    let ev = Evidence::new(
                        Why::Runtime,
                        Some(from),
                        format!("Node.js package {pkg}, required by {}", display(from)),
                    );
                    cx.prefetch_tree(&r.path)?;
                    cx.keep_tree(&r.path, &ev);
                }
            }
            return Ok(Some(vec![f]));
        }
        Ok(None)
    }

    fn in_runtime(&self, _cx: &Cx, file: &str) -> bool {
        file.contains("/node_modules/")
    }

    fn is_source(&self, file: &str) -> bool {
        file.ends_with(".js") || file.ends_with(".mjs") || file.ends_with(".cjs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_and_imports() {
        let lang = NodeLang {
            node_path: vec![],
            packages: vec![],
        };
        let text = "const fs = require('fs');\nimport express from \"express\";\nimport { x } from './lib/x.js';\n// require('nope')\nconst y = await import('../y');\nexport * from './z';\nobj.require('no');\n";
        crate::trace::runtime::assert_requires(
            lang.parse(text),
            |r| r.relative,
            &[
                ("fs", false),
                ("express", false),
                ("./lib/x.js", true),
                ("../y", true),
                ("./z", true),
            ],
        );
    }
}
