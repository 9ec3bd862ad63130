//! The shell reader's walk over the tokens: which commands run, with what words.

use std::collections::{HashMap, HashSet};

use super::lex::{Lexer, Piece, Tok, Word, is_name};
use super::{BUILTINS, Command, MAX_COMMANDS, MAX_DEPTH, Parsed};
use crate::rootfs::display;

/// A `.`/`source` line: the name as written, the script's PATH then, and where it stands.
pub(crate) struct Sourced<'a> {
    pub name: &'a str,
    pub path_var: &'a str,
    pub by: &'a str,
    pub line: usize,
}

/// What a script can see of the image: the files it sources and the names its globs and
/// directory listings give.
pub(crate) trait ScriptFs {
    /// A sourced file → (canonical path, text).
    fn source(&mut self, call: &Sourced) -> Option<(String, String)>;
    /// The image's paths matching an absolute glob, sorted.
    fn glob(&mut self, pattern: &str) -> Vec<String>;
    /// The regular files under an absolute directory, at any depth (`find DIR`), sorted.
    fn files_under(&mut self, dir: &str) -> Vec<String>;
}

/// A script with no image around it (tests, fuzzing): nothing to source, globs match nothing.
pub(crate) struct NoFs;

impl ScriptFs for NoFs {
    fn source(&mut self, _: &Sourced) -> Option<(String, String)> {
        None
    }
    fn glob(&mut self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn files_under(&mut self, _: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Values a loop variable takes, at most.
const MAX_LIST: usize = 64;

/// What [`Parser::walk`] reads the next word as.
#[derive(PartialEq)]
enum Expect {
    Command,
    CaseSubject,
    CaseIn,
    ForVar,
    ForWords,
    FunctionName,
    /// `NAME=(` … `)`: a bash array's words.
    Array,
    Skip(&'static str),
}

/// Where [`Parser::walk`] is in a script's tokens.
struct Walk {
    expect: Expect,
    cases: Vec<Case>,
    words: Vec<Word>,
    in_subst: bool,
    /// The loop or array being read: its variable and words.
    list_var: Option<String>,
    list_words: Vec<Word>,
}

/// One open `case`: whether its patterns are being read, the variable it tests, and the
/// patterns of the branch being read.
struct Case {
    patterns_next: bool,
    subject: Option<String>,
    patterns: Vec<String>,
}

pub(crate) struct Parser<'r> {
    vars: HashMap<String, String>,
    /// Variables known to take each of several values: a `for` loop over a glob or a listed
    /// directory, `read VAR` fed by `find DIR`/`ls DIR`, a bash array of a glob.
    lists: HashMap<String, Vec<String>>,
    /// Positional parameters when known (`None`: given at run time).
    positional: Option<Vec<Option<String>>>,
    /// `$0`: the script's path as it was run (`None` for `sh -c` strings without a name).
    arg0: Option<String>,
    /// Earlier positional parameters a conditional `set --` may have left in place: `"$@"`
    /// runs each (the docker-entrypoint pattern `[ "${1#-}" != "$1" ] && set -- app "$@"`).
    alternatives: Vec<Option<Vec<Option<String>>>>,
    /// Names a `find DIR`/`ls DIR` earlier in the pipeline prints (for a `read` after it).
    listing: Option<Vec<String>>,
    /// Open `case`s that test a variable, with their branch's patterns (filters on a list).
    case_filters: Vec<(String, Vec<String>)>,
    /// Commands are being read once per value of a list variable.
    from_list: bool,
    /// The shell that runs the script (its builtins differ).
    shell: String,
    pub(super) out: Parsed,
    fs: &'r mut dyn ScriptFs,
    pub(super) visited: HashSet<String>,
}

impl<'r> Parser<'r> {
    pub(crate) fn new(
        fs: &'r mut dyn ScriptFs,
        vars: HashMap<String, String>,
        positional: Option<Vec<Option<String>>>,
        arg0: Option<String>,
        shell: &str,
    ) -> Self {
        Parser {
            vars,
            lists: HashMap::new(),
            positional,
            arg0,
            alternatives: Vec::new(),
            listing: None,
            from_list: false,
            case_filters: Vec::new(),
            shell: shell.to_string(),
            out: Parsed::default(),
            fs,
            visited: HashSet::new(),
        }
    }

    pub(super) fn run(&mut self, text: &str, file: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.out.warnings.push(format!(
                "{file}: scripts nest more than {MAX_DEPTH} deep; not read further"
            ));
            return;
        }
        let chars: Vec<char> = text.chars().collect();
        let toks = Lexer {
            s: &chars,
            i: 0,
            line: 1,
            heredocs: Vec::new(),
        }
        .lex();
        self.walk(&toks, file, depth);
    }

    /// Nested command substitutions of a word run too.
    pub(super) fn nested(&mut self, w: &Word, file: &str, depth: usize) {
        for (text, line) in &w.nested {
            self.run(text, &format!("{file}:{line}"), depth + 1);
        }
    }

    pub(super) fn walk(&mut self, toks: &[Tok], file: &str, depth: usize) {
        let mut st = Walk {
            expect: Expect::Command,
            cases: Vec::new(),
            words: Vec::new(),
            in_subst: false,
            list_var: None,
            list_words: Vec::new(),
        };
        for t in toks {
            if self.out.commands.len() >= MAX_COMMANDS {
                return;
            }
            match t {
                Tok::Word(w) => self.walk_word(&mut st, w, file, depth),
                Tok::Op(op) => self.walk_op(&mut st, op, file, depth),
            }
        }
        self.flush(st.words, file, depth);
    }

    /// A word of [`Parser::walk`]: a case pattern, a keyword, a loop's or array's word, or a
    /// word of the command being read.
    fn walk_word(&mut self, st: &mut Walk, w: &Word, file: &str, depth: usize) {
        if st.in_subst {
            self.nested(w, file, depth);
            return;
        }
        if let Expect::Skip(end) = st.expect {
            if w.literal() == Some(end) {
                st.expect = Expect::Command;
            }
            self.nested(w, file, depth);
            return;
        }
        if let Some(c) = st.cases.last_mut()
            && c.patterns_next
            && st.words.is_empty()
        {
            if w.literal() == Some("esac") {
                st.cases.pop();
                self.sync_case_filters(&st.cases);
            } else if let Some(p) = self.eval_pieces(&w.pieces) {
                c.patterns.push(p);
            }
            return;
        }
        match st.expect {
            Expect::CaseSubject => {
                self.nested(w, file, depth);
                let subject = match w.pieces.as_slice() {
                    [Piece::Var { name, .. }] => Some(name.clone()),
                    _ => None,
                };
                st.cases.push(Case {
                    patterns_next: false,
                    subject,
                    patterns: Vec::new(),
                });
                st.expect = Expect::CaseIn;
                return;
            }
            Expect::CaseIn => {
                if let Some(c) = st.cases.last_mut() {
                    c.patterns_next = true;
                }
                st.expect = Expect::Command;
                return;
            }
            Expect::ForVar => {
                st.list_var = w.literal().map(str::to_string);
                st.list_words.clear();
                st.expect = Expect::ForWords;
                return;
            }
            Expect::FunctionName => {
                if let Some(n) = w.literal() {
                    self.out
                        .functions
                        .insert(n.trim_end_matches("()").to_string());
                }
                st.expect = Expect::Command;
                return;
            }
            Expect::ForWords => {
                if w.literal() == Some("do") {
                    self.bind_list(st.list_var.take(), &st.list_words);
                    st.expect = Expect::Command;
                } else {
                    self.nested(w, file, depth);
                    if !(st.list_words.is_empty() && w.literal() == Some("in")) {
                        st.list_words.push(w.clone());
                    }
                }
                return;
            }
            Expect::Array => {
                self.nested(w, file, depth);
                st.list_words.push(w.clone());
                return;
            }
            _ => {}
        }
        if st.words.is_empty()
            && let Some(kw) = w.literal()
        {
            match kw {
                "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "{" | "!" | "time"
                | "fi" | "done" | "}" | "coproc" => return,
                "case" => {
                    st.expect = Expect::CaseSubject;
                    return;
                }
                "for" | "select" => {
                    st.expect = Expect::ForVar;
                    return;
                }
                "esac" => {
                    st.cases.pop();
                    self.sync_case_filters(&st.cases);
                    return;
                }
                "[[" => {
                    st.expect = Expect::Skip("]]");
                    return;
                }
                "function" => {
                    st.expect = Expect::FunctionName;
                    return;
                }
                _ => {}
            }
        }
        st.words.push(w.clone());
    }

    /// An operator of [`Parser::walk`]: a command substitution's bounds, the end of an array,
    /// a case pattern's `)`, a function definition, or the end of a command.
    fn walk_op(&mut self, st: &mut Walk, op: &str, file: &str, depth: usize) {
        match op {
            "subst" => {
                st.in_subst = true;
                return;
            }
            "endsubst" => {
                st.in_subst = false;
                return;
            }
            _ => {}
        }
        if st.expect == Expect::Array {
            if op == ")" {
                self.bind_list(st.list_var.take(), &st.list_words);
                st.expect = Expect::Command;
            }
            return;
        }
        if let Some(c) = st.cases.last_mut()
            && c.patterns_next
            && st.words.is_empty()
        {
            if op == ")" {
                c.patterns_next = false;
                self.sync_case_filters(&st.cases);
            }
            return;
        }
        if op == "(" && st.words.len() == 1 {
            if let Some(name) = st.words[0]
                .literal()
                .and_then(|l| l.strip_suffix('='))
                .filter(|n| is_name(n))
            {
                // `NAME=( … )`: a bash array.
                st.list_var = Some(name.to_string());
                st.list_words.clear();
                st.expect = Expect::Array;
                st.words.clear();
                return;
            }
            // `name() { … }`: a function, not a command (its body runs when
            // called, so its commands count).
            if let Some(n) = st.words[0].literal() {
                self.out.functions.insert(n.to_string());
            }
            st.words.clear();
            return;
        }
        if st.expect == Expect::ForWords {
            return;
        }
        self.flush(std::mem::take(&mut st.words), file, depth);
        if op == ";;"
            && let Some(top) = st.cases.last_mut()
        {
            top.patterns_next = true;
            top.patterns.clear();
            self.sync_case_filters(&st.cases);
        }
    }

    /// The open `case` branches that test a variable, as filters on its values.
    fn sync_case_filters(&mut self, cases: &[Case]) {
        self.case_filters = cases
            .iter()
            .filter(|c| !c.patterns_next && !c.patterns.is_empty())
            .filter_map(|c| Some((c.subject.clone()?, c.patterns.clone())))
            .collect();
    }

    /// A loop's or an array's words → the values its variable takes: literal words, globs
    /// matched in the image, and `$(ls DIR)`/`$(find DIR …)` listings. Unknown words leave the
    /// variable computed at run time.
    fn bind_list(&mut self, var: Option<String>, words: &[Word]) {
        let Some(var) = var else { return };
        self.vars.remove(&var);
        self.lists.remove(&var);
        let mut values = Vec::new();
        for w in words {
            if let Some(listed) = w.nested.first().and_then(|(text, _)| self.listing_of(text)) {
                if w.pieces.len() == 1 {
                    values.extend(listed);
                    continue;
                }
                return;
            }
            if let [Piece::Var { name, .. }] = w.pieces.as_slice()
                && let Some(l) = self.lists.get(name)
            {
                values.extend(l.clone());
                continue;
            }
            for v in self.eval(w) {
                let Some(v) = v else { return };
                if !w.quoted && v.starts_with('/') && v.contains(['*', '?', '[']) {
                    values.extend(self.fs.glob(&v));
                } else {
                    values.push(v);
                }
            }
        }
        if values.is_empty() {
            // Nothing there when the image was built: perhaps made at run time.
            return;
        }
        values.truncate(MAX_LIST);
        self.lists.insert(var, values);
    }

    /// `ls DIR` or `find DIR …` (perhaps piped through `sort`, `grep`…): what it prints.
    fn listing_of(&mut self, text: &str) -> Option<Vec<String>> {
        let first = text.split('|').next()?;
        let words: Vec<&str> = first.split_whitespace().collect();
        let (cmd, rest) = match words.as_slice() {
            [b, c, rest @ ..] if b.ends_with("busybox") => (*c, rest),
            [c, rest @ ..] => (*c, rest),
            [] => return None,
        };
        self.list_dir(cmd.rsplit('/').next().unwrap_or(cmd), rest)
    }

    fn list_dir(&mut self, cmd: &str, args: &[&str]) -> Option<Vec<String>> {
        let dir = args
            .iter()
            .map(|a| a.trim_matches(['"', '\'']))
            .find(|a| a.starts_with('/'))?;
        let dir = dir.trim_end_matches('/');
        match cmd {
            "ls" => Some(
                self.fs
                    .glob(&format!("{dir}/*"))
                    .into_iter()
                    .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
                    .collect(),
            ),
            "find" => Some(self.fs.files_under(if dir.is_empty() { "/" } else { dir })),
            _ => None,
        }
    }

    /// `${NAME:=default}` / `${NAME=default}`: an unset (or, with `:`, empty) variable takes
    /// the default's value from here on (`: "${CONF:=/etc/app.conf}"`, then `"$CONF"`).
    fn assign_defaults(&mut self, pieces: &[Piece]) {
        for p in pieces {
            if let Piece::Var {
                name,
                default: Some(d),
                assign: true,
                ..
            } = p
                && self.vars.get(name).is_none_or(|v| v.is_empty())
                && let Some(v) = self.eval_pieces(d)
            {
                self.vars.insert(name.clone(), v);
            }
        }
    }

    /// Evaluate a word: `None` for what is computed at run time; `$@` and unquoted variables
    /// may give several words.
    pub(super) fn eval(&self, w: &Word) -> Vec<Option<String>> {
        if let [Piece::AllArgs] = w.pieces.as_slice() {
            return match &self.positional {
                Some(p) => p.clone(),
                None => vec![None],
            };
        }
        if let [
            Piece::Var {
                name,
                quoted: false,
                default: None,
                ..
            },
        ] = w.pieces.as_slice()
            && let Some(v) = self.vars.get(name)
        {
            return v.split_whitespace().map(|s| Some(s.to_string())).collect();
        }
        vec![self.eval_pieces(&w.pieces)]
    }

    pub(super) fn eval_pieces(&self, pieces: &[Piece]) -> Option<String> {
        let mut out = String::new();
        for p in pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var { name, default, .. } => match self.vars.get(name) {
                    Some(v) if !v.is_empty() || default.is_none() => out.push_str(v),
                    _ => out.push_str(&self.eval_pieces(default.as_ref()?)?),
                },
                Piece::Positional(0) => out.push_str(self.arg0.as_deref()?),
                Piece::Positional(n) => match &self.positional {
                    Some(p) => out.push_str(
                        p.get(n - 1)
                            .cloned()
                            .unwrap_or(Some(String::new()))?
                            .as_str(),
                    ),
                    None => return None,
                },
                Piece::AllArgs | Piece::Computed => return None,
            }
        }
        Some(out)
    }

    /// A command's words: once, or once per value of a list variable it uses (as far as the
    /// open `case` branches testing that variable let the value through).
    pub(super) fn flush(&mut self, words: Vec<Word>, file: &str, depth: usize) {
        for w in &words {
            self.nested(w, file, depth);
            self.assign_defaults(&w.pieces);
        }
        let list = words
            .iter()
            .flat_map(|w| w.pieces.iter())
            .find_map(|p| match p {
                Piece::Var { name, .. } if self.lists.contains_key(name) => Some(name.clone()),
                _ => None,
            });
        let Some(var) = list else {
            return self.flush_one(words, file, depth);
        };
        let all = self.lists.remove(&var).unwrap_or_default();
        let mut values = all.clone();
        for (subject, patterns) in &self.case_filters {
            if *subject == var {
                values.retain(|v| {
                    patterns.iter().any(|p| {
                        globset::Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(v))
                    })
                });
            }
        }
        let was = self.from_list;
        for v in &values {
            self.vars.insert(var.clone(), v.clone());
            self.from_list = true;
            self.flush_one(words.clone(), file, depth);
        }
        self.from_list = was;
        self.vars.remove(&var);
        self.lists.insert(var, all);
    }

    fn flush_one(&mut self, words: Vec<Word>, file: &str, depth: usize) {
        let Some(first) = words.first() else { return };
        let line = first.line;
        // Leading assignments: for the command only, or for the shell when alone.
        let mut k = 0;
        let mut env = Vec::new();
        while k < words.len() {
            let w = &words[k];
            let Some(Piece::Lit(l)) = w.pieces.first() else {
                break;
            };
            let Some((name, rest)) = l.split_once('=') else {
                break;
            };
            if !is_name(name) {
                break;
            }
            let mut pieces = w.pieces.clone();
            pieces[0] = Piece::Lit(rest.to_string());
            let value = self.eval_pieces(&pieces);
            if words.len() == 1 {
                match value {
                    Some(v) => self.vars.insert(name.to_string(), v),
                    None => self.vars.remove(name),
                };
                return;
            }
            if let Some(v) = value {
                env.push((name.to_string(), v));
            }
            k += 1;
        }
        let uses_args = words[k..].iter().any(|w| {
            w.pieces
                .iter()
                .any(|p| matches!(p, Piece::AllArgs | Piece::Positional(_)))
        });
        if uses_args && !self.alternatives.is_empty() {
            let primary = self.positional.clone();
            let mut alts = vec![primary.clone()];
            alts.extend(self.alternatives.clone());
            for alt in alts {
                self.positional = alt;
                let mut argv: Vec<Option<String>> = Vec::new();
                for w in &words[k..] {
                    argv.extend(self.eval(w));
                }
                // An option where a command would be: that branch is not taken for it.
                if argv
                    .first()
                    .cloned()
                    .flatten()
                    .is_some_and(|a| a.starts_with('-'))
                    && !matches!(words[k].literal(), Some("set" | "exec" | "command"))
                {
                    continue;
                }
                if matches!(argv.first(), Some(Some(a)) if a == "exec")
                    && argv
                        .get(1)
                        .cloned()
                        .flatten()
                        .is_some_and(|a| a.starts_with('-'))
                {
                    continue;
                }
                self.command(argv, env.clone(), file, line, depth);
            }
            self.positional = primary;
            return;
        }
        let mut argv: Vec<Option<String>> = Vec::new();
        for w in &words[k..] {
            argv.extend(self.eval(w));
        }
        self.command(argv, env, file, line, depth);
    }

    pub(super) fn command(
        &mut self,
        mut argv: Vec<Option<String>>,
        env: Vec<(String, String)>,
        file: &str,
        line: usize,
        depth: usize,
    ) {
        loop {
            let Some(first) = argv.first() else { return };
            let Some(name) = first.clone() else {
                let what = if self.positional.is_none() {
                    "a command computed at run time (its arguments, or a variable)"
                } else {
                    "a command computed at run time"
                };
                self.out.questions.push(format!(
                    "{file}:{line}: runs {what}; it is not traced (keep it with --keep)"
                ));
                return;
            };
            match name.as_str() {
                "exec" => {
                    argv.remove(0);
                    while let Some(Some(a)) = argv.first() {
                        match a.as_str() {
                            "-c" | "-l" | "--" => {
                                argv.remove(0);
                            }
                            "-a" => {
                                argv.drain(..2.min(argv.len()));
                            }
                            _ => break,
                        }
                    }
                    continue;
                }
                "command" => {
                    argv.remove(0);
                    match argv.first() {
                        Some(Some(a)) if a == "-v" || a == "-V" => return,
                        Some(Some(a)) if a == "-p" => {
                            argv.remove(0);
                        }
                        _ => {}
                    }
                    continue;
                }
                "." | "source" => {
                    let Some(Some(target)) = argv.get(1).cloned() else {
                        if argv.len() > 1 {
                            self.out.questions.push(format!(
                                "{file}:{line}: sources a file named at run time; it is not traced"
                            ));
                        }
                        return;
                    };
                    let path_var = self.vars.get("PATH").cloned().unwrap_or_default();
                    let call = Sourced {
                        name: &target,
                        path_var: &path_var,
                        by: file,
                        line,
                    };
                    if let Some((canon, text)) = self.fs.source(&call)
                        && self.visited.insert(canon.clone())
                    {
                        let was = std::mem::replace(&mut self.from_list, false);
                        self.run(&text, &display(&canon), depth + 1);
                        self.from_list = was;
                    }
                    return;
                }
                "eval" | "trap" => {
                    let args: Vec<Option<String>> = if name == "trap" {
                        argv.get(1).cloned().into_iter().collect()
                    } else {
                        argv[1..].to_vec()
                    };
                    if args.iter().all(Option::is_some) {
                        let text: Vec<String> = args.into_iter().flatten().collect();
                        self.run(&text.join(" "), &format!("{file}:{line}"), depth + 1);
                    } else {
                        self.out.questions.push(format!(
                            "{file}:{line}: {name} of a string computed at run time; its commands are not traced"
                        ));
                    }
                    return;
                }
                "export" | "readonly" | "local" | "declare" | "typeset" => {
                    for a in argv.iter().skip(1).flatten() {
                        if let Some((k, v)) = a.split_once('=')
                            && is_name(k)
                        {
                            self.vars.insert(k.to_string(), v.to_string());
                        }
                    }
                    return;
                }
                "set" if matches!(argv.get(1), Some(Some(a)) if a == "--") => {
                    // `set -- ARGS`: new positional parameters (perhaps only on one branch).
                    let new: Vec<Option<String>> = argv[2..].to_vec();
                    if self.alternatives.len() < 8 {
                        self.alternatives.push(self.positional.clone());
                    }
                    self.positional = Some(new);
                    return;
                }
                "unset" => {
                    for a in argv.iter().skip(1).flatten() {
                        self.vars.remove(a);
                    }
                    return;
                }
                "read" => {
                    // `find DIR | … | while read VAR`: VAR takes each listed name.
                    if let Some(listing) = self.listing.take()
                        && let Some(Some(var)) = argv
                            .iter()
                            .skip(1)
                            .rfind(|a| a.as_deref().is_some_and(|a| !a.starts_with('-')))
                        && is_name(var)
                    {
                        self.vars.remove(var);
                        self.lists.insert(var.clone(), listing);
                    }
                    return;
                }
                n if BUILTINS.contains(&n) && !lacks_builtin(&self.shell, n) => {
                    self.listing = None;
                    return;
                }
                _ => {}
            }
            self.note_listing(&argv);
            let path = self.vars.get("PATH").cloned();
            self.out.commands.push(Command {
                optional: self.from_list,
                argv,
                file: file.to_string(),
                line,
                path,
                env,
            });
            return;
        }
    }

    /// A `find DIR`/`ls DIR` starts a listing that a `read` later in the pipeline takes;
    /// filters keep it; any other command ends it.
    fn note_listing(&mut self, argv: &[Option<String>]) {
        let words: Vec<&str> = argv.iter().map(|a| a.as_deref().unwrap_or("")).collect();
        let (cmd, rest) = match words.as_slice() {
            [b, c, rest @ ..] if b.rsplit('/').next() == Some("busybox") => (*c, rest),
            [c, rest @ ..] => (*c, rest),
            [] => return,
        };
        let base = cmd.rsplit('/').next().unwrap_or(cmd);
        if matches!(base, "ls" | "find") {
            self.listing = self.list_dir(base, rest);
        } else if !matches!(
            base,
            "sort" | "grep" | "egrep" | "head" | "tail" | "tac" | "uniq" | "cat"
        ) {
            self.listing = None;
        }
    }
}

/// Builtins of dash and bash that a shell does not have (it runs the file instead).
fn lacks_builtin(shell: &str, name: &str) -> bool {
    const LACKS: &[(&str, &[&str])] = &[
        ("posh", &["printf"]),
        ("mksh", &["printf"]),
        ("lksh", &["printf"]),
    ];
    LACKS
        .iter()
        .any(|(s, names)| *s == shell && names.contains(&name))
}
