//! What the dynamic loader sees of an ELF file: class, machine, PT_INTERP, DT_NEEDED,
//! DT_RPATH, DT_RUNPATH, DT_SONAME, and the FDO `.note.dlopen` sonames. Parsed with goblin's
//! program-header path (works without section headers); dynamic strings are read by hand
//! from the string table as bytes, bounded, so one odd symbol name cannot fail the file.
//! Any panic inside the parser is caught and reported as a malformed file.
//!
//! Beyond the loader's view, two facts feed the evidence rules: the symbols the object imports
//! (undefined dynamic symbols, with their version: `localtime@GLIBC_2.2.5`), and the path-like
//! strings of its read-only data (`/etc/nginx/nginx.conf`, a configure line's
//! `--conf-path=/etc/…`), both bounded.

use goblin::container::{Container, Ctx};
use goblin::elf::dynamic::{DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, Dynamic};
use goblin::elf::program_header::{PF_X, PT_INTERP, PT_LOAD, PT_NOTE, ProgramHeader};
use goblin::elf::section_header::{
    SHF_ALLOC, SHF_EXECINSTR, SHT_DYNSYM, SHT_PROGBITS, SectionHeader,
};

pub const NOTE_DLOPEN_TYPE: u32 = 0x407c_0c0a;

pub use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfFacts {
    pub is_64: bool,
    pub little_endian: bool,
    pub machine: u16,
    /// `e_flags` (the float ABI on RISC-V, for the ld.so cache flavour).
    pub flags: u32,
    pub osabi: u8,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    pub soname: Option<String>,
    /// Sonames from `.note.dlopen` (FDO) notes.
    pub dlopen: Vec<String>,
    /// Has a PT_DYNAMIC segment.
    pub dynamic: bool,
    /// Undefined dynamic symbols (what the object imports), sorted by name.
    pub imports: Vec<Import>,
    /// Absolute-path-like tokens found in the read-only data (deduplicated, bounded).
    pub strings: Vec<String>,
    /// Short word-like tokens of the read-only data (charset names, program names), collected
    /// only from objects that import `iconv_open`, run programs (`exec*`, `posix_spawn*`) or
    /// import Python modules by name (`PyImport_*`) (bounded).
    pub words: Vec<String>,
}

/// Calls that convert between charsets named by a string (iconv, and the libraries wrapping it:
/// libunistring, GLib): an object importing one names its charsets in its read-only data.
/// Imports that select a locale: their objects' words say which locale they name themselves
/// (Python's C-locale coercion names `C.UTF-8`).
pub const LOCALE_CALLS: &[&str] = &["setlocale", "newlocale"];

pub const CHARSET_CALLS: &[&str] = &[
    "iconv_open",
    "u8_conv_from_encoding",
    "u8_conv_to_encoding",
    "u8_strconv_from_encoding",
    "u8_strconv_to_encoding",
    "u16_strconv_from_encoding",
    "u16_strconv_to_encoding",
    "u32_strconv_from_encoding",
    "u32_strconv_to_encoding",
    "str_iconv",
    "mem_iconveh",
    "str_iconveh",
    "g_convert",
    "g_iconv_open",
];

/// One imported symbol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Import {
    pub name: String,
    /// The version it is bound to (`GLIBC_2.2.5`), when the object says.
    pub version: Option<String>,
}

impl std::fmt::Display for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// At most this many path tokens, words and imports are kept per object.
pub const MAX_STRINGS: usize = 65_536;
/// Longest path token kept.
const MAX_TOKEN: usize = 1024;

impl ElfFacts {
    /// Bytes it holds, roughly (what a cache of facts counts against its budget).
    pub fn footprint(&self) -> usize {
        let strs = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        std::mem::size_of::<Self>()
            + strs(&self.needed)
            + strs(&self.rpath)
            + strs(&self.runpath)
            + strs(&self.dlopen)
            + strs(&self.strings)
            + strs(&self.words)
            + (self.imports.iter())
                .map(|i| i.name.len() + i.version.as_ref().map_or(0, |v| v.len()) + 48)
                .sum::<usize>()
            + self.interpreter.as_ref().map_or(0, |s| s.len())
            + self.soname.as_ref().map_or(0, |s| s.len())
    }

    /// Whether `other` can be loaded into a process of this object (class, byte order, machine).
    pub fn compatible(&self, other: &ElfFacts) -> bool {
        self.is_64 == other.is_64
            && self.little_endian == other.little_endian
            && self.machine == other.machine
            && matches!(other.osabi, 0 | 3)
    }

    /// The import of this name, if any.
    pub fn import(&self, name: &str) -> Option<&Import> {
        self.imports
            .binary_search_by(|i| i.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.imports[i])
    }
}

pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..4] == *b"\x7fELF"
}

/// Parse the loader's view of an ELF file. Never panics.
pub fn parse(bytes: &[u8]) -> Result<ElfFacts, String> {
    match std::panic::catch_unwind(|| parse_inner(bytes)) {
        Ok(r) => r,
        Err(_) => Err("the ELF parser failed on this file".to_string()),
    }
}

fn parse_inner(bytes: &[u8]) -> Result<ElfFacts, String> {
    if !is_elf(bytes) {
        return Err("not an ELF file".into());
    }
    let header = goblin::elf::Elf::parse_header(bytes).map_err(|e| e.to_string())?;
    let container = header.container().map_err(|e| e.to_string())?;
    let endian = header.endianness().map_err(|e| e.to_string())?;
    let ctx = Ctx::new(container, endian);
    let phdrs = ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)
        .map_err(|e| format!("program headers: {e}"))?;
    let mut facts = ElfFacts {
        is_64: container == Container::Big,
        little_endian: endian.is_little(),
        machine: header.e_machine,
        flags: header.e_flags,
        osabi: header.e_ident[goblin::elf::header::EI_OSABI],
        ..Default::default()
    };
    for ph in &phdrs {
        if ph.p_type == PT_INTERP {
            let raw = slice(bytes, ph.p_offset, ph.p_filesz).ok_or("PT_INTERP outside the file")?;
            let s = cstr(raw);
            facts.interpreter =
                Some(String::from_utf8(s.to_vec()).map_err(|_| "PT_INTERP is not UTF-8")?);
        }
        if ph.p_type == PT_NOTE
            && let Some(raw) = slice(bytes, ph.p_offset, ph.p_filesz)
        {
            collect_dlopen_notes(raw, ph.p_align, endian.is_little(), &mut facts.dlopen);
        }
    }
    if let Some(dynamic) =
        Dynamic::parse(bytes, &phdrs, ctx).map_err(|e| format!("dynamic section: {e}"))?
    {
        facts.dynamic = true;
        let strtab = dynamic.info.strtab;
        let strsz = dynamic.info.strsz;
        let table = bytes
            .get(strtab..strtab.saturating_add(strsz).min(bytes.len()))
            .unwrap_or(&[]);
        let get = |off: u64| -> Result<String, String> {
            let off = usize::try_from(off).map_err(|_| "string offset too large")?;
            let raw = table
                .get(off..)
                .ok_or("dynamic string outside the string table")?;
            String::from_utf8(cstr(raw).to_vec())
                .map_err(|_| "dynamic string is not UTF-8".to_string())
        };
        for d in &dynamic.dyns {
            match d.d_tag {
                DT_NEEDED => facts.needed.push(get(d.d_val)?),
                DT_SONAME => facts.soname = Some(get(d.d_val)?),
                DT_RPATH => facts.rpath.extend(split_path(&get(d.d_val)?)),
                DT_RUNPATH => facts.runpath.extend(split_path(&get(d.d_val)?)),
                _ => {}
            }
        }
    }
    facts.dlopen.sort();
    facts.dlopen.dedup();
    // Section headers are optional (stripped or hand-made files): without them the dynamic
    // segment and the program headers answer.
    let shdrs = SectionHeader::parse(bytes, header.e_shoff as usize, header.e_shnum as usize, ctx)
        .unwrap_or_default();
    if let Some(dynamic) = Dynamic::parse(bytes, &phdrs, ctx).ok().flatten() {
        facts.imports = imports(bytes, &dynamic, &shdrs, ctx, header.e_machine);
    }
    let want_words = CHARSET_CALLS.iter().any(|s| facts.import(s).is_some())
        || LOCALE_CALLS.iter().any(|s| facts.import(s).is_some())
        || [
            "execv",
            "execve",
            "execl",
            "execle",
            "execvp",
            "execlp",
            "execvpe",
            "posix_spawn",
            "posix_spawnp",
            "fexecve",
            // A Python extension module importing others by name (Cython, pyo3, cffi).
            "PyImport_Import",
            "PyImport_ImportModule",
            "PyImport_ImportModuleLevel",
            "PyImport_ImportModuleLevelObject",
            // A Ruby C extension requiring Ruby files by name (psych's `psych/syntax_error`).
            "rb_require",
            "rb_require_string",
        ]
        .iter()
        .any(|s| facts.import(s).is_some());
    let (strings, words) = data_strings(
        bytes,
        &phdrs,
        &shdrs,
        header.e_shstrndx as usize,
        want_words,
    );
    facts.strings = strings;
    facts.words = words;
    Ok(facts)
}

/// Undefined dynamic symbols, with the version each is bound to (`.gnu.version` and
/// `.gnu.version_r`, found through the dynamic segment).
fn imports(
    bytes: &[u8],
    dynamic: &Dynamic,
    shdrs: &[SectionHeader],
    ctx: Ctx,
    machine: u16,
) -> Vec<Import> {
    let info = &dynamic.info;
    let little = ctx.le.is_little();
    let rd16 = |off: usize| -> Option<u16> {
        let b = bytes.get(off..off.checked_add(2)?)?;
        Some(if little {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let rd32 = |off: usize| -> Option<u32> {
        let b = bytes.get(off..off.checked_add(4)?)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let strtab = bytes
        .get(info.strtab..info.strtab.saturating_add(info.strsz).min(bytes.len()))
        .unwrap_or(&[]);
    let name_at = |off: usize| -> Option<String> {
        let raw = strtab.get(off..)?;
        let s = cstr(raw);
        (!s.is_empty() && s.len() <= 1024)
            .then(|| String::from_utf8(s.to_vec()).ok())
            .flatten()
    };
    let entsize = if ctx.container.is_big() { 24 } else { 16 };
    // The number of symbols: the .dynsym section when there are section headers, else the
    // hash tables.
    let count = shdrs
        .iter()
        .find(|s| s.sh_type == SHT_DYNSYM && s.sh_entsize > 0)
        .map(|s| (s.sh_size / s.sh_entsize) as usize)
        .or_else(|| {
            if let Some(h) = info.gnu_hash {
                gnu_hash_count(h as usize, ctx.container.is_big(), &rd32)
            } else {
                let h = info.hash? as usize;
                if machine == EM_S390 && ctx.container.is_big() {
                    return None;
                }
                rd32(h.checked_add(4)?).map(|n| n as usize)
            }
        })
        .unwrap_or(0);
    // Bound by the file: a count past the end is a lie.
    let count = count.min(bytes.len().saturating_sub(info.symtab) / entsize);
    let Ok(syms) = goblin::elf::Symtab::parse(bytes, info.symtab, count, ctx) else {
        return Vec::new();
    };
    // Version index → name, from the version-needed records.
    let mut versions: std::collections::HashMap<u16, String> = std::collections::HashMap::new();
    let mut off = info.verneed as usize;
    for _ in 0..(info.verneednum as usize).min(4096) {
        if off == 0 {
            break;
        }
        let (Some(cnt), Some(aux), Some(next)) = (rd16(off + 2), rd32(off + 8), rd32(off + 12))
        else {
            break;
        };
        let mut a = off.saturating_add(aux as usize);
        for _ in 0..cnt.min(4096) {
            let (Some(other), Some(name), Some(anext)) = (rd16(a + 6), rd32(a + 8), rd32(a + 12))
            else {
                break;
            };
            if let Some(n) = name_at(name as usize) {
                versions.insert(other & 0x7fff, n);
            }
            if anext == 0 {
                break;
            }
            a = a.saturating_add(anext as usize);
        }
        if next == 0 {
            break;
        }
        off = off.saturating_add(next as usize);
    }
    let mut out = Vec::new();
    for (i, sym) in syms.iter().enumerate() {
        if out.len() >= MAX_STRINGS {
            break;
        }
        if sym.st_shndx != 0 || sym.st_name == 0 {
            continue;
        }
        let Some(name) = name_at(sym.st_name) else {
            continue;
        };
        let version = (info.versym != 0)
            .then(|| rd16((info.versym as usize).checked_add(i * 2)?))
            .flatten()
            .and_then(|v| versions.get(&(v & 0x7fff)).cloned());
        out.push(Import { name, version });
    }
    out.sort();
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// Number of dynamic symbols from a DT_GNU_HASH table (the last chain's end).
fn gnu_hash_count(off: usize, big: bool, rd32: &dyn Fn(usize) -> Option<u32>) -> Option<usize> {
    let nbuckets = rd32(off)? as usize;
    let symoffset = rd32(off + 4)? as usize;
    let bloom = rd32(off + 8)? as usize;
    if nbuckets == 0 || nbuckets > 1 << 24 || bloom > 1 << 24 {
        return None;
    }
    let buckets =
        off.checked_add(16)?
            .checked_add(bloom.checked_mul(if big { 8 } else { 4 })?)?;
    let mut last = 0usize;
    for b in 0..nbuckets {
        last = last.max(rd32(buckets + b * 4)? as usize);
    }
    if last < symoffset {
        return Some(symoffset);
    }
    let chains = buckets + nbuckets * 4;
    let mut i = last;
    for _ in 0..(1 << 24) {
        let h = rd32(chains.checked_add((i - symoffset).checked_mul(4)?)?)?;
        i += 1;
        if h & 1 != 0 {
            return Some(i);
        }
    }
    None
}

/// The read-only data: allocated, non-executable PROGBITS sections (`.rodata`, `.data`, …), or,
/// without section headers, the non-executable PT_LOAD segments.
fn data_ranges(
    bytes: &[u8],
    phdrs: &[ProgramHeader],
    shdrs: &[SectionHeader],
    shstrndx: usize,
) -> Vec<(usize, usize)> {
    let names = shdrs.get(shstrndx).and_then(|s| {
        bytes.get(
            s.sh_offset as usize..(s.sh_offset.saturating_add(s.sh_size) as usize).min(bytes.len()),
        )
    });
    let mut out = Vec::new();
    for s in shdrs {
        if s.sh_type != SHT_PROGBITS
            || s.sh_flags & u64::from(SHF_ALLOC) == 0
            || s.sh_flags & u64::from(SHF_EXECINSTR) != 0
        {
            continue;
        }
        let name = names
            .and_then(|n| n.get(s.sh_name..))
            .map(cstr)
            .unwrap_or(b"");
        // Tables of addresses and unwind data hold no strings.
        if name.starts_with(b".eh_frame")
            || name.starts_with(b".got")
            || name.starts_with(b".init_array")
            || name.starts_with(b".fini_array")
            || name == b".gcc_except_table"
            || name == b".interp"
        {
            continue;
        }
        out.push((s.sh_offset as usize, s.sh_size as usize));
    }
    if out.is_empty() {
        for ph in phdrs {
            if ph.p_type == PT_LOAD && ph.p_flags & PF_X == 0 {
                out.push((ph.p_offset as usize, ph.p_filesz as usize));
            }
        }
    }
    out.retain_mut(|(o, l)| {
        *l = (*l).min(bytes.len().saturating_sub(*o));
        *l > 0
    });
    out
}

/// Whether a string is a build's configure line (several `--option=` or `'VAR=…'` words).
fn is_configure_line(run: &[u8]) -> bool {
    // Most runs are short or have no quote: the cheap tests first (this runs on every string
    // of every traced object).
    if run.len() < 9 {
        return false;
    }
    if memchr::memchr(b'\'', run).is_none() {
        return memchr::memmem::find(run, b"--prefix=").is_some();
    }
    let text = String::from_utf8_lossy(run);
    text.contains("--prefix=")
        || text.matches(" '--").count() >= 2
        || text.matches("' '").count() >= 3
}

/// Path tokens (and, when asked, short words) of the read-only data. A printable run is split
/// at whitespace, quotes, `:`, `;`, `,` and `=`; a token that starts with `/` is a path
/// candidate (`%` formats and `$` variables are left out).
///
/// The data is cut into pieces of about [`SCAN_PIECE`] bytes at a non-printable byte (no run
/// spans two pieces), scanned on all cores, and their tokens taken in order, each piece's
/// first occurrences only: what a piece holds decides what it gives, so the result is the
/// same on any number of threads.
fn data_strings(
    bytes: &[u8],
    phdrs: &[ProgramHeader],
    shdrs: &[SectionHeader],
    shstrndx: usize,
    want_words: bool,
) -> (Vec<String>, Vec<String>) {
    let ranges = data_ranges(bytes, phdrs, shdrs, shstrndx);
    let pieces = pieces(bytes, &ranges);
    let found = scan_all(&pieces, want_words);
    let mut paths = std::collections::BTreeSet::new();
    let mut words = std::collections::BTreeSet::new();
    for f in found.into_iter().flatten() {
        if f.path && paths.len() < MAX_STRINGS {
            paths.insert(f.text);
        } else if want_words && f.word && words.len() < MAX_STRINGS {
            words.insert(f.text);
        }
    }
    (paths.into_iter().collect(), words.into_iter().collect())
}

/// Bytes of read-only data one thread scans at a time (a runtime's library has tens of MB).
const SCAN_PIECE: usize = 4 << 20;

fn printable(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b == b'\t'
}

/// The ranges cut into pieces of about [`SCAN_PIECE`] bytes, each cut at a non-printable byte.
fn pieces<'a>(bytes: &'a [u8], ranges: &[(usize, usize)]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for &(off, len) in ranges {
        let mut data = &bytes[off..off + len];
        while data.len() > SCAN_PIECE {
            let Some(k) = data[SCAN_PIECE..].iter().position(|&b| !printable(b)) else {
                break;
            };
            let (head, tail) = data.split_at(SCAN_PIECE + k);
            out.push(head);
            data = tail;
        }
        out.push(data);
    }
    out
}

/// Every piece's tokens, in piece order, scanned on all cores (a panic is passed on to
/// `parse`'s guard).
fn scan_all(pieces: &[&[u8]], want_words: bool) -> Vec<Vec<Found>> {
    crate::par::map(pieces, crate::par::cores(), |p| scan_piece(p, want_words))
}

/// A token of the data, and what it may be (a path, a word), before any count bounds it.
struct Found {
    text: String,
    path: bool,
    word: bool,
}

/// Most tokens one piece gives (each set keeps at most [`MAX_STRINGS`] in all).
const PIECE_TOKENS: usize = 2 * MAX_STRINGS;

/// One piece's tokens that may be paths or words, first occurrences only, in order.
fn scan_piece<'a>(data: &'a [u8], want_words: bool) -> Vec<Found> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut give = |tok: &'a [u8], path: bool, word: bool, out: &mut Vec<Found>| {
        if (path || word) && out.len() < PIECE_TOKENS && seen.insert((tok, path, word)) {
            out.push(Found {
                text: String::from_utf8_lossy(tok).into_owned(),
                path,
                word,
            });
        }
    };
    for run in data.split(|&b| !printable(b)) {
        // A path has a `/`; a run without one only matters for its words.
        if run.len() < 2 || (!want_words && memchr::memchr(b'/', run).is_none()) {
            continue;
        }
        // A configure line (`'--prefix=/usr' 'PROVE=/usr/bin/prove' …`): only its path
        // options name what the program uses; `VAR=/path` names build tools.
        if is_configure_line(run) {
            for w in run.split(|&b| matches!(b, b' ' | b'\t' | b'\'' | b'"')) {
                let Some(eq) = w.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (k, v) = (&w[..eq], &w[eq + 1..]);
                let key = String::from_utf8_lossy(k);
                let path = key.starts_with("--")
                    && ["path", "dir", "prefix", "root", "file"]
                        .iter()
                        .any(|s| key.ends_with(s))
                    && v.first() == Some(&b'/')
                    && v.len() <= MAX_TOKEN;
                give(v, path, false, &mut out);
            }
            continue;
        }
        for tok in run.split(|&b| {
            matches!(
                b,
                b' ' | b'\t'
                    | b'"'
                    | b'\''
                    | b':'
                    | b';'
                    | b','
                    | b'='
                    | b'('
                    | b')'
                    | b'<'
                    | b'>'
                    | b'['
                    | b']'
                    | b'{'
                    | b'}'
                    | b'`'
            )
        }) {
            // Absolute paths, and paths relative to the install prefix
            // (`share/git-core/templates`): the path rule resolves those against the
            // object's prefix.
            let relative = [&b"share/"[..], b"lib/", b"libexec/", b"etc/"]
                .iter()
                .any(|p| tok.starts_with(p))
                && tok.len() > 8
                && tok.iter().all(|&b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'+')
                });
            let path = tok.len() >= 2
                && tok.len() <= MAX_TOKEN
                && (tok[0] == b'/' || relative)
                && !tok.iter().any(|&b| matches!(b, b'%' | b'$' | b'*' | b'?'));
            let word = want_words
                && (2..=40).contains(&tok.len())
                && tok
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
                && tok.iter().any(|b| b.is_ascii_alphabetic());
            give(tok, path, word, &mut out);
        }
    }
    out
}

fn split_path(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn slice(bytes: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    bytes.get(off..off.checked_add(len)?)
}

fn cstr(raw: &[u8]) -> &[u8] {
    match raw.iter().position(|&b| b == 0) {
        Some(i) => &raw[..i],
        None => raw,
    }
}

/// Walk a PT_NOTE segment for FDO dlopen notes; their payload is JSON:
/// `[{"soname": ["libfoo.so.1"], "feature": ..., "priority": ...}, ...]`.
fn collect_dlopen_notes(seg: &[u8], align: u64, little: bool, out: &mut Vec<String>) {
    let align = if align == 8 { 8 } else { 4 };
    let rd = |b: &[u8]| -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let pad = |n: usize| n.div_ceil(align) * align;
    let mut off = 0usize;
    while off + 12 <= seg.len() {
        let namesz = rd(&seg[off..]) as usize;
        let descsz = rd(&seg[off + 4..]) as usize;
        let ntype = rd(&seg[off + 8..]);
        let name_start = off + 12;
        let Some(desc_start) = name_start.checked_add(pad(namesz)) else {
            return;
        };
        let Some(end) = desc_start.checked_add(pad(descsz)) else {
            return;
        };
        let (Some(name), Some(desc)) = (
            seg.get(name_start..name_start + namesz),
            seg.get(desc_start..desc_start.saturating_add(descsz)),
        ) else {
            return;
        };
        if cstr(name) == b"FDO"
            && ntype == NOTE_DLOPEN_TYPE
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(cstr(desc))
        {
            for item in v.as_array().into_iter().flatten() {
                for s in item
                    .get("soname")
                    .and_then(|s| s.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(s) = s.as_str() {
                        out.push(s.to_string());
                    }
                }
            }
        }
        if end <= off {
            return;
        }
        off = end;
    }
}

/// The multiarch triplet Debian uses for a machine (for `/lib/<triplet>` default dirs).
pub fn multiarch_triplet(machine: u16, is_64: bool) -> Option<&'static str> {
    Some(match (machine, is_64) {
        (EM_X86_64, true) => "x86_64-linux-gnu",
        (EM_386, false) => "i386-linux-gnu",
        (EM_AARCH64, true) => "aarch64-linux-gnu",
        (EM_ARM, false) => "arm-linux-gnueabihf",
        (EM_PPC64, true) => "powerpc64le-linux-gnu",
        (EM_S390, true) => "s390x-linux-gnu",
        (EM_RISCV, true) => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// `$PLATFORM` for a machine.
pub fn platform_string(machine: u16) -> &'static str {
    match machine {
        EM_X86_64 => "x86_64",
        EM_386 => "i686",
        EM_AARCH64 => "aarch64",
        EM_ARM => "v7l",
        EM_PPC64 => "power9",
        EM_S390 => "z900",
        EM_RISCV => "riscv64",
        _ => "unknown",
    }
}

/// glibc-hwcaps subdirectory names probed before each search directory.
pub fn hwcaps_dirs(machine: u16) -> &'static [&'static str] {
    match machine {
        EM_X86_64 => &["x86-64-v4", "x86-64-v3", "x86-64-v2"],
        EM_PPC64 => &["power11", "power10", "power9"],
        EM_S390 => &["z17", "z16", "z15", "z14", "z13"],
        EM_RISCV => &["rva23u64", "rva20u64"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens as the merge takes them (no bound reached).
    fn merged(found: Vec<Vec<Found>>) -> (Vec<String>, Vec<String>) {
        let mut paths = std::collections::BTreeSet::new();
        let mut words = std::collections::BTreeSet::new();
        for f in found.into_iter().flatten() {
            if f.path {
                paths.insert(f.text);
            } else if f.word {
                words.insert(f.text);
            }
        }
        (paths.into_iter().collect(), words.into_iter().collect())
    }

    #[test]
    fn data_cut_into_pieces_gives_the_tokens_of_one_scan() {
        // ~10 MiB of strings, NUL-separated and in runs longer than a line, with paths
        // that repeat across the cut points.
        let mut data = Vec::new();
        let mut i = 0u32;
        while data.len() < 10 << 20 {
            data.extend_from_slice(
                format!(
                    "/usr/lib/mod{} word{} /etc/app/{}.conf:value ",
                    i % 5000,
                    i % 777,
                    i % 20000
                )
                .as_bytes(),
            );
            if i.is_multiple_of(3) {
                data.push(0);
            }
            i += 1;
        }
        let whole = [(0usize, data.len())];
        let cut = pieces(&data, &whole);
        assert!(cut.len() >= 2, "{} pieces", cut.len());
        assert_eq!(cut.iter().map(|p| p.len()).sum::<usize>(), data.len());
        // Every cut falls on a non-printable byte: no run is split.
        for p in &cut[1..] {
            assert!(!printable(p[0]));
        }
        let one = merged(vec![scan_piece(&data, true)]);
        let many = merged(scan_all(&cut, true));
        assert!(
            one == many,
            "{} + {} tokens vs {} + {}",
            one.0.len(),
            one.1.len(),
            many.0.len(),
            many.1.len()
        );
        assert!(one.0.iter().any(|p| p == "/etc/app/12345.conf"));
        assert!(one.1.iter().any(|w| w == "word776"));
    }

    #[test]
    fn parses_real_binaries() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        let f = parse(&bytes).unwrap();
        assert!(f.interpreter.as_deref().unwrap().contains("ld-linux"));
        assert!(f.needed.iter().any(|n| n == "libc.so.6"), "{f:?}");
        let libc = std::fs::read(std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap())
            .unwrap();
        let l = parse(&libc).unwrap();
        assert_eq!(l.soname.as_deref(), Some("libc.so.6"));
        assert!(f.compatible(&l));
    }

    #[test]
    fn imports_and_strings_of_real_binaries() {
        let date = parse(&std::fs::read("/usr/bin/date").unwrap()).unwrap();
        let lt = date.import("localtime").expect("date imports localtime");
        assert!(lt.version.as_deref().unwrap().starts_with("GLIBC_"), "{lt}");
        assert!(date.import("printf_nonexistent").is_none());
        let getent = parse(&std::fs::read("/usr/bin/getent").unwrap()).unwrap();
        assert!(getent.import("getaddrinfo").is_some());
        // Compiled-in paths of the read-only data.
        let libc = std::fs::read(std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap())
            .unwrap();
        let l = parse(&libc).unwrap();
        assert!(
            l.strings.iter().any(|s| s == "/etc/nsswitch.conf"),
            "{:?}",
            &l.strings[..20.min(l.strings.len())]
        );
        assert!(l.words.is_empty(), "libc does not import iconv_open");
        let iconv = parse(&std::fs::read("/usr/bin/iconv").unwrap()).unwrap();
        assert!(iconv.import("iconv_open").is_some());
        assert!(!iconv.words.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in 0..3000 {
            let mut b = bytes[..bytes.len().min(8192 + i)].to_vec();
            for _ in 0..(i % 8 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pos = (seed as usize) % b.len();
                b[pos] = (seed >> 32) as u8;
            }
            let _ = parse(&b);
        }
        assert!(parse(b"\x7fELF").is_err());
        assert!(parse(b"#!/bin/sh").is_err());
    }

    #[test]
    fn dlopen_note_payload() {
        let json = br#"[{"soname":["libfoo.so.1","libfoo.so.0"],"priority":"required"}]"#;
        let mut desc = json.to_vec();
        desc.push(0);
        let mut seg = Vec::new();
        seg.extend_from_slice(&4u32.to_le_bytes());
        seg.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        seg.extend_from_slice(&NOTE_DLOPEN_TYPE.to_le_bytes());
        seg.extend_from_slice(b"FDO\0");
        seg.extend_from_slice(&desc);
        while seg.len() % 4 != 0 {
            seg.push(0);
        }
        let mut out = vec![];
        collect_dlopen_notes(&seg, 4, true, &mut out);
        assert_eq!(out, vec!["libfoo.so.1", "libfoo.so.0"]);
    }
}
