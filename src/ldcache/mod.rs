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
mod tests;
