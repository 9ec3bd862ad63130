//! Python's codecs, chosen by name at run time (`bytes.decode("cp1252")`,
//! `open(f, encoding="latin-1")`): the `encodings` package's search function imports
//! `encodings.<name>` for the name given, after its alias table. Like iconv's gconv modules
//! (`libc.rs`), the codecs kept are those some kept source names in a string literal (the
//! `email` package's charset tables name the CJK ones), the image config names
//! (`PYTHONIOENCODING`, `LANG`), and the Unicode family with ASCII and Latin-1; the others are
//! dropped with a reason and an open question.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Result;
use crate::trace::{Cx, join};

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
        let Some(text) = cx.text(&join(dir, "aliases.py"))? else {
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
