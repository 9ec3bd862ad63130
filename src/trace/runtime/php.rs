//! PHP, found from the interpreter's name (`php`, `php8.2`): the script and the files it
//! `include`s / `require`s with literal paths (relative to the script), recursively. The
//! configuration (`/etc/php/…/cli`, named in the binary) and the extensions its `.ini` files
//! load are the path-reference rule's business.

use super::{Lang, Req, graph, quoted};
use crate::error::Result;
use crate::rootfs::display;
use crate::trace::kit::{Cx, Exec, Interpreter, Rule, abs_in};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "PHP",
    names: &["php"],
    library: None,
    embedded: false,
    extensions: &["php"],
    takes_value: &["-c", "-d", "-z"],
    code: &["-r"],
    script_option: &["-f"],
};

pub(crate) struct Php;

struct PhpLang;

impl Rule for Php {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        let (a0, file) = e.names();
        let is = |n: &str| {
            n.strip_prefix("php")
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        };
        if !(is(a0) || is(file)) || cx.elf(&e.path)?.is_none() {
            return Ok(());
        }
        let mut i = 1;
        let mut script = None;
        while i < e.argv.len() {
            let Some(a) = e.arg(i) else { break };
            match a {
                "-c" | "-d" | "-z" => i += 2,
                "-f" => {
                    script = e.arg(i + 1).map(str::to_string);
                    break;
                }
                "-r" | "-S" | "-a" => return Ok(()),
                _ if a.starts_with('-') => i += 1,
                _ => {
                    script = Some(a.to_string());
                    break;
                }
            }
        }
        let Some(s) = script else { return Ok(()) };
        let Some(canon) = super::keep_script(cx, e, "PHP", &s)? else {
            return Ok(());
        };
        graph(cx, &mut PhpLang, &e.path, vec![], vec![canon])
    }
}

impl Lang for PhpLang {
    fn name(&self) -> &'static str {
        "PHP"
    }

    fn parse(&self, text: &str) -> Vec<Req> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("//") || t.starts_with('#') || t.starts_with('*') {
                continue;
            }
            for kw in ["require_once", "include_once", "require", "include"] {
                let mut rest = t;
                while let Some(pos) = rest.find(kw) {
                    let after = &rest[pos + kw.len()..];
                    let before = rest[..pos].chars().last();
                    rest = after;
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        || after.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                    {
                        continue;
                    }
                    // `__DIR__ . '/x.php'`: relative to the file.
                    let a = after.trim_start().trim_start_matches('(').trim_start();
                    let (a, dir) = match a.strip_prefix("__DIR__") {
                        Some(r) => (r.trim_start().trim_start_matches('.').trim_start(), true),
                        None => (a, false),
                    };
                    if let Some(spec) = quoted(a) {
                        let spec = if dir {
                            spec.trim_start_matches('/').to_string()
                        } else {
                            spec
                        };
                        out.push(Req {
                            spec,
                            line: n + 1,
                            nested: false,
                            relative: true,
                            waits_for: None,
                        });
                    }
                }
            }
        }
        out
    }

    fn resolve(&mut self, cx: &mut Cx, req: &Req, from: &str) -> Result<Option<Vec<String>>> {
        let dir = display(from.rsplit_once('/').map_or("", |(d, _)| d));
        let p = abs_in(&dir, &req.spec);
        Ok(cx.resolve_file(&p)?.map(|_| vec![p]))
    }

    fn in_runtime(&self, _cx: &Cx, _file: &str) -> bool {
        false
    }

    fn is_source(&self, file: &str) -> bool {
        file.ends_with(".php") || file.ends_with(".inc")
    }
}
