//! What the dynamic loader sees of an ELF file: class, machine, PT_INTERP, DT_NEEDED,
//! DT_RPATH, DT_RUNPATH, DT_SONAME, and the FDO `.note.dlopen` sonames. Parsed with goblin's
//! program-header path (works without section headers); dynamic strings are read by hand
//! from the string table as bytes, bounded, so one odd symbol name cannot fail the file.
//! Any panic inside the parser is caught and reported as a malformed file.

use goblin::container::{Container, Ctx};
use goblin::elf::dynamic::{DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, Dynamic};
use goblin::elf::program_header::{PT_INTERP, PT_NOTE, ProgramHeader};

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
}

impl ElfFacts {
    /// Whether `other` can be loaded into a process of this object (class, byte order, machine).
    pub fn compatible(&self, other: &ElfFacts) -> bool {
        self.is_64 == other.is_64
            && self.little_endian == other.little_endian
            && self.machine == other.machine
            && matches!(other.osabi, 0 | 3)
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
    Ok(facts)
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
