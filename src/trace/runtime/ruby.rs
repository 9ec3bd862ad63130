//! Ruby (MRI), found from the interpreter: its name (`ruby`, `ruby3.1`) or the libruby it
//! links. `$LOAD_PATH` comes from the directories compiled into libruby (site, vendor, the
//! standard library and its architecture directory), `RUBYLIB` and `-I`. Kept: the start-up
//! set (`rubygems` with the gem specifications it reads, `error_highlight`, `did_you_mean`,
//! `syntax_suggest`), the encoding database and the Unicode encodings of the architecture
//! directory (`enc/`), `rbconfig.rb`, then the `require` / `require_relative` / `load` /
//! `autoload` graph of the script, resolved through `$LOAD_PATH` and, for gems, the gem
//! directories (a gem is kept whole with its specification).

use std::collections::HashMap;

use super::{Lang, Req, Root, graph, is_dir, nested_by_indent, quoted};
use crate::error::Result;
use crate::rootfs::{Kind, display};
use crate::trace::kit::{Cx, Evidence, Exec, Interpreter, Rule, Why, abs_in, join, under};

/// The interpreter, as the rule kit describes it.
pub(crate) const INTERPRETER: Interpreter = Interpreter {
    language: "Ruby",
    names: &["ruby"],
    library: Some("libruby"),
    embedded: true,
    extensions: &["rb"],
    takes_value: &["-I", "-r", "-C", "-E", "-F", "-x"],
    code: &["-e"],
    script_option: &[],
};

/// Encodings of `enc/` kept without being named: the database and the Unicode family.
const ENC_DEFAULT: &[&str] = &[
    "encdb.so",
    "trans/transdb.so",
    "utf_16be.so",
    "utf_16le.so",
    "utf_32be.so",
    "utf_32le.so",
    "trans/utf_16_32.so",
];

#[derive(Default)]
pub(crate) struct Ruby {
    seen: HashMap<String, bool>,
}

struct RubyLang {
    load_path: Vec<String>,
    gem_roots: Vec<String>,
    /// Canonical trees of the runtime.
    trees: Vec<String>,
    /// The entrypoint's file arguments (a `config.ru`): the constants they use.
    argv_files: Vec<String>,
}

/// The Ruby directories compiled into libruby (or the static interpreter), in $LOAD_PATH order.
fn ruby_dirs(cx: &Cx, strings: Vec<String>) -> Vec<String> {
    let mut dirs: Vec<String> = strings
        .into_iter()
        .filter(|s| s.contains("ruby") && !s.contains("/include/") && !s.ends_with(".h"))
        .filter(|s| is_dir(cx, s))
        .collect();
    // $LOAD_PATH order: site, vendor, then the library; in each, the version directory,
    // the generic one, the architecture one (the library before its architecture dir).
    dirs.sort_by_key(|d| {
        let rank = if d.contains("site_ruby") {
            0
        } else if d.contains("vendor_ruby") {
            1
        } else {
            2
        };
        let versioned = d
            .rsplit('/')
            .next()
            .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_digit()));
        (rank, d.contains("-linux-"), !versioned)
    });
    dirs.dedup();
    dirs
}

/// What the interpreter's options ask for (besides `-I`, added to `load_path`).
struct Options {
    /// RubyGems loads (no `--disable-gems`).
    gems: bool,
    /// `-r LIB`.
    requires: Vec<String>,
    script: Option<String>,
    /// `-e CODE`.
    code: Option<String>,
}

/// Options: -I DIR, -r LIB, --disable-gems, -e CODE.
fn options(cx: &Cx, e: &Exec, load_path: &mut Vec<String>) -> Options {
    let mut gems = true;
    let mut requires = Vec::new();
    let mut script = None;
    let mut code = None;
    let mut i = 1;
    while i < e.argv.len() {
        let Some(a) = e.arg(i) else { break };
        match a {
            "-I" | "-r" | "-e" | "-C" | "-E" | "-F" | "-x" if i + 1 < e.argv.len() => {
                let v = e.arg(i + 1).map(str::to_string);
                match (a, v) {
                    ("-I", Some(v)) => load_path.push(abs_in(cx.run.cwd(), &v)),
                    ("-r", Some(v)) => requires.push(v),
                    ("-e", Some(v)) => code = Some(v),
                    _ => {}
                }
                i += 2;
                continue;
            }
            _ if a.starts_with("-I") && a.len() > 2 => {
                load_path.push(abs_in(cx.run.cwd(), &a[2..]))
            }
            _ if a.starts_with("-r") && a.len() > 2 => requires.push(a[2..].to_string()),
            "--disable-gems" | "--disable=gems" | "--disable-all" | "--disable=all" => gems = false,
            // With `-e CODE` there is no script: what follows is ARGV.
            "--" => {
                if code.is_none() {
                    script = e.arg(i + 1).map(str::to_string);
                }
                break;
            }
            _ if a.starts_with('-') => {}
            _ => {
                if code.is_none() {
                    script = Some(a.to_string());
                }
                break;
            }
        }
        i += 1;
    }
    Options {
        gems,
        requires,
        script,
        code,
    }
}

/// Gem roots: next to the standard library (…/ruby/gems/VERSION), Debian's, GEM_PATH.
fn gem_roots(cx: &mut Cx, dirs: &[String]) -> Vec<String> {
    let mut gem_roots = Vec::new();
    for d in dirs {
        if let Some((base, ver)) = d.rsplit_once('/')
            && ver.chars().next().is_some_and(|c| c.is_ascii_digit())
            && base.ends_with("/ruby")
        {
            gem_roots.push(format!("{base}/gems/{ver}"));
            gem_roots.push(format!("/var/lib/gems/{ver}"));
            gem_roots.push(format!("/usr/share/rubygems-integration/{ver}"));
            gem_roots.push("/usr/share/rubygems-integration/all".into());
            for t in ["x86_64-linux-gnu", "aarch64-linux-gnu"] {
                gem_roots.push(format!("/usr/lib/{t}/rubygems-integration/{ver}"));
            }
        }
    }
    for k in ["GEM_HOME", "GEM_PATH", "BUNDLE_PATH"] {
        if let Some(v) = cx.run.env_var(k) {
            gem_roots.extend(v.split(':').filter(|d| !d.is_empty()).map(str::to_string));
        }
    }
    gem_roots.retain(|d| is_dir(cx, d));
    gem_roots.dedup();
    gem_roots
}

/// What the interpreter reads at start-up, once per interpreter: rbconfig, the encodings of
/// the architecture directory, and (with RubyGems) the gem specifications and build markers.
fn keep_start_up(
    cx: &mut Cx,
    e: &Exec,
    dirs: &[String],
    gem_roots: &[String],
    gems: bool,
) -> Result<()> {
    let ev = |d: String| Evidence::new(Why::Runtime, Some(&e.path), d);
    // rbconfig and the encodings of the architecture directory.
    for d in dirs {
        cx.keep_if_file(
            &join(d, "rbconfig.rb"),
            ev("Ruby build configuration".into()),
        );
        for enc in ENC_DEFAULT {
            cx.keep_if_file(
                &join(d, &format!("enc/{enc}")),
                ev("Ruby encoding (loaded by name at run time)".into()),
            );
        }
    }
    // The gem specifications RubyGems reads at start-up.
    if gems {
        for g in gem_roots {
            if let Ok(r) = cx.fs.resolve(&join(g, "specifications"), true)
                && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
            {
                cx.prefetch_tree(&r.path)?;
                cx.keep_tree(
                    &r.path,
                    &ev("gem specifications (RubyGems reads them at start-up)".into()),
                );
                // Gems with extensions: RubyGems checks each one's build marker and
                // warns ("Ignoring … because its extensions are not built") without.
                if let Ok(x) = cx.fs.resolve(&join(g, "extensions"), true) {
                    let marks: Vec<String> = cx
                        .fs
                        .subtree(&x.path)
                        .filter(|(k, _)| k.ends_with("/gem.build_complete"))
                        .map(|(k, _)| display(k))
                        .take(10_000)
                        .collect();
                    for m in marks {
                        cx.keep_if_file(
                            &m,
                            ev(
                                "a gem's extension build marker (RubyGems checks it at start-up)"
                                    .into(),
                            ),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

impl Rule for Ruby {
    fn exec(&mut self, cx: &mut Cx, e: &Exec) -> Result<()> {
        // The directories compiled into libruby (or the static interpreter).
        let Some(started) = INTERPRETER.start(cx, e)? else {
            return Ok(());
        };
        let dirs = ruby_dirs(cx, started.strings);
        let mut load_path = Vec::new();
        if let Some(rl) = cx.run.env_var("RUBYLIB") {
            load_path.extend(
                rl.split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| abs_in(cx.run.cwd(), d)),
            );
        }
        let Options {
            gems,
            requires,
            script,
            code,
        } = options(cx, e, &mut load_path);
        load_path.extend(dirs.iter().cloned());
        let gem_roots = gem_roots(cx, &dirs);
        let mut trees = Vec::new();
        for d in dirs.iter().chain(gem_roots.iter()) {
            if let Ok(r) = cx.fs.resolve(d, true) {
                cx.claim(&r.path);
                trees.push(r.path);
            }
        }
        let first = !self.seen.contains_key(&e.path);
        self.seen.insert(e.path.clone(), true);
        if first {
            keep_start_up(cx, e, &dirs, &gem_roots, gems)?;
        }
        // Sources under the runtime's trees, read in one pass.
        let mut rb = Vec::new();
        for t in &trees {
            rb.extend(
                cx.fs
                    .subtree(t)
                    .filter(|(k, _)| k.ends_with(".rb"))
                    .map(|(k, _)| k.clone()),
            );
        }
        if rb.len() < 50_000 {
            cx.contents.prefetch(cx.fs, &rb)?;
        }
        let mut roots = Vec::new();
        let start = |spec: &str, quiet: bool| Root {
            req: Req::named(spec.to_string()),
            from: String::new(),
            // RubyGems runs much of itself while it loads (methods called at load time read
            // the default specifications): its lazy requires are followed one hop.
            budget: 1,
            quiet,
        };
        if gems {
            for s in [
                "rubygems",
                "error_highlight",
                "did_you_mean",
                "syntax_suggest",
            ] {
                roots.push(start(s, true));
            }
        }
        for r in requires {
            roots.push(Root {
                budget: 1,
                ..start(&r, false)
            });
        }
        let mut sources = Vec::new();
        if let Some(s) = script {
            sources.extend(super::keep_script(cx, e, "Ruby", &s)?);
        }
        if let Some(c) = code {
            let lang = RubyLang {
                load_path: load_path.clone(),
                gem_roots: gem_roots.clone(),
                trees: trees.clone(),
                argv_files: Vec::new(),
            };
            for req in lang.parse(&c) {
                roots.push(Root {
                    req,
                    from: String::new(),
                    budget: 1,
                    quiet: false,
                });
            }
        }
        let argv_files: Vec<String> = (1..e.argv.len())
            .filter_map(|i| e.arg(i))
            .filter(|a| !a.starts_with('-') && a.len() < 4096)
            .map(|a| abs_in(cx.run.cwd(), a))
            .collect();
        // A Ruby file the program is given (rackup's or unicorn's `config.ru`, a `.rb` it
        // loads): Ruby code it evaluates, its requires followed like the script's.
        for f in argv_files
            .iter()
            .filter(|f| f.ends_with(".ru") || f.ends_with(".rb"))
        {
            let ev = Evidence::new(
                Why::Runtime,
                Some(&e.path),
                "Ruby code the entrypoint gives the program (evaluated: its requires are followed)"
                    .to_string(),
            );
            if let Some(canon) = cx.keep_if_file(f, ev)
                && !sources.contains(&canon)
            {
                sources.push(canon);
            }
        }
        let mut lang = RubyLang {
            load_path,
            gem_roots,
            trees,
            argv_files,
        };
        graph(cx, &mut lang, &e.path, roots, sources)
    }
}

/// A required path: a literal (`'json'`), or one relative to the file
/// (`File.expand_path('x', __dir__)`, `File.join(__dir__, 'x')`, `"#{__dir__}/x"`). The
/// flag says relative.
/// A `%w(…)` word list (over one or more lines) and the `.each do |x|` / `.each { |x|` that
/// iterates it: sets `each` to the block variable and the words for the next lines.
fn word_list(
    t: &str,
    words: &mut Option<Vec<String>>,
    each: &mut Option<(String, Vec<String>, usize)>,
) {
    let mut rest = t;
    if words.is_none()
        && let Some(pos) = t.find("%w(").or_else(|| t.find("%w["))
    {
        *words = Some(Vec::new());
        rest = &t[pos + 3..];
    }
    let Some(list) = words.as_mut() else { return };
    let (inside, after) = match rest.find([')', ']']) {
        Some(end) => (&rest[..end], Some(&rest[end + 1..])),
        None => (rest, None),
    };
    list.extend(inside.split_whitespace().map(str::to_string));
    if list.len() > 200 {
        *words = None;
        return;
    }
    let Some(after) = after else { return };
    let list = words.take().unwrap_or_default();
    for open in [".each do |", ".each { |", ".each do|", ".each {|"] {
        if let Some(p) = after.find(open)
            && let Some(var) = after[p + open.len()..].split('|').next()
            && !var.trim().is_empty()
        {
            *each = Some((var.trim().to_string(), list, 12));
            return;
        }
    }
}

/// A gem's compiled extensions (`ROOT/extensions/PLATFORM/ABI/NAME-VERSION`): RubyGems puts
/// them on the load path when it activates the gem (raindrops' `raindrops_ext.so`).
fn extension_dirs(cx: &Cx, root: &str, gem: &str) -> Vec<String> {
    cx.glob(&format!("{root}/extensions/*/*/{gem}"))
}

/// Quoted strings of a line that look like encoding names (`"Windows-31J"`, `'EUC-JP'`), as
/// the file names of their modules in `enc/` (`windows_31j`): Ruby loads an encoding's module
/// when code names it (`Encoding.find`, `encode`, a table of names read at load time).
fn encoding_names(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in ['"', '\''] {
        let mut parts = line.split(q);
        parts.next();
        while let Some(s) = parts.next() {
            let looks = (3..=24).contains(&s.len())
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && s.contains(['-', '_'])
                && s.chars()
                    .any(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
            if looks {
                out.push(s.to_ascii_lowercase().replace('-', "_"));
            }
            parts.next(); // the text between this string and the next
        }
    }
    out
}

/// The constants a Ruby source uses (`Rack::Builder`, `Deflater.new`): capitalized names
/// outside comments and string literals (interpolations are code), not a symbol (`:Cookie`),
/// not the name a `class`/`module` line defines, nothing on an `autoload` line.
pub(crate) fn constants_used(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block_comment = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("=begin") {
            block_comment = true;
        }
        if block_comment {
            block_comment = !t.starts_with("=end");
            continue;
        }
        if t.starts_with('#') || t.starts_with("autoload") || t.contains(" autoload ") {
            continue;
        }
        let code = ruby_code(t);
        let mut defines = matches!(code.split_whitespace().next(), Some("class" | "module"));
        let b = code.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_alphabetic() || b[i] == b'_' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let symbol =
                    start > 0 && b[start - 1] == b':' && (start < 2 || b[start - 2] != b':');
                let sigil = start > 0 && matches!(b[start - 1], b'@' | b'$' | b'.');
                if b[start].is_ascii_uppercase() && !symbol && !(sigil && b[start - 1] != b'.') {
                    if defines {
                        // `class A::B < C`: A and B are defined (or reopened), C is used.
                        if !matches!(b.get(i), Some(b':')) {
                            defines = false;
                        }
                    } else {
                        out.push(code[start..i].to_string());
                    }
                } else if defines && !matches!(&code[start..i], "class" | "module") {
                    defines = false;
                }
            } else {
                i += 1;
            }
        }
    }
    out
}

/// A line of Ruby without its comment and the text of its string literals (the code of
/// `#{…}` interpolations stays).
fn ruby_code(line: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut interp = 0usize;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None => match c {
                '#' => break,
                '"' | '\'' | '`' => quote = Some(c),
                _ => out.push(c),
            },
            Some(q) if interp == 0 => match c {
                '\\' => {
                    chars.next();
                }
                '#' if q != '\'' && chars.peek() == Some(&'{') => {
                    chars.next();
                    interp = 1;
                    out.push(' ');
                }
                _ if c == q => quote = None,
                _ => {}
            },
            Some(_) => {
                match c {
                    '{' => interp += 1,
                    '}' => interp -= 1,
                    _ => {}
                }
                out.push(if interp == 0 { ' ' } else { c });
            }
        }
    }
    out
}

/// The first quoted string of `s`, interpolations and all (`"unicorn/#{s}"`).
fn interpolated(s: &str) -> Option<String> {
    let s = s.trim_start().trim_start_matches('(').trim_start();
    let rest = s.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string()).filter(|v| v.contains("#{"))
}

fn ruby_path(arg: &str) -> Option<(String, bool)> {
    let a = arg.trim_start().trim_start_matches('(').trim_start();
    if let Some(v) = quoted(a) {
        return Some((v, false));
    }
    if !a.contains("__dir__") && !a.contains("__FILE__") {
        return None;
    }
    if let Some(rest) = a.strip_prefix("File.expand_path(") {
        let v = quoted(rest)?;
        return Some((v.trim_start_matches("./").to_string(), true));
    }
    if let Some(rest) = a.strip_prefix("File.join(__dir__,") {
        return quoted(rest).map(|v| (v, true));
    }
    for q in ['"', '\''] {
        if let Some(rest) = a.strip_prefix(&format!("{q}#{{__dir__}}/"))
            && let Some(end) = rest.find(q)
            && !rest[..end].contains("#{")
        {
            return Some((rest[..end].to_string(), true));
        }
    }
    None
}

fn is_file(cx: &Cx, p: &str) -> bool {
    cx.fs
        .resolve(p, true)
        .is_ok_and(|r| matches!(cx.fs.get(&r.path).map(|n| &n.kind), Some(Kind::File { .. })))
}

impl RubyLang {
    /// The Ruby files a C extension requires by name (`rb_require("psych/syntax_error")`):
    /// the words of its data that name files of the load path by a relative path.
    fn extension_requires(&self, cx: &mut Cx, so: &str) -> Result<Vec<String>> {
        let Some((canon, _)) = cx.resolve_file(so)? else {
            return Ok(Vec::new());
        };
        cx.contents.prefetch(cx.fs, std::slice::from_ref(&canon))?;
        let Ok(Some(facts)) = cx.elf(&canon) else {
            return Ok(Vec::new());
        };
        if !["rb_require", "rb_require_string"]
            .iter()
            .any(|s| facts.import(s).is_some())
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // A path within a library (`psych/syntax_error`): a bare word is too weak.
        for w in facts.words.iter().filter(|w| {
            w.contains('/')
                && !w.ends_with('/')
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
                && w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        }) {
            for d in &self.load_path {
                let c = join(d, &format!("{w}.rb"));
                if is_file(cx, &c) {
                    out.push(c);
                    break;
                }
            }
            if out.len() >= 256 {
                break;
            }
        }
        Ok(out)
    }
}

/// The sources of the gem whose executable runs (the application): it loads its own files by
/// computed paths too (`Kernel::load File.join(LIB_DIR, "rouge/#{path}.rb")`), so each file's
/// requires are followed (top-level ones, as for any third-party code); at most 4,000 files.
/// (A gem reached by `require` is a library: what its required files require is enough.)
fn gem_sources(cx: &Cx, gem_dir: &str) -> Vec<String> {
    let Ok(r) = cx.fs.resolve(&join(gem_dir, "lib"), true) else {
        return Vec::new();
    };
    cx.fs
        .subtree(&r.path)
        .filter(|(k, n)| k.ends_with(".rb") && !n.is_dir())
        .map(|(k, _)| display(k))
        .take(4000)
        .collect()
}

impl Lang for RubyLang {
    fn name(&self) -> &'static str {
        "Ruby"
    }

    fn parse(&self, text: &str) -> Vec<Req> {
        let nested = nested_by_indent(
            text,
            |t| t.starts_with("def ") || t == "def",
            |t| t == "end" || t.starts_with("end ") || t.starts_with("end#"),
        );
        let mut out = Vec::new();
        let mut in_doc = false;
        let mut assigned: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        // `%w(a b c).each do |s|` … `require_relative "x/#{s}"`: the block variable's values
        // (the words, the lines left in which the block is looked for).
        let mut words: Option<Vec<String>> = None;
        let mut each: Option<(String, Vec<String>, usize)> = None;
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            each = each
                .filter(|(_, _, left)| *left > 0)
                .map(|(v, w, l)| (v, w, l - 1));
            word_list(t, &mut words, &mut each);
            if t.starts_with("=begin") {
                in_doc = true;
            }
            if in_doc {
                if t.starts_with("=end") {
                    in_doc = false;
                }
                continue;
            }
            if t.starts_with("__END__") {
                break;
            }
            if t.starts_with('#') {
                continue;
            }
            // Statements may follow `;` or a modifier; take every require on the line.
            for (kw, relative) in [
                ("require_relative", true),
                ("require", false),
                ("load", false),
            ] {
                let glued = |c: char| c.is_alphanumeric() || c == '_' || c == '.' || c == ':';
                for after in super::after_keyword(t, kw, glued) {
                    if after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let nest = nested.get(n).copied().unwrap_or(false);
                    if let Some((var, values, _)) = &each
                        && let Some(raw) = interpolated(after)
                        && raw.contains(&format!("#{{{var}}}"))
                    {
                        for v in values {
                            out.push(Req {
                                spec: raw.replace(&format!("#{{{var}}}"), v),
                                line: n + 1,
                                nested: nest,
                                relative,
                                waits_for: None,
                            });
                        }
                    } else if let Some((spec, rel)) = ruby_path(after) {
                        out.push(Req {
                            spec,
                            line: n + 1,
                            nested: nest,
                            relative: relative || rel,
                            waits_for: None,
                        });
                    } else if let Some(var) = after
                        .trim_start()
                        .trim_start_matches('(')
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .filter(|v| {
                            !v.is_empty()
                                && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        })
                    {
                        // `require lib` where `lib = 'x'` earlier in the file: each literal.
                        for spec in assigned.get(var).into_iter().flatten() {
                            out.push(Req {
                                spec: spec.clone(),
                                line: n + 1,
                                nested: nest,
                                relative,
                                waits_for: None,
                            });
                        }
                    }
                }
            }
            // A RubyGems binstub: `load Gem.activate_bin_path('asciidoctor', 'asciidoctor', v)`
            // (or `Gem.bin_path("gem", "exe", v)`) runs the gem's executable.
            for call in ["activate_bin_path(", "bin_path("] {
                if let Some(pos) = t.find(call) {
                    let args: Vec<String> = t[pos + call.len()..]
                        .split(',')
                        .take(2)
                        .filter_map(quoted)
                        .collect();
                    if let [gem, exe] = args.as_slice() {
                        out.push(Req {
                            spec: format!("\0bin/{gem}/{exe}"),
                            line: n + 1,
                            nested: false,
                            relative: false,
                            waits_for: None,
                        });
                    }
                    break;
                }
            }
            // `autoload :Const, "file"`: loaded when the constant is first used.
            if let Some(pos) = t.find("autoload")
                && let Some((head, arg)) = t[pos..].split_once(',')
                && let Some((spec, rel)) = ruby_path(arg)
            {
                let name = head
                    .rsplit(':')
                    .next()
                    .map(|c| c.trim().trim_matches(['"', '\'', ')']))
                    .filter(|c| c.starts_with(|x: char| x.is_ascii_uppercase()))
                    .map(str::to_string);
                out.push(Req {
                    spec,
                    line: n + 1,
                    nested: true,
                    relative: rel,
                    waits_for: name,
                });
            }
            for name in encoding_names(t) {
                out.push(Req {
                    spec: format!("\0enc/{name}"),
                    line: n + 1,
                    nested: false,
                    relative: false,
                    waits_for: None,
                });
            }
            // `name = 'literal'`: remembered for a later `require name`.
            if let Some((lhs, rhs)) = t.split_once(" = ")
                && lhs.chars().all(|c| c.is_alphanumeric() || c == '_')
                && let Some(v) = quoted(rhs)
                && rhs.trim_end().len() == v.len() + 2
            {
                assigned.entry(lhs.to_string()).or_default().push(v);
            }
        }
        out
    }

    fn uses(&self, text: &str) -> Vec<String> {
        constants_used(text)
    }

    fn used_at_start(&self, cx: &mut Cx) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for f in &self.argv_files {
            if let Ok(Some((canon, _))) = cx.resolve_file(f)
                && let Ok(Some(text)) = cx.text(&canon)
            {
                out.extend(constants_used(&text));
            }
        }
        Ok(out)
    }

    fn resolve(&mut self, cx: &mut Cx, req: &Req, from: &str) -> Result<Option<Vec<String>>> {
        let spec = req.spec.as_str();
        let cands = |base: &str| -> Vec<String> {
            if spec.ends_with(".rb") || spec.ends_with(".so") {
                vec![join(base, spec)]
            } else {
                vec![
                    join(base, &format!("{spec}.rb")),
                    join(base, &format!("{spec}.so")),
                ]
            }
        };
        if let Some(name) = spec.strip_prefix("\0enc/") {
            // An encoding named in a source: its module in `enc/` of the library dirs, else
            // nothing to keep (a built-in encoding, or a string that names none).
            let file = format!("enc/{name}.so");
            let found = self
                .load_path
                .iter()
                .map(|d| join(d, &file))
                .find(|c| is_file(cx, c));
            return Ok(Some(found.into_iter().collect()));
        }
        if let Some(rest) = spec.strip_prefix("\0bin/")
            && let Some((gem, exe)) = rest.split_once('/')
        {
            // The gem's executable, in any gem root (bindir `bin`, the RubyGems default).
            for g in self.gem_roots.clone() {
                let found = cx.glob(&format!("{g}/gems/{gem}-*/bin/{exe}"));
                if let Some(f) = found.into_iter().next_back() {
                    let gem_dir = f.rsplitn(3, '/').nth(2).unwrap_or("").to_string();
                    if let Ok(gr) = cx.fs.resolve(&gem_dir, true) {
                        let ev = Evidence::new(
                            Why::Runtime,
                            Some(from),
                            format!("the gem {gem}, whose executable {exe} a binstub runs"),
                        );
                        cx.keep_tree(&gr.path, &ev);
                        self.load_path.push(format!("{gem_dir}/lib"));
                        let name = gem_dir.rsplit('/').next().unwrap_or("").to_string();
                        self.load_path.extend(extension_dirs(cx, &g, &name));
                    }
                    let mut files = vec![f];
                    files.extend(gem_sources(cx, &gem_dir));
                    return Ok(Some(files));
                }
            }
            return Ok(None);
        }
        if req.relative {
            let dir = display(from.rsplit_once('/').map_or("", |(d, _)| d));
            return Ok(cands(&dir)
                .into_iter()
                .find(|c| is_file(cx, c))
                .map(|c| vec![c]));
        }
        if spec.starts_with('/') {
            return Ok(cands("/")
                .into_iter()
                .find(|c| is_file(cx, &c[1..]))
                .map(|c| vec![c]));
        }
        for d in self.load_path.clone() {
            if let Some(c) = cands(&d).into_iter().find(|c| is_file(cx, c)) {
                let mut files = vec![c.clone()];
                if c.ends_with(".so") {
                    files.extend(self.extension_requires(cx, &c)?);
                }
                return Ok(Some(files));
            }
        }
        // A gem: ROOT/gems/NAME-VERSION/lib/SPEC.rb; the gem is kept whole with its spec.
        for g in self.gem_roots.clone() {
            let Ok(r) = cx.fs.resolve(&join(&g, "gems"), true) else {
                continue;
            };
            let gems: Vec<String> = cx
                .fs
                .subtree(&r.path)
                .filter(|(k, n)| n.is_dir() && k[r.path.len() + 1..].find('/').is_none())
                .map(|(k, _)| display(k))
                .collect();
            for gem in gems {
                let lib = join(&gem, "lib");
                if let Some(c) = cands(&lib).into_iter().find(|c| is_file(cx, c)) {
                    let name = gem.rsplit('/').next().unwrap_or("").to_string();
                    let ev = Evidence::new(
                        Why::Runtime,
                        Some(&c),
                        format!("the gem {name}, for require '{spec}'"),
                    );
                    if let Ok(gr) = cx.fs.resolve(&gem, true) {
                        cx.keep_tree(&gr.path, &ev);
                    }
                    cx.keep_if_file(&format!("{g}/specifications/{name}.gemspec"), ev);
                    self.load_path.push(lib);
                    self.load_path.extend(extension_dirs(cx, &g, &name));
                    return Ok(Some(vec![c]));
                }
            }
        }
        // Extensions and libraries built into the interpreter.
        if matches!(
            spec,
            "enumerator" | "thread" | "rational" | "complex" | "fiber" | "ruby2_keywords" | "set"
        ) {
            return Ok(Some(vec![]));
        }
        Ok(None)
    }

    fn third_party(&self, cx: &Cx, file: &str) -> bool {
        let p = cx.canonical(file);
        // RubyGems (Debian ships it in vendor_ruby) is the runtime's own start-up library.
        (p.contains("/vendor_ruby/") || p.contains("/site_ruby/") || p.contains("/gems/"))
            && !p.contains("/vendor_ruby/rubygems")
    }

    fn in_runtime(&self, cx: &Cx, file: &str) -> bool {
        let p = cx.canonical(file);
        self.trees.iter().any(|t| under(&p, t))
    }

    fn is_source(&self, file: &str) -> bool {
        // A gem's executable (`gems/NAME-VERSION/bin/EXE`) is Ruby without an extension.
        file.ends_with(".rb")
            || file
                .rsplit_once('/')
                .is_some_and(|(d, _)| d.ends_with("/bin") && d.contains("/gems/"))
    }
}

#[cfg(test)]
mod tests;
