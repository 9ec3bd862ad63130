//! The shell reader's lexer: words (quotes, escapes, expansions) and operators.

/// A piece of a word.
#[derive(Debug, Clone)]
pub(super) enum Piece {
    Lit(String),
    /// `$NAME`, `${NAME}`, `${NAME:-default}`; `assign`: `${NAME:=default}` (the default
    /// becomes the variable's value for the lines after).
    Var {
        name: String,
        default: Option<Vec<Piece>>,
        quoted: bool,
        assign: bool,
    },
    /// `$0` (the script's name), `$1` … `$9`, `${10}`.
    Positional(usize),
    /// `$@` or `$*` (quoted or not).
    AllArgs,
    /// Anything computed at run time (`$(…)`, arithmetic, `$?`, `${x#y}`, …).
    Computed,
}

#[derive(Debug, Clone)]
pub(super) struct Word {
    pub(super) pieces: Vec<Piece>,
    pub(super) quoted: bool,
    pub(super) line: usize,
    /// Command substitutions inside it: (text, line).
    pub(super) nested: Vec<(String, usize)>,
}

impl Word {
    /// The word as written when it is one unquoted literal.
    pub(super) fn literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Lit(s)] if !self.quoted => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Tok {
    Word(Word),
    Op(&'static str),
}

pub(super) fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

/// Find the index of the `close` that ends a group opened just before `start`, skipping
/// quotes and nested groups. Returns the index of `close` (or the end).
pub(super) fn matching(s: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 1;
    let mut i = start;
    while i < s.len() {
        match s[i] {
            '\\' => i += 1,
            '\'' if open != '`' => {
                i += 1;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
            }
            '"' if open != '`' => {
                i += 1;
                while i < s.len() && s[i] != '"' {
                    if s[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            c if c == open && open != close => depth += 1,
            _ => {}
        }
        i += 1;
    }
    s.len()
}

pub(super) fn count_lines(s: &[char]) -> usize {
    s.iter().filter(|&&c| c == '\n').count()
}

pub(super) struct Lexer<'s> {
    pub(super) s: &'s [char],
    pub(super) i: usize,
    pub(super) line: usize,
    pub(super) heredocs: Vec<(String, bool)>,
}

impl Lexer<'_> {
    pub(super) fn lex(mut self) -> Vec<Tok> {
        let mut out = Vec::new();
        let s = self.s;
        while self.i < s.len() {
            let c = s[self.i];
            let next = s.get(self.i + 1).copied();
            match c {
                ' ' | '\t' | '\r' => self.i += 1,
                '\\' if next == Some('\n') => {
                    self.i += 2;
                    self.line += 1;
                }
                '\n' => {
                    out.push(Tok::Op("\n"));
                    self.line += 1;
                    self.i += 1;
                    self.skip_heredocs();
                }
                '#' => {
                    while self.i < s.len() && s[self.i] != '\n' {
                        self.i += 1;
                    }
                }
                ';' => {
                    if next == Some(';') {
                        self.i += 2;
                        if s.get(self.i) == Some(&'&') {
                            self.i += 1;
                        }
                        out.push(Tok::Op(";;"));
                    } else if next == Some('&') {
                        self.i += 2;
                        out.push(Tok::Op(";;"));
                    } else {
                        self.i += 1;
                        out.push(Tok::Op(";"));
                    }
                }
                '&' => {
                    if next == Some('&') {
                        self.i += 2;
                        out.push(Tok::Op("&&"));
                    } else if next == Some('>') {
                        self.i += 2;
                        if s.get(self.i) == Some(&'>') {
                            self.i += 1;
                        }
                        self.redirect_target(&mut out);
                    } else {
                        self.i += 1;
                        out.push(Tok::Op("&"));
                    }
                }
                '|' => {
                    self.i += if matches!(next, Some('|') | Some('&')) {
                        2
                    } else {
                        1
                    };
                    out.push(Tok::Op(if next == Some('|') { "||" } else { "|" }));
                }
                '(' if next == Some('(') => {
                    // Arithmetic command `(( … ))`.
                    let end = matching(s, self.i + 2, '(', ')');
                    self.line += count_lines(&s[self.i..end.min(s.len())]);
                    self.i = (end + 2).min(s.len());
                }
                '(' => {
                    self.i += 1;
                    out.push(Tok::Op("("));
                }
                ')' => {
                    self.i += 1;
                    out.push(Tok::Op(")"));
                }
                '<' | '>' => self.redirect(&mut out),
                _ => {
                    let w = self.word();
                    // `2>file`: a number right before a redirection is a file descriptor.
                    if matches!(s.get(self.i), Some('<' | '>'))
                        && w.literal()
                            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
                    {
                        continue;
                    }
                    out.push(Tok::Word(w));
                }
            }
        }
        out
    }

    pub(super) fn skip_heredocs(&mut self) {
        let docs = std::mem::take(&mut self.heredocs);
        for (delim, strip) in docs {
            loop {
                if self.i >= self.s.len() {
                    return;
                }
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != '\n' {
                    self.i += 1;
                }
                let line: String = self.s[start..self.i].iter().collect();
                self.i = (self.i + 1).min(self.s.len());
                self.line += 1;
                let l = if strip {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if l.trim_end_matches('\r') == delim {
                    break;
                }
            }
        }
    }

    pub(super) fn redirect(&mut self, out: &mut Vec<Tok>) {
        let s = self.s;
        let c = s[self.i];
        if s.get(self.i + 1) == Some(&'(') {
            // Process substitution `<(…)`, `>(…)`.
            let end = matching(s, self.i + 2, '(', ')');
            let text: String = s[self.i + 2..end.min(s.len())].iter().collect();
            let line = self.line;
            self.line += count_lines(&s[self.i..end.min(s.len())]);
            self.i = (end + 1).min(s.len());
            out.push(Tok::Word(Word {
                pieces: vec![Piece::Computed],
                quoted: true,
                line,
                nested: vec![(text, line)],
            }));
            return;
        }
        self.i += 1;
        if c == '<' && s.get(self.i) == Some(&'<') {
            self.i += 1;
            if s.get(self.i) == Some(&'<') {
                self.i += 1; // here-string: the next word is data
                self.redirect_target(out);
                return;
            }
            let strip = s.get(self.i) == Some(&'-');
            if strip {
                self.i += 1;
            }
            while matches!(s.get(self.i), Some(' ' | '\t')) {
                self.i += 1;
            }
            let w = self.word();
            let delim: String = w
                .pieces
                .iter()
                .map(|p| match p {
                    Piece::Lit(l) => l.clone(),
                    _ => String::new(),
                })
                .collect();
            self.heredocs.push((delim, strip));
            return;
        }
        while matches!(s.get(self.i), Some('>' | '&' | '|' | '<')) {
            self.i += 1;
        }
        if s.get(self.i) == Some(&'-') {
            self.i += 1; // `>&-`
            return;
        }
        self.redirect_target(out);
    }

    /// The word after a redirection: a file, not a command; its substitutions still run.
    pub(super) fn redirect_target(&mut self, out: &mut Vec<Tok>) {
        while matches!(self.s.get(self.i), Some(' ' | '\t')) {
            self.i += 1;
        }
        if self.i < self.s.len() && !matches!(self.s[self.i], '\n' | ';' | '&' | '|' | '(' | ')') {
            let w = self.word();
            if !w.nested.is_empty() {
                // Keep its substitutions: a computed word that is not a command.
                out.push(Tok::Op("subst"));
                out.push(Tok::Word(w));
                out.push(Tok::Op("endsubst"));
            }
        }
    }

    pub(super) fn word(&mut self) -> Word {
        let s = self.s;
        let mut w = Word {
            pieces: Vec::new(),
            quoted: false,
            line: self.line,
            nested: Vec::new(),
        };
        let mut lit = String::new();
        let flush = |lit: &mut String, w: &mut Word| {
            if !lit.is_empty() {
                w.pieces.push(Piece::Lit(std::mem::take(lit)));
            }
        };
        while self.i < s.len() {
            let c = s[self.i];
            match c {
                ' ' | '\t' | '\n' | '\r' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
                '\\' => {
                    if let Some(&n) = s.get(self.i + 1) {
                        if n == '\n' {
                            self.line += 1;
                        } else {
                            lit.push(n);
                        }
                    }
                    self.i += 2;
                }
                '\'' => {
                    w.quoted = true;
                    self.i += 1;
                    while self.i < s.len() && s[self.i] != '\'' {
                        if s[self.i] == '\n' {
                            self.line += 1;
                        }
                        lit.push(s[self.i]);
                        self.i += 1;
                    }
                    self.i += 1;
                }
                '"' => {
                    w.quoted = true;
                    self.i += 1;
                    while self.i < s.len() && s[self.i] != '"' {
                        match s[self.i] {
                            '\\' => {
                                if let Some(&n) = s.get(self.i + 1) {
                                    if matches!(n, '$' | '`' | '"' | '\\') {
                                        lit.push(n);
                                    } else if n == '\n' {
                                        self.line += 1;
                                    } else {
                                        lit.push('\\');
                                        lit.push(n);
                                    }
                                }
                                self.i += 2;
                            }
                            '$' | '`' => {
                                flush(&mut lit, &mut w);
                                self.expansion(&mut w, true);
                            }
                            ch => {
                                if ch == '\n' {
                                    self.line += 1;
                                }
                                lit.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                    self.i += 1;
                }
                '$' | '`' => {
                    flush(&mut lit, &mut w);
                    self.expansion(&mut w, false);
                }
                _ => {
                    lit.push(c);
                    self.i += 1;
                }
            }
        }
        flush(&mut lit, &mut w);
        if w.pieces.is_empty() && w.quoted {
            w.pieces.push(Piece::Lit(String::new()));
        }
        w
    }

    /// `$…` or a backtick at `self.i`.
    pub(super) fn expansion(&mut self, w: &mut Word, quoted: bool) {
        let s = self.s;
        let line = self.line;
        if s[self.i] == '`' {
            let end = matching(s, self.i + 1, '`', '`');
            let text: String = s[self.i + 1..end.min(s.len())].iter().collect();
            self.line += count_lines(&s[self.i..end.min(s.len())]);
            self.i = (end + 1).min(s.len());
            w.nested.push((text.replace("\\`", "`"), line));
            w.pieces.push(Piece::Computed);
            return;
        }
        let next = s.get(self.i + 1).copied();
        match next {
            Some('(') if s.get(self.i + 2) == Some(&'(') => {
                let end = matching(s, self.i + 3, '(', ')');
                self.line += count_lines(&s[self.i..end.min(s.len())]);
                self.i = (end + 2).min(s.len());
                w.pieces.push(Piece::Computed);
            }
            Some('(') => {
                let end = matching(s, self.i + 2, '(', ')');
                let text: String = s[self.i + 2..end.min(s.len())].iter().collect();
                self.line += count_lines(&s[self.i..end.min(s.len())]);
                self.i = (end + 1).min(s.len());
                w.nested.push((text, line));
                w.pieces.push(Piece::Computed);
            }
            Some('{') => {
                let end = matching(s, self.i + 2, '{', '}');
                let inner: String = s[self.i + 2..end.min(s.len())].iter().collect();
                self.i = (end + 1).min(s.len());
                w.pieces.push(brace_expansion(&inner, quoted, line));
            }
            Some('\'') if !quoted => {
                // $'…' (ANSI-C quoting): the text, escapes left as written.
                self.i += 2;
                let mut lit = String::new();
                while self.i < s.len() && s[self.i] != '\'' {
                    if s[self.i] == '\\' && self.i + 1 < s.len() {
                        lit.push(s[self.i + 1]);
                        self.i += 2;
                        continue;
                    }
                    lit.push(s[self.i]);
                    self.i += 1;
                }
                self.i += 1;
                w.quoted = true;
                w.pieces.push(Piece::Lit(lit));
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let start = self.i + 1;
                let mut j = start;
                while j < s.len() && (s[j] == '_' || s[j].is_ascii_alphanumeric()) {
                    j += 1;
                }
                let name: String = s[start..j].iter().collect();
                self.i = j;
                w.pieces.push(Piece::Var {
                    name,
                    default: None,
                    quoted,
                    assign: false,
                });
            }
            Some(c) if c.is_ascii_digit() => {
                self.i += 2;
                let n = c.to_digit(10).unwrap_or(0) as usize;
                w.pieces.push(Piece::Positional(n));
            }
            Some('@' | '*') => {
                self.i += 2;
                w.pieces.push(Piece::AllArgs);
            }
            Some('#' | '?' | '$' | '!' | '-') => {
                self.i += 2;
                w.pieces.push(Piece::Computed);
            }
            _ => {
                self.i += 1;
                w.pieces.push(Piece::Lit("$".into()));
            }
        }
    }
}

/// `${…}`: a name, a positional parameter, or a name with a `-`/`:-`/`=`/`:=` default.
pub(super) fn brace_expansion(inner: &str, quoted: bool, line: usize) -> Piece {
    if inner == "@" || inner == "*" {
        return Piece::AllArgs;
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Piece::Positional(n);
    }
    let inner = inner
        .strip_suffix("[@]")
        .or_else(|| inner.strip_suffix("[*]"))
        .unwrap_or(inner); // a bash array, all its values
    if is_name(inner) {
        return Piece::Var {
            name: inner.to_string(),
            default: None,
            quoted,
            assign: false,
        };
    }
    let name_end = inner
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    if is_name(name) {
        for op in [":-", "-", ":=", "="] {
            if let Some(d) = rest.strip_prefix(op) {
                let chars: Vec<char> = d.chars().collect();
                let mut lx = Lexer {
                    s: &chars,
                    i: 0,
                    line,
                    heredocs: Vec::new(),
                };
                let w = lx.word();
                return Piece::Var {
                    name: name.to_string(),
                    default: Some(w.pieces),
                    quoted,
                    assign: op.ends_with('='),
                };
            }
        }
    }
    Piece::Computed
}
