//! Lua, as an interpreter (`lua`, `lua5.4`, `luajit`) or embedded (a program that links
//! liblua and loads `.lua` files: haproxy's `lua-load`, nginx's lua module). `package.path`
//! and `package.cpath` come from `LUA_PATH`/`LUA_CPATH` (and their `_5_4` forms) or from the
//! defaults compiled into liblua (`/usr/share/lua/5.4/?.lua;…`). Kept: the scripts and their
//! `require` graph, Lua modules and C modules (`cjson.so`, traced as ELF), with the
//! all-in-one rule (`a.b` from `a.so`).

use std::collections::HashSet;

use super::{Lang, Req, Root, graph, quoted};
use crate::error::Result;
use crate::trace::kit::{Cx, Exec, Interpreter, Rule, abs_in};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Lua",
    names: &["lua", "luajit"],
    library: Some("liblua"),
    embedded: false,
    extensions: &["lua"],
    // `-e CODE` runs before the script, it does not replace it.
    takes_value: &["-l", "-e"],
    code: &[],
    script_option: &[],
};

#[derive(Default)]
pub(crate) struct Lua {
    pending: Vec<String>,
    done: HashSet<String>,
}

struct LuaLang {
    path: Vec<String>,
    cpath: Vec<String>,
    cwd: String,
}

/// `package.path` and `package.cpath` templates compiled into a Lua library or interpreter:
/// the `;`-separated strings that hold `?.lua` and `?.so`.
fn templates(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut path, mut cpath) = (Vec::new(), Vec::new());
    for run in bytes.split(|&b| b == 0) {
        if run.len() > 4096 || !run.iter().all(|b| (0x20..0x7f).contains(b)) {
            continue;
        }
        let s = String::from_utf8_lossy(run);
        if !s.contains("?.lua") && !s.contains("?.so") {
            continue;
        }
        for t in s.split(';').map(str::trim).filter(|t| t.contains('?')) {
            let list = if t.ends_with(".so") {
                &mut cpath
            } else {
                &mut path
            };
            if !list.iter().any(|x| x == t) {
                list.push(t.to_string());
            }
        }
    }
    (path, cpath)
}

/// Templates from the environment (`;;` stands for the defaults), else the defaults.
fn with_env(cx: &Cx, names: &[&str], defaults: Vec<String>) -> Vec<String> {
    for n in names {
        if let Some(v) = cx.run.env_var(n) {
            let mut out = Vec::new();
            for t in v.split(';') {
                if t.is_empty() {
                    out.extend(defaults.iter().cloned());
                } else {
                    out.push(t.to_string());
                }
            }
            return out;
        }
    }
    defaults
}

impl Lua {
    /// Templates from an object and the liblua it links (read whole, bounded).
    fn from_objects(cx: &mut Cx, objects: &[String]) -> (Vec<String>, Vec<String>) {
        let (mut path, mut cpath) = (Vec::new(), Vec::new());
        for o in objects {
            if let Ok(b) = cx.contents.read(cx.fs, o, 64 << 20) {
                let (p, c) = templates(&b);
                path.extend(p);
                cpath.extend(c);
            }
        }
        (path, cpath)
    }
}

impl Rule for Lua {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let (a0, file) = e.names();
        if !(INTERPRETER.runs_as(a0) || INTERPRETER.runs_as(file)) {
            return Ok(());
        }
        let Some(facts) = cx.elf(&e.path)? else {
            return Ok(());
        };
        let mut objects = vec![e.path.clone()];
        if let Some(idx) = cx.ld.object_at(&e.path) {
            for n in facts.needed.iter().filter(|n| n.starts_with("liblua")) {
                for (cand, _) in cx.candidates(idx, n)? {
                    if let Some((canon, _)) = cx.resolve_file(&cand)? {
                        objects.push(canon);
                        break;
                    }
                }
            }
        }
        cx.contents.prefetch(cx.fs, &objects)?;
        let (p, c) = Self::from_objects(cx, &objects);
        let mut lang = LuaLang {
            path: with_env(cx, &["LUA_PATH_5_4", "LUA_PATH_5_3", "LUA_PATH"], p),
            cpath: with_env(cx, &["LUA_CPATH_5_4", "LUA_CPATH_5_3", "LUA_CPATH"], c),
            cwd: cx.run.cwd().to_string(),
        };
        // lua [-l mod] [-e code] script args
        let mut roots = Vec::new();
        let command = INTERPRETER.command(e);
        for (o, v) in &command.options {
            match (o.as_str(), v) {
                ("-l", Some(m)) => roots.push(Root::start(
                    m.split('=').next_back().unwrap_or(m).to_string(),
                )),
                ("-e", Some(code)) => roots.extend(lang.parse(code).into_iter().map(|req| Root {
                    req,
                    ..Root::start("")
                })),
                _ => {}
            }
        }
        let script = command.script.map(|(_, s)| s);
        let mut sources = Vec::new();
        if let Some(s) = script
            && let Some(canon) = super::keep_script(cx, e, "Lua", &s)?
        {
            self.done.insert(canon.clone());
            sources.push(canon);
        }
        graph(cx, &mut lang, &e.path, roots, sources)
    }

    fn file(&mut self, _cx: &mut Cx, path: &str) -> Result<()> {
        if path.ends_with(".lua") && !self.done.contains(path) {
            self.pending.push(path.to_string());
        }
        Ok(())
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Scripts an embedding program loads: the paths of the liblua it links.
        let libs: Vec<String> = cx
            .objects_with_soname(|s| s.starts_with("liblua") || s.starts_with("libluajit"))
            .into_iter()
            .map(|o| o.path.clone())
            .collect();
        if libs.is_empty() {
            return Ok(());
        }
        let pending: Vec<String> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|p| self.done.insert(p.clone()))
            .collect();
        let (p, c) = Self::from_objects(cx, &libs);
        let mut lang = LuaLang {
            path: with_env(cx, &["LUA_PATH_5_4", "LUA_PATH_5_3", "LUA_PATH"], p),
            cpath: with_env(cx, &["LUA_CPATH_5_4", "LUA_CPATH_5_3", "LUA_CPATH"], c),
            cwd: cx.run.cwd().to_string(),
        };
        graph(cx, &mut lang, &libs[0], vec![], pending)
    }
}

impl Lang for LuaLang {
    fn name(&self) -> &'static str {
        "Lua"
    }

    fn parse(&self, text: &str) -> Vec<Req> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("--") {
                continue;
            }
            let mut rest = t;
            while let Some(pos) = rest.find("require") {
                let before = rest[..pos].chars().last();
                let after = &rest[pos + "require".len()..];
                rest = after;
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == ':') {
                    continue;
                }
                // require "x", require("x"), require 'x', pcall(require, "x")
                let a = after.trim_start().trim_start_matches(',').trim_start();
                if let Some(spec) = quoted(a).or_else(|| {
                    a.strip_prefix("[[")
                        .and_then(|r| r.split("]]").next())
                        .map(str::to_string)
                }) {
                    out.push(Req {
                        spec,
                        line: n + 1,
                        nested: false,
                        relative: false,
                        waits_for: None,
                    });
                }
            }
        }
        out
    }

    fn resolve(&mut self, cx: &mut Cx, req: &Req, _from: &str) -> Result<Option<Vec<String>>> {
        let name = req.spec.replace('.', "/");
        let fill = |t: &str, n: &str| abs_in(&self.cwd, &t.replace('?', n));
        for t in &self.path {
            let f = fill(t, &name);
            if cx.resolve_file(&f)?.is_some() {
                return Ok(Some(vec![f]));
            }
        }
        for t in &self.cpath {
            let f = fill(t, &name);
            if cx.resolve_file(&f)?.is_some() {
                return Ok(Some(vec![f]));
            }
        }
        // All-in-one: `a.b` from the C library of `a`.
        if let Some((top, _)) = req.spec.split_once('.') {
            for t in &self.cpath {
                let f = fill(t, top);
                if cx.resolve_file(&f)?.is_some() {
                    return Ok(Some(vec![f]));
                }
            }
        }
        // Built into the interpreter.
        if matches!(
            req.spec.as_str(),
            "string"
                | "table"
                | "math"
                | "io"
                | "os"
                | "debug"
                | "coroutine"
                | "utf8"
                | "package"
                | "bit32"
                | "ffi"
                | "jit"
                | "bit"
        ) {
            return Ok(Some(vec![]));
        }
        Ok(None)
    }

    fn in_runtime(&self, _cx: &Cx, file: &str) -> bool {
        file.contains("/lua/")
    }

    fn is_source(&self, file: &str) -> bool {
        file.ends_with(".lua")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_requires() {
        let bytes = b"x\0/usr/local/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;./?.lua\0/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;./?.so\0y";
        let (p, c) = templates(bytes);
        assert_eq!(
            p,
            vec![
                "/usr/local/share/lua/5.4/?.lua",
                "/usr/share/lua/5.4/?/init.lua",
                "./?.lua"
            ]
        );
        assert_eq!(c, vec!["/usr/lib/x86_64-linux-gnu/lua/5.4/?.so", "./?.so"]);
        let lang = LuaLang {
            path: vec![],
            cpath: vec![],
            cwd: "/".into(),
        };
        let got: Vec<String> = lang
            .parse("local cjson = require \"cjson\"\nlocal pl = require('pl.stringx')\n-- require 'no'\nlocal ok = pcall(require, 'lfs')\nx.require('no')\n")
            .into_iter()
            .map(|r| r.spec)
            .collect();
        assert_eq!(got, vec!["cjson", "pl.stringx", "lfs"]);
    }
}
