//! Python's codecs, chosen by name at run time (`bytes.decode("cp1252")`,
//! `open(f, encoding="latin-1")`): the `encodings` package's search function imports
//! `encodings.<name>` for the name given, after its alias table. Like iconv's gconv modules
//! (`libc.rs`), the codecs kept are those some kept source names in a string literal (the
//! `email` package's charset tables name the CJK ones), the image config names
//! (`PYTHONIOENCODING`, `LANG`), and the Unicode family with ASCII and Latin-1; the others are
//! dropped with a reason and an open question.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Result;
use crate::rootfs::display;
use crate::trace::kit::{Cx, Exec, join};

/// Codecs kept without being named: what the interpreter itself and most text I/O use.
pub(crate) const DEFAULT: &[&str] = &[
    "utf_8",
    "utf_8_sig",
    "utf_16",
    "utf_16_le",
    "utf_16_be",
    "utf_32",
    "utf_32_le",
    "utf_32_be",
    "ascii",
    "latin_1",
];

/// Longest string literal read as a codec name.
pub(crate) const MAX_NAME: usize = 40;

/// The `encodings` package of one interpreter: its directory, alias table and codec modules.
pub(crate) struct Codecs {
    pub dir: String,
    aliases: HashMap<String, String>,
    /// Module name → file.
    pub modules: BTreeMap<String, String>,
}

/// Python's `encodings.normalize_encoding` after the C lookup's lower-casing: runs of
/// characters other than letters, digits and `.` become one `_`, none at either end.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut punct = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            if punct && !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            punct = false;
        } else {
            punct = true;
        }
    }
    out
}

impl Codecs {
    /// The codecs of the package directory `dir` (canonical, in the image): the alias table
    /// of its `aliases.py` and its modules; `None` when it has no `aliases.py`.
    pub(crate) fn load(cx: &mut Cx, dir: &str) -> Result<Option<Codecs>> {
        let Some((file, _)) = cx.resolve_file(&join(
            &format!("/{}", dir.trim_start_matches('/')),
            "aliases.py",
        ))?
        else {
            return Ok(None);
        };
        let Some(text) = cx.text(&file)? else {
            return Ok(None);
        };
        let mut aliases = HashMap::new();
        for line in text.lines() {
            // `    'latin1'             : 'latin_1',`
            let q: Vec<&str> = line.split('\'').collect();
            if q.len() >= 5 && q[0].trim().is_empty() && q[2].trim() == ":" {
                aliases.insert(q[1].to_string(), q[3].to_string());
            }
        }
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let modules = cx
            .fs
            .subtree(dir)
            .filter_map(|(k, _)| {
                let rest = k.strip_prefix(&prefix)?;
                let m = rest.strip_suffix(".py")?;
                (!m.contains('/') && m != "__init__" && m != "aliases")
                    .then(|| (m.to_string(), k.clone()))
            })
            .collect();
        Ok(Some(Codecs {
            dir: dir.to_string(),
            aliases,
            modules,
        }))
    }

    /// The module the search function imports for `name`, when the package has it.
    pub(crate) fn module_for(&self, name: &str) -> Option<&str> {
        let norm = normalize(name);
        if norm.is_empty() || norm.len() > MAX_NAME {
            return None;
        }
        let aliased = self
            .aliases
            .get(&norm)
            .or_else(|| self.aliases.get(&norm.replace('.', "_")));
        [aliased.map(String::as_str), Some(norm.as_str())]
            .into_iter()
            .flatten()
            .find_map(|m| self.modules.get_key_value(m).map(|(k, _)| k.as_str()))
    }

    /// The modules not in `kept`.
    pub(crate) fn others(&self, kept: &BTreeSet<String>) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(m, _)| !kept.contains(*m))
            .map(|(_, f)| f.clone())
            .collect()
    }
}

/// The codecs named before any source is read: the defaults, the Entrypoint/Cmd/Env words
/// (`PYTHONIOENCODING=latin1`, `LANG=de_DE.ISO-8859-1`), and the words of the interpreter,
/// libpython and the C modules (`getaddrinfo` encodes a host name with "idna"); the value
/// says who named it (empty: one of these).
pub(crate) fn named_at_start(
    cx: &mut Cx,
    c: &Codecs,
    e: &Exec,
) -> BTreeMap<String, (String, usize)> {
    let config: Vec<String> = e
        .argv
        .iter()
        .chain(cx.run.env.iter())
        .flat_map(|a| {
            a.split(|c: char| c.is_whitespace() || matches!(c, '=' | ',' | ':'))
                .flat_map(|w| [w.to_string(), w.rsplit('.').next().unwrap_or("").into()])
                .collect::<Vec<_>>()
        })
        .collect();
    let interp = cx.fs.resolve(&e.path, true).map(|r| r.path).ok();
    let words: Vec<String> = cx
        .out
        .objects
        .iter()
        .filter(|o| {
            Some(&o.path) == interp.as_ref()
                || o.path
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("libpython"))
                || o.facts.imports.iter().any(|i| i.name.starts_with("Py"))
        })
        .flat_map(|o| o.facts.words.iter().cloned())
        .collect();
    let mut out = BTreeMap::new();
    for n in DEFAULT
        .iter()
        .copied()
        .chain(config.iter().map(String::as_str))
        .chain(words.iter().map(String::as_str))
    {
        if let Some(m) = c.module_for(n) {
            out.insert(m.to_string(), (String::new(), 0));
        }
    }
    out
}

/// The codecs not `wanted` (and not kept by other means): listed as dropped, with one open
/// question.
pub(crate) fn drop_others(cx: &mut Cx, c: &Codecs, wanted: &BTreeSet<String>) {
    let left = cx.drop_unkept(
        c.others(wanted),
        "Python codec no kept source and not the image config names; keep it with --keep if text is decoded with it",
    );
    if left > 0 {
        cx.question(format!(
            "text is decoded by a charset name chosen at run time (Python codecs): the codecs of {} that the kept sources and the image config name are kept, not the {left} others",
            display(&c.dir)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_the_search_function() {
        assert_eq!(normalize("ISO-8859-1"), "iso_8859_1");
        assert_eq!(normalize("  Shift JIS "), "shift_jis");
        assert_eq!(normalize("utf-8"), "utf_8");
        assert_eq!(normalize("iso_646.irv:1991"), "iso_646.irv_1991");
        assert_eq!(normalize("--"), "");
    }
}
