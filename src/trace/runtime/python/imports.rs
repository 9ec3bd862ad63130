//! Reading Python source: a tokenizer, the import statements (with the function that runs
//! each, `try`/`except ImportError` ladders and main blocks), the names a source reaches in
//! other modules and the functions of its own that run.

use super::*;

/// One import statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PyImport {
    /// The module (leading dots for relative imports).
    pub module: String,
    /// Names of `from … import a, b` (`*` for a star import).
    pub names: Vec<String>,
    pub line: usize,
    /// `importlib.import_module(x)` with a computed argument: `module` is the literal prefix.
    pub computed: bool,
    /// Inside a function body: runs only when the function is called.
    pub nested: bool,
    /// Inside `if __name__ == "__main__":`: runs only when the file is the script.
    pub main_only: bool,
    /// In the `except ImportError:` branch of `try:` statements whose bodies import these
    /// modules (one list per enclosing `try:`, innermost first, nested ladders too): runs only
    /// when, for each, one of them cannot be imported.
    pub fallback_of: Vec<Vec<String>>,
    /// The function whose call runs it (the innermost `def` around a nested import), unless
    /// it is called implicitly (a dunder method, a decorated function): `None` then.
    pub called_by: Option<String>,
}

impl PyImport {
    /// An import of nothing yet at `line`, in its context (a function's, a main block's).
    fn at(line: usize, nested: bool, main_only: bool, called_by: Option<String>) -> PyImport {
        PyImport {
            module: String::new(),
            names: Vec::new(),
            line,
            computed: false,
            nested,
            main_only,
            fallback_of: Vec::new(),
            called_by,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum PyTok {
    Name(String),
    Str(String, bool),
    Op(char),
    Newline,
    /// The indentation of the logical line that starts here.
    Indent(usize),
}

/// Tokens of Python source: names, string literals (f-strings flagged), operators, logical
/// line ends; comments and numbers dropped.
pub(super) fn tokenize(src: &str) -> Vec<(PyTok, usize)> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut depth = 0usize;
    let mut line_start = true;
    while i < s.len() {
        let c = s[i];
        if line_start && depth == 0 {
            let mut w = 0;
            while i < s.len() && matches!(s[i], ' ' | '\t') {
                w += if s[i] == '\t' { 8 - w % 8 } else { 1 };
                i += 1;
            }
            line_start = false;
            if i < s.len() && !matches!(s[i], '\n' | '#' | '\r') {
                out.push((PyTok::Indent(w), line));
            }
            continue;
        }
        match c {
            '#' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '\\' if s.get(i + 1) == Some(&'\n') => {
                i += 2;
                line += 1;
            }
            '\n' => {
                if depth == 0 {
                    out.push((PyTok::Newline, line));
                    line_start = true;
                }
                line += 1;
                i += 1;
            }
            '\'' | '"' => {
                let (text, ni, nl) = string_at(&s, i);
                out.push((PyTok::Str(text, false), line));
                line += nl;
                i = ni;
            }
            c if c == '_' || c.is_alphabetic() => {
                let start = i;
                while i < s.len() && (s[i] == '_' || s[i].is_alphanumeric()) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                if i < s.len()
                    && (s[i] == '\'' || s[i] == '"')
                    && matches!(
                        lower.as_str(),
                        "r" | "b" | "u" | "f" | "rb" | "br" | "fr" | "rf"
                    )
                {
                    let (text, ni, nl) = string_at(&s, i);
                    out.push((PyTok::Str(text, lower.contains('f')), line));
                    line += nl;
                    i = ni;
                } else {
                    out.push((PyTok::Name(word), line));
                }
            }
            c if c.is_ascii_digit() => {
                while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_' || s[i] == '.') {
                    i += 1;
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                out.push((PyTok::Op(c), line));
                i += 1;
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                out.push((PyTok::Op(c), line));
                i += 1;
            }
            ' ' | '\t' | '\r' | '\x0c' => i += 1,
            _ => {
                out.push((PyTok::Op(c), line));
                i += 1;
            }
        }
    }
    out.push((PyTok::Newline, line));
    out
}

/// A string literal starting at `i` (a quote): its text, the index after it, newlines in it.
pub(super) fn string_at(s: &[char], i: usize) -> (String, usize, usize) {
    let q = s[i];
    let triple = s.get(i + 1) == Some(&q) && s.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    let mut text = String::new();
    let mut nl = 0;
    while j < s.len() {
        if s[j] == '\\' {
            if s.get(j + 1) == Some(&'\n') {
                nl += 1;
            }
            j += 2;
            continue;
        }
        if s[j] == '\n' {
            nl += 1;
            if !triple {
                break;
            }
        }
        if s[j] == q && (!triple || (s.get(j + 1) == Some(&q) && s.get(j + 2) == Some(&q))) {
            j += if triple { 3 } else { 1 };
            return (text, j, nl);
        }
        text.push(s[j]);
        j += 1;
    }
    (text, j, nl)
}

/// The imports of Python source: `import a.b as c, d`, `from .x import (y, z)`,
/// `from a import *`, and `importlib.import_module("x")` / `__import__("x")` with literal (or
/// literal-prefixed) arguments, anywhere in the file (functions, `try` blocks).
/// A `try:` statement: its indentation, the modules its body imports, and which part of it is
/// being read.
pub(super) struct Try {
    pub(super) indent: usize,
    pub(super) body: Vec<String>,
    pub(super) part: TryPart,
}

#[derive(PartialEq)]
pub(super) enum TryPart {
    Body,
    /// `except ImportError:` / `except (ImportError, …):` / `except ModuleNotFoundError:`.
    ExceptImport,
    Other,
}

/// A logical line at indentation `w` starting with `toks`: opens, continues or closes the
/// `try:` statements around it.
pub(super) fn enter_line(toks: &[(PyTok, usize)], w: usize, tries: &mut Vec<Try>) {
    let first = match toks.first().map(|t| &t.0) {
        Some(PyTok::Name(n)) => n.as_str(),
        _ => "",
    };
    let same = tries.last().is_some_and(|t| t.indent == w);
    match first {
        "except" if same => {
            let line = toks.iter().take_while(|t| !matches!(t.0, PyTok::Newline));
            let import_error = line.into_iter().any(|t| {
                matches!(&t.0, PyTok::Name(n) if n == "ImportError" || n == "ModuleNotFoundError")
            });
            if let Some(t) = tries.last_mut() {
                t.part = if import_error {
                    TryPart::ExceptImport
                } else {
                    TryPart::Other
                };
            }
        }
        "else" | "finally" if same => {
            if let Some(t) = tries.last_mut() {
                t.part = TryPart::Other;
            }
        }
        _ => {
            while tries.last().is_some_and(|t| t.indent >= w) {
                tries.pop();
            }
            if first == "try" && matches!(toks.get(1).map(|t| &t.0), Some(PyTok::Op(':'))) {
                tries.push(Try {
                    indent: w,
                    body: Vec::new(),
                    part: TryPart::Body,
                });
            }
        }
    }
}

/// An import of `module` on a line at indentation `indent`: recorded in the body of the
/// innermost `try:` around it when it is in that body; and, for each enclosing
/// `except ImportError:` branch (a ladder `try: a / except ImportError: try: b / except
/// ImportError: c`), the modules it is a fallback for.
pub(super) fn try_body(tries: &mut [Try], indent: usize, module: &str) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    let mut innermost = true;
    for t in tries.iter_mut().rev().filter(|t| t.indent < indent) {
        match t.part {
            TryPart::Body if innermost => t.body.push(module.to_string()),
            TryPart::ExceptImport if !t.body.is_empty() => groups.push(t.body.clone()),
            _ => {}
        }
        innermost = false;
    }
    groups
}

/// The names a source uses that other modules can reach (attributes as in `ctx.Manager()`,
/// the names of its `from … import a, b`, string literals that are one identifier as in
/// `getattr(x, "name")`), and its short string literals.
fn used_names(toks: &[(PyTok, usize)]) -> Names {
    let mut reach = HashSet::new();
    let mut strings = Vec::new();
    let mut from_line = (false, false);
    // After `from x import *`, a bare name the file does not define may be one of x's.
    let (mut star, mut bare, mut defined) = (false, HashSet::new(), HashSet::new());
    for (k, (t, _)) in toks.iter().enumerate() {
        let prev = k.checked_sub(1).map(|p| &toks[p].0);
        if from_line.1 && matches!(t, PyTok::Op('*')) {
            star = true;
        }
        if let PyTok::Str(v, false) = t
            && !v.is_empty()
            && v.len() <= pycodecs::MAX_NAME
        {
            strings.push((v.clone(), toks[k].1));
        }
        match t {
            PyTok::Name(n) => {
                if n == "from" && matches!(prev, None | Some(PyTok::Indent(_))) {
                    from_line = (true, false);
                } else if from_line.0 && n == "import" {
                    from_line.1 = true;
                } else if matches!(prev, Some(PyTok::Op('.'))) || from_line.1 {
                    reach.insert(n.clone());
                } else if matches!(prev, Some(PyTok::Name(d)) if d == "def" || d == "class") {
                    defined.insert(n.clone());
                } else {
                    bare.insert(n.clone());
                }
            }
            PyTok::Str(v, _)
                if !v.is_empty()
                    && v.len() < 64
                    && v.chars().all(|c| c == '_' || c.is_alphanumeric()) =>
            {
                reach.insert(v.clone());
            }
            PyTok::Newline => from_line = (false, false),
            _ => {}
        }
    }
    if star {
        reach.extend(bare.difference(&defined).cloned());
    }
    Names { reach, strings }
}

/// What [`used_names`] finds in a source.
pub(crate) struct Names {
    /// Names other modules can reach: attributes, names imported from others, identifier
    /// strings.
    pub reach: HashSet<String>,
    /// Its short string literals (not f-strings), with their lines: codec names among them.
    pub strings: Vec<(String, usize)>,
}

pub(crate) fn imports(src: &str) -> Vec<PyImport> {
    parse(src).0
}

/// A source's own names used in each of its functions (`""`: at module level and in
/// functions called implicitly; `"\0main"`: in its `if __name__ == "__main__":` block).
pub(crate) type Calls = HashMap<String, HashSet<String>>;

/// The functions of a source that run: those its module level (or an implicitly called
/// function) uses, those `reached` names (used by other modules), and what they use in turn.
pub(crate) fn live(calls: &Calls, reached: &HashSet<String>) -> HashSet<String> {
    let mut out: HashSet<String> = HashSet::new();
    let mut todo: Vec<&String> = calls.get("").into_iter().flatten().collect();
    todo.extend(calls.keys().filter(|k| reached.contains(*k)));
    while let Some(f) = todo.pop() {
        if out.insert(f.clone())
            && let Some(used) = calls.get(f)
        {
            todo.extend(used.iter());
        }
    }
    out
}

/// The names of `from M import …` from token `k` to the end of the statement (`*` for a star
/// import; `as` aliases skipped), `k` left at its end.
fn from_names(toks: &[(PyTok, usize)], k: &mut usize) -> Vec<String> {
    let mut names = Vec::new();
    while *k < toks.len() {
        match &toks[*k].0 {
            PyTok::Newline | PyTok::Op(';') => break,
            PyTok::Name(a) if a == "as" => *k += 1,
            PyTok::Name(a) => names.push(a.clone()),
            PyTok::Op('*') => names.push("*".into()),
            _ => {}
        }
        *k += 1;
    }
    names
}

/// Whether a logical line is `if __name__ == "__main__":`.
fn is_main_guard(line_toks: &[(PyTok, usize)]) -> bool {
    matches!(line_toks.first().map(|t| &t.0), Some(PyTok::Name(d)) if d == "if")
        && line_toks
            .iter()
            .any(|t| matches!(&t.0, PyTok::Name(n) if n == "__name__"))
        && line_toks
            .iter()
            .any(|t| matches!(&t.0, PyTok::Str(v, _) if v == "__main__"))
}

/// A `def` (or a main block, `implicit`) entered at indentation `w`, its keyword at token `k`:
/// pushed on `defs` with the function's name, unless it is called implicitly: a dunder method
/// (`__getattr__`, `__init__`), a decorated function (registered, a property), the main block.
/// Whether the body shares the line (else it is on the following lines).
fn enter_def(
    toks: &[(PyTok, usize)],
    k: usize,
    w: usize,
    implicit: bool,
    defs: &mut Vec<(usize, Option<String>)>,
) -> bool {
    let name = match toks.get(k + 1).map(|t| &t.0) {
        Some(PyTok::Name(n)) if !(implicit || n.starts_with("__") && n.ends_with("__")) => {
            Some(n.clone())
        }
        _ => None,
    };
    defs.push((w, name));
    let mut j = k;
    while j < toks.len() && !matches!(toks[j].0, PyTok::Newline) {
        j += 1;
    }
    // `def f():` then a body below.
    !matches!(
        toks.get(j.saturating_sub(1)).map(|t| &t.0),
        Some(PyTok::Op(':'))
    )
}

/// Whether the call at token `i` takes one plain string literal first (`f("a.b")`,
/// `f("a.b", pkg)`).
fn literal_call(toks: &[(PyTok, usize)], i: usize) -> bool {
    matches!(toks.get(i + 1).map(|t| &t.0), Some(PyTok::Op('(')))
        && matches!(toks.get(i + 2).map(|t| &t.0), Some(PyTok::Str(_, false)))
        && matches!(
            toks.get(i + 3).map(|t| &t.0),
            Some(PyTok::Op(')') | PyTok::Op(','))
        )
}

/// `import_module(…)` or `__import__(…)` at token `i`: the module its string names, the
/// literal prefix of a computed one, or an unknown computed module.
fn import_call(
    toks: &[(PyTok, usize)],
    i: usize,
    line: usize,
    nested: bool,
    main_only: bool,
    called_by: &Option<String>,
    out: &mut Vec<PyImport>,
) {
    if matches!(toks.get(i + 1).map(|t| &t.0), Some(PyTok::Op('('))) {
        match toks.get(i + 2).map(|t| &t.0) {
            Some(PyTok::Str(s, fstr)) => {
                let follow_plus = matches!(
                    toks.get(i + 3).map(|t| &t.0),
                    Some(PyTok::Op('+') | PyTok::Op('%'))
                );
                let (lit, computed) = if *fstr {
                    (
                        s.split('{').next().unwrap_or("").to_string(),
                        s.contains('{'),
                    )
                } else {
                    (s.clone(), follow_plus)
                };
                let lit = if computed {
                    lit.trim_end_matches('.').to_string()
                } else {
                    lit
                };
                if computed
                    || lit
                        .chars()
                        .all(|c| c == '_' || c == '.' || c.is_alphanumeric())
                {
                    out.push(PyImport {
                        module: lit,
                        computed,
                        ..PyImport::at(line, nested, main_only, called_by.clone())
                    });
                }
            }
            Some(_) => out.push(PyImport {
                computed: true,
                ..PyImport::at(line, nested, main_only, called_by.clone())
            }),
            None => {}
        }
    }
}

/// The imports of a source, the names its functions use ([`Calls`]) and the names it
/// reaches in other modules ([`Names`]), from one pass of the tokenizer.
pub(crate) fn parse(src: &str) -> (Vec<PyImport>, Calls, Names) {
    let toks = tokenize(src);
    let names = used_names(&toks);
    let mut out = Vec::new();
    let mut calls: Calls = HashMap::new();
    let mut i = 0;
    // Indentation of the `def` statements we are inside; whether the current logical line
    // is itself a `def` (a one-line body).
    // With each `def`, the name of the function (None: called implicitly).
    let mut defs: Vec<(usize, Option<String>)> = Vec::new();
    let mut line_is_def = false;
    // Whether the previous logical line was a decorator (`@x`).
    let mut decorator = false;
    // Indentation of the `if __name__ == "__main__":` blocks we are inside, of the current
    // logical line, and the `try:` statements open around it.
    let mut guards: Vec<usize> = Vec::new();
    let mut cur_indent = 0usize;
    let mut tries: Vec<Try> = Vec::new();
    let at_start = |k: usize| -> bool {
        k == 0
            || matches!(
                toks[k - 1].0,
                PyTok::Newline | PyTok::Indent(_) | PyTok::Op(';') | PyTok::Op(':')
            )
    };
    let dotted = |k: &mut usize| -> String {
        let mut name = String::new();
        while *k < toks.len() {
            match &toks[*k].0 {
                PyTok::Op('.') => name.push('.'),
                PyTok::Name(n) if n != "import" && (name.is_empty() || name.ends_with('.')) => {
                    name.push_str(n)
                }
                _ => break,
            }
            *k += 1;
        }
        name
    };
    while i < toks.len() {
        let line = toks[i].1;
        let nested = line_is_def || !defs.is_empty();
        let called_by = defs.last().and_then(|d| d.1.clone());
        if let PyTok::Name(n) = &toks[i].0
            && !matches!(i.checked_sub(1).map(|p| &toks[p].0), Some(PyTok::Op('.')))
            && !matches!(i.checked_sub(1).map(|p| &toks[p].0), Some(PyTok::Name(d)) if d == "def" || d == "class")
        {
            let scope = if !guards.is_empty() {
                "\0main".to_string()
            } else {
                called_by.clone().unwrap_or_default()
            };
            calls.entry(scope).or_default().insert(n.clone());
        }
        match &toks[i].0 {
            PyTok::Indent(w) => {
                while defs.last().is_some_and(|d| d.0 >= *w) {
                    defs.pop();
                }
                while guards.last().is_some_and(|d| d >= w) {
                    guards.pop();
                }
                cur_indent = *w;
                enter_line(&toks[i + 1..], *w, &mut tries);
                let k = if matches!(&toks.get(i + 1).map(|t| &t.0), Some(PyTok::Name(a)) if a == "async")
                {
                    i + 2
                } else {
                    i + 1
                };
                // A function body, or an `if __name__ == "__main__":` block (it runs only
                // when the module is the script), is entered lazily.
                let mut end = k;
                while end < toks.len() && !matches!(toks[end].0, PyTok::Newline) {
                    end += 1;
                }
                let line_toks = &toks[k..end];
                let main_guard = is_main_guard(line_toks);
                line_is_def = main_guard
                    || matches!(&toks.get(k).map(|t| &t.0), Some(PyTok::Name(d)) if d == "def");
                if main_guard {
                    guards.push(*w);
                }
                if line_is_def {
                    line_is_def = enter_def(&toks, k, *w, main_guard || decorator, &mut defs);
                }
                decorator = matches!(line_toks.first().map(|t| &t.0), Some(PyTok::Op('@')));
                i += 1;
            }
            PyTok::Newline => {
                line_is_def = false;
                i += 1;
            }
            PyTok::Name(n) if n == "import" && at_start(i) => {
                let mut k = i + 1;
                loop {
                    let m = dotted(&mut k);
                    if !m.is_empty() {
                        let fallback_of = try_body(&mut tries, cur_indent, &m);
                        out.push(PyImport {
                            module: m,
                            fallback_of,
                            ..PyImport::at(line, nested, !guards.is_empty(), called_by.clone())
                        });
                    }
                    if matches!(&toks.get(k).map(|t| &t.0), Some(PyTok::Name(a)) if a == "as") {
                        k += 2;
                    }
                    if matches!(toks.get(k).map(|t| &t.0), Some(PyTok::Op(','))) {
                        k += 1;
                        continue;
                    }
                    break;
                }
                i = k;
            }
            PyTok::Name(n) if n == "from" && at_start(i) => {
                let mut k = i + 1;
                let m = dotted(&mut k);
                if !matches!(&toks.get(k).map(|t| &t.0), Some(PyTok::Name(a)) if a == "import") {
                    i = k.max(i + 1);
                    continue;
                }
                k += 1;
                let names = from_names(&toks, &mut k);
                let fallback_of = try_body(&mut tries, cur_indent, &m);
                out.push(PyImport {
                    module: m,
                    names,
                    fallback_of,
                    ..PyImport::at(line, nested, !guards.is_empty(), called_by.clone())
                });
                i = k;
            }
            // `importlib.util.find_spec("html.parser")`: a module located to be loaded
            // (`module_from_spec`, `exec_module`); only a literal name counts (a computed one
            // is how code probes for whatever it is asked about).
            PyTok::Name(n)
                if n == "import_module"
                    || n == "__import__"
                    || (n == "find_spec" && literal_call(&toks, i)) =>
            {
                import_call(
                    &toks,
                    i,
                    line,
                    nested,
                    !guards.is_empty(),
                    &called_by,
                    &mut out,
                );
                i += 1;
            }
            _ => i += 1,
        }
    }
    (out, calls, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_and_main_blocks_are_marked() {
        let src = "try:\n    from _sha512 import sha512\n    import _fast\nexcept (ImportError, AttributeError):\n    from hashlib import sha512\nelse:\n    import after\ntry:\n    import a\nexcept ValueError:\n    import b\nimport c\nif __name__ == '__main__':\n    import doctest\nimport d\n";
        let got = imports(src);
        let modules: Vec<&str> = got.iter().map(|i| i.module.as_str()).collect();
        assert_eq!(
            modules,
            [
                "_sha512", "_fast", "hashlib", "after", "a", "b", "c", "doctest", "d"
            ]
        );
        let main_only: Vec<&str> = got
            .iter()
            .filter(|i| i.main_only)
            .map(|i| i.module.as_str())
            .collect();
        assert_eq!(main_only, ["doctest"]);
        let fallbacks: Vec<(&str, &[Vec<String>])> = got
            .iter()
            .filter(|i| !i.fallback_of.is_empty())
            .map(|i| (i.module.as_str(), i.fallback_of.as_slice()))
            .collect();
        let first_try = vec!["_sha512".to_string(), "_fast".to_string()];
        assert_eq!(fallbacks, [("hashlib", std::slice::from_ref(&first_try))]);
    }

    #[test]
    fn a_ladder_of_fallbacks_is_a_fallback_of_every_rung_above() {
        // A console script of setuptools: importlib.metadata, else importlib_metadata, else
        // pkg_resources. Both lower rungs depend on the first.
        let src = "try:\n    from importlib.metadata import distribution\nexcept ImportError:\n    try:\n        from importlib_metadata import distribution\n    except ImportError:\n        from pkg_resources import load_entry_point\n";
        let got: Vec<(String, Vec<Vec<String>>)> = imports(src)
            .into_iter()
            .map(|i| (i.module, i.fallback_of))
            .collect();
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("importlib.metadata".to_string(), vec![]),
                (
                    "importlib_metadata".to_string(),
                    vec![v(&["importlib.metadata"])]
                ),
                (
                    "pkg_resources".to_string(),
                    vec![v(&["importlib_metadata"]), v(&["importlib.metadata"])]
                ),
            ]
        );
    }

    #[test]
    fn a_nested_import_names_the_function_that_runs_it() {
        let src = "import top\nclass C:\n    def Manager(self):\n        from .managers import SyncManager\n    def __getattr__(self, n):\n        import lazy\n    @property\n    def prop(self):\n        import viaprop\n    def outer(self):\n        def inner():\n            import deep\n        return inner\ndef one(): import oneline\nif __name__ == '__main__':\n    import doctest\n";
        let got: Vec<(String, bool, Option<String>)> = imports(src)
            .into_iter()
            .map(|i| (i.module, i.nested, i.called_by))
            .collect();
        let some = |x: &str| Some(x.to_string());
        assert_eq!(
            got,
            vec![
                ("top".into(), false, None),
                (".managers".into(), true, some("Manager")),
                ("lazy".into(), true, None),
                ("viaprop".into(), true, None),
                ("deep".into(), true, some("inner")),
                ("oneline".into(), true, some("one")),
                ("doctest".into(), true, None),
            ]
        );
    }

    #[test]
    fn used_names_are_what_other_modules_reach() {
        let src = "from multiprocessing import Pool, cpu_count as n\nimport logging\nclass Manager: pass\ndef helper(): pass\nm = Manager()\nctx.get_context().Process(target=helper)\ngetattr(x, 'Queue')\ns = 'Set-Cookie'\n";
        let Names { reach, strings } = parse(src).2;
        for w in ["Pool", "cpu_count", "n", "get_context", "Process", "Queue"] {
            assert!(reach.contains(w), "{w} reached: {reach:?}");
        }
        for w in ["Manager", "helper", "ctx", "logging", "m", "Cookie"] {
            assert!(!reach.contains(w), "{w} not reached: {reach:?}");
        }
        assert!(
            strings.contains(&("Set-Cookie".to_string(), 8)),
            "{strings:?}"
        );
        let Names { reach, .. } =
            parse("from tkinter import *\nmainloop()\ndef _test(): pass\n_test()\n").2;
        assert!(reach.contains("mainloop") && !reach.contains("_test"));
    }

    #[test]
    fn functions_run_from_module_level_or_from_other_modules() {
        // random.py: `_test_generator` (which imports statistics) runs only from `_test`,
        // which runs only from the main block.
        let src = "def _test_generator(n):\n    from statistics import stdev\ndef _test():\n    _test_generator(5)\ndef choice(x):\n    return _randbelow(x)\ndef _randbelow(n):\n    import _random\ndef __init__(self):\n    _seed()\ndef _seed():\n    import os\n_inst = 1\nif __name__ == '__main__':\n    _test()\n";
        let (imps, calls, _) = parse(src);
        let by: Vec<Option<String>> = imps.iter().map(|i| i.called_by.clone()).collect();
        assert_eq!(
            by,
            vec![
                Some("_test_generator".into()),
                Some("_randbelow".into()),
                Some("_seed".into())
            ]
        );
        let none = HashSet::new();
        let run = live(&calls, &none);
        assert!(run.contains("_seed"), "called from __init__: {run:?}");
        assert!(!run.contains("_test_generator") && !run.contains("_randbelow"));
        let reached: HashSet<String> = ["choice".to_string()].into();
        let run = live(&calls, &reached);
        assert!(run.contains("_randbelow") && !run.contains("_test_generator"));
    }

    #[test]
    fn import_statements() {
        let src = r#"
"""Docstring: import not_a_module
from nowhere import x
"""
import os, sys as system
import xml.etree.ElementTree as ET
from . import sibling
from ..pkg.mod import (a,
    b as bee)
from json import *
try:
    import _fast  # comment: import nope
except ImportError:
    _fast = None
if __name__ == "__main__":
    import doctest
def f():
    import sqlite3; from datetime import datetime
    m = importlib.import_module("plugins." + name)
    n = __import__('hashlib')
    o = importlib.import_module(name)
    spec = importlib.util.find_spec('html.parser')
    probe = importlib.util.find_spec(name)
s = 'from fake import x'
raise ValueError from err
"#;
        let all = imports(src);
        let nested: Vec<bool> = all.iter().map(|i| i.nested).collect();
        assert_eq!(
            nested,
            vec![
                false, false, false, false, false, false, false, true, true, true, true, true,
                true, true
            ]
        );
        let got: Vec<(String, Vec<String>, bool)> = all
            .into_iter()
            .map(|i| (i.module, i.names, i.computed))
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            got,
            vec![
                (s("os"), vec![], false),
                (s("sys"), vec![], false),
                (s("xml.etree.ElementTree"), vec![], false),
                (s("."), vec![s("sibling")], false),
                (s("..pkg.mod"), vec![s("a"), s("b")], false),
                (s("json"), vec![s("*")], false),
                (s("_fast"), vec![], false),
                (s("doctest"), vec![], false),
                (s("sqlite3"), vec![], false),
                (s("datetime"), vec![s("datetime")], false),
                (s("plugins"), vec![], true),
                (s("hashlib"), vec![], false),
                (s(""), vec![], true),
                (s("html.parser"), vec![], false),
            ]
        );
        assert_eq!(
            absolute_name("..pkg.mod", Some("a.b.c")),
            Some("a.b.pkg.mod".into())
        );
        assert_eq!(absolute_name(".", Some("a.b")), Some("a.b".into()));
        assert_eq!(absolute_name(".x", None), None);
    }
}
