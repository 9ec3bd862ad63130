//! Writing and reading glibc's `/etc/ld.so.cache`.
//!
//! The hardened image may keep libraries that live in directories which are
//! only listed in `/etc/ld.so.conf(.d)` (for example `/usr/local/lib` or
//! `/opt/x/lib`).  glibc's dynamic loader finds those only through
//! `/etc/ld.so.cache`, so pare writes a fresh cache for the new image itself,
//! without running `ldconfig` (the image may be for another architecture).
//!
//! [`build_cache`] emits the "new" format (`glibc-ld.so.cache1.1`, the only
//! format ldconfig writes by default since glibc 2.32 and one that every
//! glibc since 2.2 reads).  The layout follows glibc's
//! `sysdeps/generic/dl-cache.h`:
//!
//! ```text
//! struct cache_file_new {            // 48 bytes
//!     char     magic[17];            // "glibc-ld.so.cache"
//!     char     version[3];           // "1.1"
//!     uint32_t nlibs;
//!     uint32_t len_strings;
//!     uint8_t  flags;                // endianness: 2 = little, 3 = big
//!     uint8_t  padding_unsed[3];
//!     uint32_t extension_offset;     // 0 = no extensions
//!     uint32_t unused[3];
//!     struct file_entry_new libs[nlibs];
//! };                                 // followed by the string table
//! struct file_entry_new {            // 24 bytes
//!     int32_t  flags;                // FLAG_ELF_LIBC6 | arch flag
//!     uint32_t key, value;           // string offsets from the start of
//!                                    // the cache_file_new header
//!     uint32_t osversion;
//!     uint64_t hwcap;
//! };
//! ```
//!
//! The dynamic loader binary-searches the entries with `_dl_cache_libcmp`
//! (which compares runs of digits numerically), so entries are sorted exactly
//! as ldconfig's `compare` in `elf/cache.c` sorts them: by `_dl_cache_libcmp`
//! in reverse order.  Output is deterministic: the same input always gives
//! the same bytes.
//!
//! [`parse_cache`] reads new-format-only files, old `ld.so-1.7.0` files and
//! the old+new "compat" combination, and never panics on malformed input.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use goblin::elf::header::{EM_386, EM_AARCH64, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64};

/// Magic of the old (libc5 / glibc 2.0) format.
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
/// `sizeof (struct cache_file)`: 11-byte magic, padding, `unsigned int nlibs`.
const OLD_HEADER_LEN: usize = 16;
/// `sizeof (struct file_entry)`.
const OLD_ENTRY_LEN: usize = 12;

/// `CACHEMAGIC_NEW CACHE_VERSION`.
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
/// `sizeof (struct cache_file_new)`.
const NEW_HEADER_LEN: usize = 48;
/// `sizeof (struct file_entry_new)`.
const NEW_ENTRY_LEN: usize = 24;
/// Offset of `cache_file_new.flags`.
const NEW_FLAGS_OFFSET: usize = 28;

const ENDIAN_UNSET: u8 = 0;
#[cfg(test)]
const ENDIAN_INVALID: u8 = 1;
const ENDIAN_LITTLE: u8 = 2;
const ENDIAN_BIG: u8 = 3;
const ENDIAN_MASK: u8 = 3;

/// `FLAG_ELF_LIBC6` from glibc's `sysdeps/generic/ldconfig.h`.
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
/// `FLAG_X8664_LIB64`.
pub const FLAG_X8664_LIB64: i32 = 0x0300;
/// `FLAG_S390_LIB64`.
pub const FLAG_S390_LIB64: i32 = 0x0400;
/// `FLAG_POWERPC_LIB64`.
pub const FLAG_POWERPC_LIB64: i32 = 0x0500;
/// `FLAG_X8664_LIBX32`.
pub const FLAG_X8664_LIBX32: i32 = 0x0800;
/// `FLAG_AARCH64_LIB64`.
pub const FLAG_AARCH64_LIB64: i32 = 0x0a00;
/// `FLAG_RISCV_FLOAT_ABI_SOFT`.
pub const FLAG_RISCV_FLOAT_ABI_SOFT: i32 = 0x0f00;
/// `FLAG_RISCV_FLOAT_ABI_DOUBLE`.
pub const FLAG_RISCV_FLOAT_ABI_DOUBLE: i32 = 0x1000;

/// One library: its DT_SONAME (or file name) and the absolute path in the
/// image where ld.so should open it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheEntry {
    pub soname: String,
    pub path: String,
}

/// Machine the cache is for (from the ELF `e_machine`/class of the
/// libraries).  Determines the entry flags ld.so accepts
/// (`_dl_cache_check_flags`), the byte order of the file, and the `char`
/// signedness `_dl_cache_libcmp` sorts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheArch {
    /// x86-64 (`FLAG_ELF_LIBC6 | FLAG_X8664_LIB64` = 0x303), little-endian.
    X86_64,
    /// AArch64 LP64 (`FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64` = 0xa03),
    /// little-endian.
    Aarch64,
    /// i386 (`FLAG_ELF_LIBC6` = 0x003), little-endian.
    I386,
    /// 64-bit little-endian PowerPC (`FLAG_ELF_LIBC6 | FLAG_POWERPC_LIB64`
    /// = 0x503; ldconfig's powerpc `readelflib.c` forces this for all
    /// ELFCLASS64 libraries).
    Ppc64le,
    /// s390x (`_DL_CACHE_DEFAULT_ID` 0x403), big-endian.
    S390x,
    /// riscv64 with the lp64d ABI (`FLAG_ELF_LIBC6 |
    /// FLAG_RISCV_FLOAT_ABI_DOUBLE` = 0x1003), little-endian.
    Riscv64,
    /// Any other little-endian target, with the raw `flags` value ld.so
    /// expects (`_DL_CACHE_DEFAULT_ID`).  Sorting assumes a signed `char`.
    Other { flags: i32 },
}

impl CacheArch {
    /// The `file_entry_new.flags` value written for every entry.
    pub fn flags(self) -> i32 {
        match self {
            CacheArch::X86_64 => FLAG_ELF_LIBC6 | FLAG_X8664_LIB64,
            CacheArch::Aarch64 => FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64,
            CacheArch::I386 => FLAG_ELF_LIBC6,
            CacheArch::Ppc64le => FLAG_ELF_LIBC6 | FLAG_POWERPC_LIB64,
            CacheArch::S390x => FLAG_ELF_LIBC6 | FLAG_S390_LIB64,
            CacheArch::Riscv64 => FLAG_ELF_LIBC6 | FLAG_RISCV_FLOAT_ABI_DOUBLE,
            CacheArch::Other { flags } => flags,
        }
    }

    /// Whether the cache file must be written big-endian (ld.so maps it and
    /// reads it natively).
    pub fn is_big_endian(self) -> bool {
        matches!(self, CacheArch::S390x)
    }

    /// Whether plain `char` is signed on the target, which decides how
    /// `_dl_cache_libcmp` orders bytes >= 0x80.
    fn char_is_signed(self) -> bool {
        matches!(
            self,
            CacheArch::X86_64 | CacheArch::I386 | CacheArch::Other { .. }
        )
    }

    /// Pick the cache flavour for a library from its ELF header fields.
    ///
    /// Returns `None` for targets this module cannot describe (big-endian
    /// variants other than s390x, 32-bit targets other than i386/x32, …).
    pub fn from_elf(
        e_machine: u16,
        is_64: bool,
        little_endian: bool,
        e_flags: u32,
    ) -> Option<Self> {
        /// `EF_RISCV_FLOAT_ABI` mask and values from the RISC-V psABI.
        const EF_RISCV_FLOAT_ABI: u32 = 0x6;
        const EF_RISCV_FLOAT_ABI_SOFT: u32 = 0x0;
        const EF_RISCV_FLOAT_ABI_DOUBLE: u32 = 0x4;
        match (e_machine, is_64, little_endian) {
            (EM_X86_64, true, true) => Some(CacheArch::X86_64),
            (EM_X86_64, false, true) => Some(CacheArch::Other {
                flags: FLAG_ELF_LIBC6 | FLAG_X8664_LIBX32,
            }),
            (EM_AARCH64, true, true) => Some(CacheArch::Aarch64),
            (EM_386, false, true) => Some(CacheArch::I386),
            (EM_PPC64, true, true) => Some(CacheArch::Ppc64le),
            (EM_S390, true, false) => Some(CacheArch::S390x),
            (EM_RISCV, true, true) => match e_flags & EF_RISCV_FLOAT_ABI {
                EF_RISCV_FLOAT_ABI_DOUBLE => Some(CacheArch::Riscv64),
                // Soft-float riscv64 is little-endian and, like lp64d, has an
                // unsigned char; only the flags differ.  `Other` assumes a
                // signed char, which only matters for non-ASCII sonames.
                EF_RISCV_FLOAT_ABI_SOFT => Some(CacheArch::Other {
                    flags: FLAG_ELF_LIBC6 | FLAG_RISCV_FLOAT_ABI_SOFT,
                }),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One entry read back from a cache file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParsedEntry {
    pub soname: String,
    pub path: String,
    /// `FLAG_*` bits, e.g. 0x303 for x86-64 libc6 libraries.
    pub flags: i32,
    /// The entry's `hwcap` field (0 for old-format entries).  Entries with
    /// bit 62 set belong to a `glibc-hwcaps` subdirectory.
    pub hwcap: u64,
}

/// Why a byte string is not a usable ld.so.cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdCacheError {
    #[error("ld.so.cache is truncated: {0} bytes is too short")]
    TooShort(usize),
    #[error("not an ld.so.cache file (unknown magic)")]
    BadMagic,
    #[error("ld.so.cache header marks its byte order as invalid")]
    InvalidEndianness,
    #[error("ld.so.cache claims {nlibs} entries, which do not fit in {len} bytes")]
    EntriesOutOfBounds { nlibs: u32, len: usize },
    #[error("ld.so.cache string offset {offset} lies outside the file")]
    StringOutOfBounds { offset: u32 },
    #[error("ld.so.cache string at offset {offset} is not NUL-terminated")]
    UnterminatedString { offset: u32 },
}

/// glibc's `_dl_cache_libcmp` (elf/dl-cache.c) as a total order.
///
/// Strings are compared as sequences of tokens: a maximal run of ASCII
/// digits is one token compared numerically (and greater than any
/// non-digit), every other byte is compared as a C `char` of the target's
/// signedness, and the end of the string behaves like a NUL byte.  Digit
/// runs accumulate in a wrapping 32-bit `int` as in C; glibc then returns
/// `val1 - val2`, which could overflow for absurd (10+ digit) runs, while
/// this compares the values, keeping the order total as `sort_by` requires.
fn dl_cache_libcmp(a: &[u8], b: &[u8], signed_char: bool) -> Ordering {
    let byte = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let as_char = |c: u8| {
        if signed_char {
            i32::from(c as i8)
        } else {
            i32::from(c)
        }
    };
    let digit_run = |s: &[u8], i: &mut usize| {
        let mut v: i32 = 0;
        while byte(s, *i).is_ascii_digit() {
            v = v
                .wrapping_mul(10)
                .wrapping_add(i32::from(byte(s, *i) - b'0'));
            *i += 1;
        }
        v
    };
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        let (c1, c2) = (byte(a, i), byte(b, j));
        if c1 == 0 {
            // `return *p1 - *p2;`
            return as_char(c1).cmp(&as_char(c2));
        }
        if c1.is_ascii_digit() {
            if !c2.is_ascii_digit() {
                return Ordering::Greater;
            }
            let v1 = digit_run(a, &mut i);
            let v2 = digit_run(b, &mut j);
            if v1 != v2 {
                return v1.cmp(&v2);
            }
        } else if c2.is_ascii_digit() {
            return Ordering::Less;
        } else if c1 != c2 {
            return as_char(c1).cmp(&as_char(c2));
        } else {
            i += 1;
            j += 1;
        }
    }
}

/// Offset (from the header start) of `s` in the string table, adding it on
/// first use.
fn intern<'a>(
    s: &'a str,
    strings_base: usize,
    strings: &mut Vec<u8>,
    interned: &mut HashMap<&'a str, u32>,
) -> u32 {
    *interned.entry(s).or_insert_with(|| {
        let off =
            u32::try_from(strings_base + strings.len()).expect("ld.so.cache larger than 4 GiB");
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32, big: bool) {
    out.extend_from_slice(&if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    });
}

fn put_u64(out: &mut Vec<u8>, v: u64, big: bool) {
    out.extend_from_slice(&if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    });
}

/// Build a new-format (`glibc-ld.so.cache1.1`) cache for `entries`.
///
/// * Entries whose soname was already given are dropped (the first wins).
/// * Entries with an empty soname or path, or with a NUL byte in either,
///   cannot be represented and are skipped.
/// * Entries are sorted as ldconfig sorts them, so ld.so's binary search
///   finds every one.
///
/// The result is a pure function of the input: same entries (in the same
/// order, which only matters for duplicate sonames) → same bytes.
///
/// # Panics
///
/// Only if the cache would exceed 4 GiB, which the format cannot express.
pub fn build_cache(entries: &[CacheEntry], arch: CacheArch) -> Vec<u8> {
    let big = arch.is_big_endian();
    let flags = arch.flags();
    let signed_char = arch.char_is_signed();

    let representable = |s: &str| !s.is_empty() && !s.as_bytes().contains(&0);
    let mut seen: HashSet<&str> = HashSet::new();
    let mut kept: Vec<&CacheEntry> = entries
        .iter()
        .filter(|e| representable(&e.soname) && representable(&e.path))
        .filter(|e| seen.insert(e.soname.as_str()))
        .collect();
    // ldconfig's `compare` swaps its arguments: reverse libcmp order.  Its
    // insertion into the sorted list is stable, and so is `sort_by`.
    kept.sort_by(|x, y| dl_cache_libcmp(y.soname.as_bytes(), x.soname.as_bytes(), signed_char));

    let too_big = "ld.so.cache larger than 4 GiB";
    let nlibs = u32::try_from(kept.len()).expect(too_big);
    // String offsets count from the start of the header, so the table starts
    // right after the entries.
    let strings_base = NEW_HEADER_LEN + kept.len() * NEW_ENTRY_LEN;

    let mut strings: Vec<u8> = Vec::new();
    let mut interned: HashMap<&str, u32> = HashMap::new();
    let offsets: Vec<(u32, u32)> = kept
        .iter()
        .map(|e| {
            let key = intern(&e.soname, strings_base, &mut strings, &mut interned);
            let value = intern(&e.path, strings_base, &mut strings, &mut interned);
            (key, value)
        })
        .collect();

    let mut out = Vec::with_capacity(strings_base + strings.len());
    out.extend_from_slice(NEW_MAGIC);
    put_u32(&mut out, nlibs, big);
    put_u32(&mut out, u32::try_from(strings.len()).expect(too_big), big);
    out.push(if big { ENDIAN_BIG } else { ENDIAN_LITTLE });
    out.extend_from_slice(&[0; 3]); // padding_unsed
    put_u32(&mut out, 0, big); // extension_offset: no extensions
    out.extend_from_slice(&[0; 12]); // unused[3]
    debug_assert_eq!(out.len(), NEW_HEADER_LEN);
    for (key, value) in offsets {
        put_u32(&mut out, flags as u32, big);
        put_u32(&mut out, key, big);
        put_u32(&mut out, value, big);
        put_u32(&mut out, 0, big); // osversion
        put_u64(&mut out, 0, big); // hwcap
    }
    debug_assert_eq!(out.len(), strings_base);
    out.extend_from_slice(&strings);
    out
}

/// Bounds-checked little/big-endian reads.
#[derive(Clone, Copy)]
struct Reader<'a> {
    data: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.data.get(off..off.checked_add(N)?)?.try_into().ok()
    }

    fn u32(&self, off: usize) -> Option<u32> {
        let b = self.bytes::<4>(off)?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u64(&self, off: usize) -> Option<u64> {
        let b = self.bytes::<8>(off)?;
        Some(if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }
}

/// NUL-terminated string at `offset` within `table`.
fn read_str(table: &[u8], offset: u32) -> Result<String, LdCacheError> {
    let rest = usize::try_from(offset)
        .ok()
        .and_then(|o| table.get(o..))
        .filter(|r| !r.is_empty())
        .ok_or(LdCacheError::StringOutOfBounds { offset })?;
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(LdCacheError::UnterminatedString { offset })?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Whether `nlibs` entries of `entry_len` bytes fit after `header_len`.
fn entries_fit(len: usize, header_len: usize, entry_len: usize, nlibs: u32) -> bool {
    len >= header_len && (len - header_len) / entry_len >= nlibs as usize
}

/// Parse a `cache_file_new` starting at the beginning of `data`; its string
/// offsets are relative to that start.
fn parse_new(data: &[u8]) -> Result<Vec<ParsedEntry>, LdCacheError> {
    if data.len() < NEW_HEADER_LEN {
        return Err(LdCacheError::TooShort(data.len()));
    }
    let fits = |big: bool| {
        let nlibs = Reader { data, big }
            .u32(NEW_MAGIC.len())
            .unwrap_or(u32::MAX);
        (
            nlibs,
            entries_fit(data.len(), NEW_HEADER_LEN, NEW_ENTRY_LEN, nlibs),
        )
    };
    let big = match data[NEW_FLAGS_OFFSET] & ENDIAN_MASK {
        ENDIAN_LITTLE => false,
        ENDIAN_BIG => true,
        // Written by ldconfig before glibc 2.33: guess from what fits.
        ENDIAN_UNSET => !fits(false).1 && fits(true).1,
        // ENDIAN_INVALID: the cache "is invalid and should be ignored".
        _ => return Err(LdCacheError::InvalidEndianness),
    };
    let (nlibs, ok) = fits(big);
    if !ok {
        return Err(LdCacheError::EntriesOutOfBounds {
            nlibs,
            len: data.len(),
        });
    }
    let r = Reader { data, big };
    let truncated = LdCacheError::TooShort(data.len());
    (0..nlibs as usize)
        .map(|i| {
            let at = NEW_HEADER_LEN + i * NEW_ENTRY_LEN;
            let flags = r.u32(at).ok_or_else(|| truncated.clone())? as i32;
            let key = r.u32(at + 4).ok_or_else(|| truncated.clone())?;
            let value = r.u32(at + 8).ok_or_else(|| truncated.clone())?;
            let hwcap = r.u64(at + 16).ok_or_else(|| truncated.clone())?;
            Ok(ParsedEntry {
                soname: read_str(data, key)?,
                path: read_str(data, value)?,
                flags,
                hwcap,
            })
        })
        .collect()
}

/// Parse an old-format (`ld.so-1.7.0`) file, preferring the new-format
/// cache that ldconfig's "compat" mode hides in its string table.
fn parse_old(bytes: &[u8]) -> Result<Vec<ParsedEntry>, LdCacheError> {
    if bytes.len() < OLD_HEADER_LEN {
        return Err(LdCacheError::TooShort(bytes.len()));
    }
    // The old header has no byte-order marker: try native-for-most (little)
    // first, then big.
    let mut first_err = None;
    for big in [false, true] {
        let r = Reader { data: bytes, big };
        let Some(nlibs) = r.u32(OLD_MAGIC.len() + 1) else {
            continue;
        };
        if !entries_fit(bytes.len(), OLD_HEADER_LEN, OLD_ENTRY_LEN, nlibs) {
            first_err.get_or_insert(LdCacheError::EntriesOutOfBounds {
                nlibs,
                len: bytes.len(),
            });
            continue;
        }
        let strings_at = OLD_HEADER_LEN + nlibs as usize * OLD_ENTRY_LEN;
        // ALIGN_CACHE uses __alignof__ (struct cache_file_new): 8 on most
        // targets, 4 on some 32-bit ones (ldconfig pads so both coincide).
        for align in [8, 4] {
            let new_at = strings_at.next_multiple_of(align);
            let Some(new) = bytes.get(new_at..) else {
                continue;
            };
            if new.len() > NEW_HEADER_LEN && new.starts_with(NEW_MAGIC) {
                return parse_new(new);
            }
        }
        let table = &bytes[strings_at..];
        return (0..nlibs as usize)
            .map(|i| {
                let at = OLD_HEADER_LEN + i * OLD_ENTRY_LEN;
                let truncated = || LdCacheError::TooShort(bytes.len());
                let flags = r.u32(at).ok_or_else(truncated)? as i32;
                let key = r.u32(at + 4).ok_or_else(truncated)?;
                let value = r.u32(at + 8).ok_or_else(truncated)?;
                Ok(ParsedEntry {
                    soname: read_str(table, key)?,
                    path: read_str(table, value)?,
                    flags,
                    hwcap: 0,
                })
            })
            .collect();
    }
    Err(first_err.unwrap_or(LdCacheError::TooShort(bytes.len())))
}

/// Parse an existing cache: new-format-only files, old `ld.so-1.7.0` files,
/// and old+new combined ("compat") files, whose new part is preferred, as
/// ld.so does.  Entries are returned in file order.  Never panics: every
/// offset is bounds-checked and malformed input yields an [`LdCacheError`].
pub fn parse_cache(bytes: &[u8]) -> Result<Vec<ParsedEntry>, LdCacheError> {
    if bytes.starts_with(NEW_MAGIC) {
        parse_new(bytes)
    } else if bytes.starts_with(OLD_MAGIC) {
        parse_old(bytes)
    } else if bytes.len() < OLD_MAGIC.len() {
        Err(LdCacheError::TooShort(bytes.len()))
    } else {
        Err(LdCacheError::BadMagic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const LDCONFIG: &str = "/sbin/ldconfig";

    fn entry(soname: &str, path: &str) -> CacheEntry {
        CacheEntry {
            soname: soname.into(),
            path: path.into(),
        }
    }

    fn sample() -> Vec<CacheEntry> {
        vec![
            entry("libpx.so.1", "/opt/pare-x/lib/libpx.so.1"),
            entry("libfoo.so.10", "/usr/local/lib/libfoo.so.10"),
            entry("libfoo.so.2", "/usr/local/lib/libfoo.so.2"),
            entry("libfoo.so.1", "/usr/local/lib/libfoo.so.1"),
            entry("libz.so.1", "/opt/z/lib/libz.so.1.3"),
            entry("libstdc++.so.6", "/opt/gcc/lib64/libstdc++.so.6.0.33"),
            entry("libpython3.11.so.1.0", "/opt/py/lib/libpython3.11.so.1.0"),
            entry("libA.so", "/opt/x/lib/libA.so"),
        ]
    }

    fn have_ldconfig() -> bool {
        if Path::new(LDCONFIG).exists() {
            true
        } else {
            eprintln!("skipping: {LDCONFIG} not found");
            false
        }
    }

    /// `ldconfig -p -C FILE` as (soname, tag, path), e.g.
    /// ("libc.so.6", "libc6,x86-64", "/lib/x86_64-linux-gnu/libc.so.6").
    fn ldconfig_print(cache: &Path) -> Result<Vec<(String, String, String)>, String> {
        let out = Command::new(LDCONFIG)
            .arg("-p")
            .arg("-C")
            .arg(cache)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        assert!(header.contains("libs found in cache"), "{text}");
        Ok(lines
            .filter_map(|l| l.strip_prefix('\t'))
            .map(|l| {
                let (left, path) = l.rsplit_once(" => ").expect(l);
                let (soname, tag) = left.split_once(" (").expect(l);
                let tag = tag.strip_suffix(')').expect(l);
                (soname.to_string(), tag.to_string(), path.to_string())
            })
            .collect())
    }

    fn pairs(v: &[ParsedEntry]) -> Vec<(String, String)> {
        v.iter()
            .map(|e| (e.soname.clone(), e.path.clone()))
            .collect()
    }

    #[test]
    fn libcmp_matches_glibc_semantics() {
        use Ordering::*;
        let c = |a: &str, b: &str| dl_cache_libcmp(a.as_bytes(), b.as_bytes(), true);
        assert_eq!(c("libfoo.so.10", "libfoo.so.2"), Greater);
        assert_eq!(c("libfoo.so.2", "libfoo.so.10"), Less);
        assert_eq!(c("libfoo.so.1", "libfoo.so.01"), Equal);
        assert_eq!(c("libfoo.so", "libfoo.so.1"), Less);
        assert_eq!(c("libfoo2.so", "libfoo.so"), Greater); // digit > any char
        assert_eq!(c("libfoo.so", "libfoo2.so"), Less);
        assert_eq!(c("libA.so", "liba.so"), Less);
        assert_eq!(c("lib9", "lib"), Greater);
        assert_eq!(c("", ""), Equal);
        // Byte >= 0x80: below NUL with signed char, above with unsigned.
        assert_eq!(dl_cache_libcmp(b"a\xc3", b"a", true), Less);
        assert_eq!(dl_cache_libcmp(b"a\xc3", b"a", false), Greater);
        // Absurd digit runs wrap but never break the total order.
        let mut v = ["l99999999999", "l1", "l4294967296", "l2147483648", "l0"];
        v.sort_by(|a, b| c(a, b));
        // 2^31 wraps to i32::MIN, 2^32 to 0, 99999999999 to 1215752191.
        assert_eq!(
            v,
            ["l2147483648", "l4294967296", "l0", "l1", "l99999999999"]
        );
    }

    /// (1) Our cache, read by the independent `ldconfig -p`.
    #[test]
    fn ldconfig_lists_built_cache() {
        if !have_ldconfig() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (arch, tag) in [
            (CacheArch::X86_64, "libc6,x86-64"),
            (CacheArch::Aarch64, "libc6,AArch64"),
            (CacheArch::I386, "libc6"),
            (CacheArch::Ppc64le, "libc6,64bit"),
            (CacheArch::Riscv64, "libc6,double-float"),
            (CacheArch::Other { flags: 0x803 }, "libc6,x32"),
        ] {
            let file = dir.path().join("ld.so.cache");
            let entries = sample();
            fs::write(&file, build_cache(&entries, arch)).unwrap();
            let listed = ldconfig_print(&file).unwrap();
            assert_eq!(listed.len(), entries.len(), "{listed:?}");
            for e in &entries {
                assert!(
                    listed.contains(&(e.soname.clone(), tag.to_string(), e.path.clone())),
                    "{arch:?}: {e:?} missing from {listed:?}"
                );
            }
        }
        // s390x caches are big-endian; an x86 ldconfig must refuse them for
        // exactly that reason.
        if cfg!(target_endian = "little") {
            let file = dir.path().join("s390x.cache");
            fs::write(&file, build_cache(&sample(), CacheArch::S390x)).unwrap();
            let err = ldconfig_print(&file).unwrap_err();
            assert!(err.contains("wrong endianness"), "{err}");
        }
    }

    /// (2) build → parse round trip, determinism, dedupe, order.
    #[test]
    fn round_trip() {
        let mut entries = sample();
        entries.push(entry("libfoo.so.2", "/elsewhere/libfoo.so.2")); // dup: dropped
        entries.push(entry("", "/x")); // unrepresentable: skipped
        entries.push(entry("libnul.so", "/a\0b")); // unrepresentable: skipped
        for arch in [CacheArch::X86_64, CacheArch::S390x, CacheArch::Aarch64] {
            let bytes = build_cache(&entries, arch);
            assert_eq!(bytes, build_cache(&entries, arch), "deterministic");
            let parsed = parse_cache(&bytes).unwrap();
            assert_eq!(parsed.len(), sample().len());
            for e in &sample() {
                let p = parsed.iter().find(|p| p.soname == e.soname).unwrap();
                assert_eq!(p.path, e.path);
                assert_eq!(p.flags, arch.flags());
                assert_eq!(p.hwcap, 0);
            }
            // Sorted in reverse libcmp order, as ld.so's bsearch expects.
            for w in parsed.windows(2) {
                let ord = dl_cache_libcmp(
                    w[0].soname.as_bytes(),
                    w[1].soname.as_bytes(),
                    arch.char_is_signed(),
                );
                assert_ne!(
                    ord,
                    Ordering::Less,
                    "{} before {}",
                    w[0].soname,
                    w[1].soname
                );
            }
        }
        // Input order doesn't matter (absent duplicate sonames).
        let mut rev = sample();
        rev.reverse();
        assert_eq!(
            build_cache(&rev, CacheArch::X86_64),
            build_cache(&sample(), CacheArch::X86_64)
        );
        // Empty cache is still well-formed.
        assert_eq!(
            parse_cache(&build_cache(&[], CacheArch::X86_64)).unwrap(),
            vec![]
        );
    }

    /// (3) The host's real cache, cross-checked against `ldconfig -p`.
    #[test]
    fn parses_host_cache() {
        let host = Path::new("/etc/ld.so.cache");
        let Ok(bytes) = fs::read(host) else {
            eprintln!("skipping: no /etc/ld.so.cache on this host");
            return;
        };
        let parsed = parse_cache(&bytes).unwrap();
        assert!(parsed.iter().any(|e| e.soname == "libc.so.6"), "{parsed:?}");
        if have_ldconfig() {
            let listed = ldconfig_print(host).unwrap();
            let listed: Vec<_> = listed.into_iter().map(|(s, _, p)| (s, p)).collect();
            assert_eq!(pairs(&parsed), listed);
        }
    }

    fn have_gcc() -> bool {
        let ok = Command::new("gcc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: gcc not available");
        }
        ok
    }

    fn run(cmd: &mut Command) -> std::process::Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Real ldconfig on a directory of oddly named libraries: its caches (all
    /// three formats) parse to what it prints, and our sort order equals its.
    #[test]
    fn matches_real_ldconfig_order_and_formats() {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64"))
            || !have_ldconfig()
            || !have_gcc()
        {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let libdir = root.join("opt/x/lib");
        fs::create_dir_all(&libdir).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("var/cache/ldconfig")).unwrap();
        fs::write(root.join("etc/ld.so.conf"), "/opt/x/lib\n").unwrap();
        let src = root.join("t.c");
        fs::write(&src, "int t(void) { return 1; }\n").unwrap();
        let obj = root.join("t.o");
        run(Command::new("gcc")
            .args(["-fPIC", "-c", "-o"])
            .arg(&obj)
            .arg(&src));
        let names = [
            "libfoo.so.1",
            "libfoo.so.2",
            "libfoo.so.10",
            "libfoo.so.1.2",
            "libfoo-1.2.so.3",
            "libFoo.so.1",
            "libfoo2.so.1",
            "libfoo10.so.1",
            "liba.so.1",
            "libz.so.1",
            "libz9.so.0",
            "libz10.so.0",
            "lib_x.so.0",
            "libstdc++.so.6",
            "libpython3.11.so.1.0",
            "libpython3.9.so.1.0",
            "libx.so.007",
            "libbar.so",
        ];
        for n in names {
            run(Command::new("gcc")
                .arg("-shared")
                .arg(format!("-Wl,-soname,{n}"))
                .arg("-o")
                .arg(libdir.join(n))
                .arg(&obj));
        }
        let cache = root.join("etc/ld.so.cache");
        for format in ["new", "compat", "old"] {
            let _ = fs::remove_file(&cache);
            run(Command::new(LDCONFIG)
                .args(["-X", "-c", format, "-r"])
                .arg(root));
            let bytes = fs::read(&cache).unwrap();
            let theirs = parse_cache(&bytes).unwrap_or_else(|e| panic!("{format}: {e}"));
            let listed: Vec<_> = ldconfig_print(&cache)
                .unwrap()
                .into_iter()
                .map(|(s, _, p)| (s, p))
                .collect();
            assert_eq!(pairs(&theirs), listed, "format {format}");
            assert!(theirs.len() >= names.len(), "{format}: {theirs:?}");
            assert!(theirs.iter().all(|e| e.flags == 0x303));

            // Feed ldconfig's entries to build_cache in a scrambled order:
            // the result must be in exactly ldconfig's order.
            let mut input: Vec<CacheEntry> =
                theirs.iter().map(|e| entry(&e.soname, &e.path)).collect();
            input.reverse();
            input.rotate_left(5);
            let ours = parse_cache(&build_cache(&input, CacheArch::X86_64)).unwrap();
            assert_eq!(pairs(&ours), pairs(&theirs), "format {format}");
        }
    }

    /// (4) Hostile input never panics.
    #[test]
    fn garbage_never_panics() {
        let good = build_cache(&sample(), CacheArch::X86_64);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for n in 0..good.len() {
            inputs.push(good[..n].to_vec());
        }
        // Old-format wrapper around the new cache, truncated too.
        let mut compat = Vec::new();
        compat.extend_from_slice(OLD_MAGIC);
        compat.push(0);
        compat.extend_from_slice(&0u32.to_le_bytes());
        compat.extend_from_slice(&good);
        assert_eq!(parse_cache(&compat).unwrap(), parse_cache(&good).unwrap());
        for n in 0..compat.len() {
            inputs.push(compat[..n].to_vec());
        }
        // Deterministic pseudo-random corruption (xorshift).
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for base in [&good, &compat] {
            for _ in 0..4000 {
                let mut v = base.clone();
                for _ in 0..(1 + rnd() % 4) {
                    let i = (rnd() as usize) % v.len();
                    v[i] = match rnd() % 3 {
                        0 => 0xff,
                        1 => 0,
                        _ => rnd() as u8,
                    };
                }
                inputs.push(v);
            }
        }
        // Huge counts and offsets in every header/entry field.
        for off in (20..good.len().min(NEW_HEADER_LEN + 3 * NEW_ENTRY_LEN)).step_by(4) {
            for val in [
                u32::MAX,
                0x8000_0000,
                good.len() as u32,
                good.len() as u32 - 1,
            ] {
                let mut v = good.clone();
                v[off..off + 4].copy_from_slice(&val.to_le_bytes());
                inputs.push(v);
            }
        }
        for val in [u32::MAX, 0x4000_0000] {
            let mut v = compat.clone();
            v[12..16].copy_from_slice(&val.to_le_bytes());
            inputs.push(v);
        }
        inputs.push(b"ld.so-1.7.0".to_vec());
        inputs.push(vec![0; 100]);
        let mut ok = 0;
        for input in &inputs {
            if parse_cache(input).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 0 && ok < inputs.len());
        assert!(matches!(
            parse_cache(&good[..NEW_HEADER_LEN - 1]),
            Err(LdCacheError::TooShort(_))
        ));
        assert!(matches!(
            parse_cache(b"\x7fELF\x02\x01\x01\0\0\0\0\0"),
            Err(LdCacheError::BadMagic)
        ));
        let mut bad = good.clone();
        bad[NEW_FLAGS_OFFSET] = ENDIAN_INVALID;
        assert_eq!(parse_cache(&bad), Err(LdCacheError::InvalidEndianness));
        let mut unset = good.clone();
        unset[NEW_FLAGS_OFFSET] = ENDIAN_UNSET;
        assert_eq!(parse_cache(&unset).unwrap(), parse_cache(&good).unwrap());
    }

    fn copy_into_root(root: &Path, host: &str, canonical: &str) {
        let dest = root.join(canonical.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(host, &dest).unwrap_or_else(|e| panic!("copy {host}: {e}"));
    }

    fn is_root() -> bool {
        fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                == Some("0")
        })
    }

    /// (5) The real proof: glibc's ld.so, in a chroot, finds a library in a
    /// non-default directory only through our cache.
    #[test]
    fn real_ld_so_uses_cache_in_chroot() {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            eprintln!("skipping: chroot test needs an x86_64 Linux host");
            return;
        }
        if !is_root() {
            eprintln!("skipping: chroot test needs root");
            return;
        }
        if !have_gcc() {
            return;
        }
        let (libc, ldso) = (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
        );
        if !Path::new(libc).exists() || !Path::new(ldso).exists() {
            eprintln!("skipping: host glibc not at {libc} / {ldso}");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root: PathBuf = tmp.path().join("root");
        let libdir = root.join("opt/pare-x/lib");
        fs::create_dir_all(&libdir).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        copy_into_root(&root, libc, libc);
        copy_into_root(&root, ldso, ldso);

        let lib_c = tmp.path().join("px.c");
        fs::write(&lib_c, "int px(void) { return 42; }\n").unwrap();
        let lib = libdir.join("libpx.so.1");
        run(Command::new("gcc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libpx.so.1", "-o"])
            .arg(&lib)
            .arg(&lib_c));
        let main_c = tmp.path().join("main.c");
        fs::write(
            &main_c,
            "#include <stdio.h>\nint px(void);\nint main(void) { printf(\"px=%d\\n\", px()); return px() == 42 ? 0 : 1; }\n",
        )
        .unwrap();
        // Linking against the file records DT_NEEDED libpx.so.1, no rpath.
        run(Command::new("gcc")
            .arg("-o")
            .arg(root.join("exe"))
            .arg(&main_c)
            .arg(&lib));

        let Some(chroot) = ["/usr/sbin/chroot", "/sbin/chroot", "/usr/bin/chroot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            eprintln!("skipping: no chroot(8) binary");
            return;
        };
        // A clean environment: no LD_LIBRARY_PATH from cargo leaks in.
        let chroot_exe = || {
            Command::new(chroot)
                .arg(&root)
                .arg("/exe")
                .env_clear()
                .output()
                .expect("spawn chroot")
        };

        // Without a cache ld.so cannot find /opt/pare-x/lib.
        let out = chroot_exe();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("cannot change root directory") {
            eprintln!("skipping: chroot not permitted here: {stderr}");
            return;
        }
        assert!(!out.status.success(), "ran without a cache?");
        assert!(
            stderr.contains("libpx.so.1"),
            "unexpected failure: {stderr}"
        );

        // With our cache it runs.
        // Decoys around the real entry so ld.so's binary search has to rely
        // on the sort order to land on it.
        let mut entries: Vec<CacheEntry> = (0..40)
            .flat_map(|i| {
                [
                    entry(
                        &format!("libpx.so.{}", i + 2),
                        &format!("/nonexistent/a{i}"),
                    ),
                    entry(&format!("libp{i}.so.1"), &format!("/nonexistent/b{i}")),
                    entry(&format!("libpy.so.{i}"), &format!("/nonexistent/c{i}")),
                ]
            })
            .collect();
        entries.insert(17, entry("libpx.so.1", "/opt/pare-x/lib/libpx.so.1"));
        let cache = build_cache(&entries, CacheArch::X86_64);
        fs::write(root.join("etc/ld.so.cache"), cache).unwrap();
        let out = chroot_exe();
        assert!(
            out.status.success(),
            "exe failed with our cache: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "px=42\n");
    }
}
