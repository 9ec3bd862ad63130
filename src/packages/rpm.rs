//! rpm (Fedora, RHEL 9, UBI 9, Amazon Linux 2023, SUSE): the sqlite database `rpmdb.sqlite`,
//! whose `Packages` table holds one rpm header blob per installed package (`hnum`, `blob`);
//! the other tables index them by `hnum`. The header gives the name, epoch, version, release,
//! arch, source rpm, files (`DIRNAMES[DIRINDEXES[i]] + BASENAMES[i]`, `%config` ones by
//! `FILEFLAGS`), requires and provides.
//!
//! A hardened image gets a copy of the database with only the kept packages' rows (their
//! header blobs unchanged): syft and Trivy run `SELECT blob FROM Packages`.
//! The Berkeley DB format of RHEL 8 and older is not read (a warning says so).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OpenFlags};

use super::{MAX_DB_BYTES, Package, Reader};
use crate::error::{Error, Result};
use crate::rootfs::{Kind, Rootfs};

/// Where rpm keeps its sqlite database (Fedora ≥ 36 moved it under /usr).
pub const DB_PATHS: &[&str] = &[
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/share/rpm/rpmdb.sqlite",
];
const BDB_PATHS: &[&str] = &["var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages"];

/// Most packages read from one database.
const MAX_PACKAGES: usize = 100_000;
/// Most index entries in one header.
const MAX_ENTRIES: usize = 100_000;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_FILEFLAGS: u32 = 1037;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TAG_PROVIDENAME: u32 = 1047;
const TAG_REQUIRENAME: u32 = 1049;
const TAG_DIRINDEXES: u32 = 1116;
const TAG_BASENAMES: u32 = 1117;
const TAG_DIRNAMES: u32 = 1118;
const RPMFILE_CONFIG: u32 = 1;

/// One tag's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Strings(Vec<String>),
    Ints(Vec<u32>),
}

/// The tags pare reads from a header blob (`il`, `dl`, `il` 16-byte index entries, then `dl`
/// bytes of data; all big-endian). Every offset and count is checked against the blob.
pub(crate) fn parse_header(blob: &[u8]) -> std::result::Result<BTreeMap<u32, Value>, String> {
    let be = |b: &[u8], at: usize| -> std::result::Result<u32, String> {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| "truncated header".to_string())
    };
    let il = be(blob, 0)? as usize;
    let dl = be(blob, 4)? as usize;
    if il > MAX_ENTRIES {
        return Err(format!("{il} header entries"));
    }
    let data_start = 8 + il * 16;
    let data = blob
        .get(data_start..data_start.checked_add(dl).ok_or("header size overflows")?)
        .ok_or("header data beyond the blob")?;
    let wanted = [
        TAG_NAME,
        TAG_VERSION,
        TAG_RELEASE,
        TAG_EPOCH,
        TAG_FILEFLAGS,
        TAG_ARCH,
        TAG_SOURCERPM,
        TAG_PROVIDENAME,
        TAG_REQUIRENAME,
        TAG_DIRINDEXES,
        TAG_BASENAMES,
        TAG_DIRNAMES,
    ];
    let mut out = BTreeMap::new();
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, ty, off, count) = (
            be(blob, e)?,
            be(blob, e + 4)?,
            be(blob, e + 8)? as usize,
            be(blob, e + 12)? as usize,
        );
        if !wanted.contains(&tag) {
            continue;
        }
        if off > data.len() || count > data.len() {
            return Err(format!("tag {tag} points outside the header"));
        }
        let v = match ty {
            // INT32
            4 => {
                let mut v = Vec::with_capacity(count);
                for k in 0..count {
                    v.push(be(data, off + k * 4)?);
                }
                Value::Ints(v)
            }
            // STRING, STRING_ARRAY, I18NSTRING: NUL-terminated strings.
            6 | 8 | 9 => {
                let n = if ty == 6 { 1 } else { count };
                let mut v = Vec::with_capacity(n);
                let mut at = off;
                for _ in 0..n {
                    let rest = data.get(at..).ok_or("string outside the header")?;
                    let end = rest
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or("unterminated string")?;
                    v.push(String::from_utf8_lossy(&rest[..end]).into_owned());
                    at += end + 1;
                }
                Value::Strings(v)
            }
            _ => continue,
        };
        out.insert(tag, v);
    }
    Ok(out)
}

fn strings(h: &BTreeMap<u32, Value>, tag: u32) -> Vec<String> {
    match h.get(&tag) {
        Some(Value::Strings(v)) => v.clone(),
        _ => Vec::new(),
    }
}

fn ints(h: &BTreeMap<u32, Value>, tag: u32) -> Vec<u32> {
    match h.get(&tag) {
        Some(Value::Ints(v)) => v.clone(),
        _ => Vec::new(),
    }
}

/// The database path in the image, when it has an rpm sqlite database.
fn db_path(fs: &Rootfs) -> Option<String> {
    DB_PATHS.iter().find_map(|p| {
        let r = fs.resolve(p, true).ok()?;
        matches!(fs.get(&r.path).map(|n| &n.kind), Some(Kind::File { .. })).then_some(r.path)
    })
}

/// A warning when the image has an rpm database pare does not read (Berkeley DB).
pub fn unsupported(fs: &Rootfs) -> Option<String> {
    if db_path(fs).is_some() {
        return None;
    }
    BDB_PATHS.iter().find_map(|p| {
        let r = fs.resolve(p, true).ok()?;
        fs.get(&r.path).is_some_and(|n| matches!(n.kind, Kind::File { .. })).then(|| {
            format!(
                "/{}: an rpm database in the Berkeley DB format (RHEL 8 and older) is not read: the hardened image carries no rpm metadata, so scanners will not see its packages",
                r.path
            )
        })
    })
}

fn sql_err(what: &str, e: rusqlite::Error) -> Error {
    Error::malformed(what, e)
}

/// The database bytes in a private temporary file (sqlite opens files, not buffers).
fn local_copy(bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    f.write_all(bytes).map_err(|e| Error::io(f.path(), e))?;
    Ok(f)
}

/// The installed packages, or `None` when the image has no rpm sqlite database.
pub fn read<R: Reader + ?Sized>(fs: &Rootfs, contents: &mut R) -> Result<Option<Vec<Package>>> {
    let Some(path) = db_path(fs) else {
        return Ok(None);
    };
    let what = format!("/{path}");
    let bytes = contents.read_file(fs, &path, MAX_DB_BYTES)?;
    let copy = local_copy(&bytes)?;
    let uri = format!("file:{}?immutable=1", copy.path().display());
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| sql_err(&what, e))?;
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(|e| sql_err(&what, e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .map_err(|e| sql_err(&what, e))?;
    let mut out = Vec::new();
    for row in rows {
        let (hnum, blob) = row.map_err(|e| sql_err(&what, e))?;
        if out.len() >= MAX_PACKAGES {
            return Err(Error::malformed(
                what,
                format!("more than {MAX_PACKAGES} packages"),
            ));
        }
        let h = parse_header(&blob)
            .map_err(|m| Error::malformed(format!("{what} (package #{hnum})"), m))?;
        let one = |t| strings(&h, t).into_iter().next().unwrap_or_default();
        let name = one(TAG_NAME);
        if name.is_empty() || name == "gpg-pubkey" {
            continue;
        }
        let epoch = ints(&h, TAG_EPOCH).first().copied();
        let version = match epoch {
            Some(e) => format!("{e}:{}-{}", one(TAG_VERSION), one(TAG_RELEASE)),
            None => format!("{}-{}", one(TAG_VERSION), one(TAG_RELEASE)),
        };
        let dirs = strings(&h, TAG_DIRNAMES);
        let idx = ints(&h, TAG_DIRINDEXES);
        let flags = ints(&h, TAG_FILEFLAGS);
        let mut files = Vec::new();
        let mut conffiles = Vec::new();
        for (i, base) in strings(&h, TAG_BASENAMES).into_iter().enumerate() {
            let Some(dir) = idx.get(i).and_then(|&d| dirs.get(d as usize)) else {
                continue;
            };
            let f = format!("{dir}{base}");
            if flags.get(i).is_some_and(|fl| fl & RPMFILE_CONFIG != 0) {
                conffiles.push(f.clone());
            }
            files.push(f);
        }
        // `name-1.2-3.el9.src.rpm` → `name`.
        let source = one(TAG_SOURCERPM);
        let source = source
            .trim_end_matches(".rpm")
            .rsplitn(3, '-')
            .nth(2)
            .map(str::to_string)
            .filter(|s| *s != name);
        let depends = strings(&h, TAG_REQUIRENAME)
            .into_iter()
            .filter(|r| !r.starts_with("rpmlib(") && !r.starts_with('/'))
            .map(|r| vec![r])
            .collect();
        out.push(Package {
            arch: one(TAG_ARCH),
            version,
            source,
            files,
            conffiles,
            depends,
            provides: strings(&h, TAG_PROVIDENAME),
            record: hnum.to_string(),
            origin: path.clone(),
            essential: false,
            name,
        });
    }
    Ok(Some(out))
}

/// A copy of the image's database with only the kept packages' rows (in every table), header
/// blobs unchanged, compacted, in rollback-journal mode (scanners open it immutable and would
/// not see a write-ahead log).
pub fn write_db<R: Reader + ?Sized>(
    fs: &Rootfs,
    contents: &mut R,
    pkgs: &[&Package],
) -> Result<BTreeMap<String, Vec<u8>>> {
    let Some(path) = db_path(fs) else {
        return Ok(BTreeMap::new());
    };
    let what = format!("/{path}");
    let bytes = contents.read_file(fs, &path, MAX_DB_BYTES)?;
    let copy = local_copy(&bytes)?;
    let keep: BTreeSet<i64> = pkgs.iter().filter_map(|p| p.record.parse().ok()).collect();
    {
        let conn = Connection::open(copy.path()).map_err(|e| sql_err(&what, e))?;
        conn.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| sql_err(&what, e))?;
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .map_err(|e| sql_err(&what, e))?;
        // The index tables first: they reference Packages.
        let mut tables = tables;
        tables.sort_by_key(|t| t == "Packages");
        let list = keep
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for t in tables {
            let has_hnum: bool = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{}') WHERE name = 'hnum'",
                    t.replace('\'', "''")
                ))
                .and_then(|mut s| s.exists([]))
                .map_err(|e| sql_err(&what, e))?;
            if has_hnum {
                conn.execute(
                    &format!(
                        "DELETE FROM \"{}\" WHERE hnum NOT IN ({list})",
                        t.replace('"', "\"\"")
                    ),
                    [],
                )
                .map_err(|e| sql_err(&what, e))?;
            }
        }
        conn.execute_batch("VACUUM")
            .map_err(|e| sql_err(&what, e))?;
    }
    let out = std::fs::read(copy.path()).map_err(|e| Error::io(copy.path(), e))?;
    Ok(BTreeMap::from([(path, out)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header blob with the given (tag, type, data) entries.
    fn header(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut data: Vec<u8> = Vec::new();
        let mut index: Vec<u8> = Vec::new();
        for (tag, ty, count, bytes) in entries {
            index.extend(tag.to_be_bytes());
            index.extend(ty.to_be_bytes());
            index.extend((data.len() as u32).to_be_bytes());
            index.extend(count.to_be_bytes());
            data.extend(bytes);
        }
        let mut b: Vec<u8> = Vec::new();
        b.extend((entries.len() as u32).to_be_bytes());
        b.extend((data.len() as u32).to_be_bytes());
        b.extend(index);
        b.extend(data);
        b
    }

    #[test]
    fn headers_are_parsed_and_checked() {
        let h = header(&[
            (TAG_NAME, 6, 1, b"curl\0".to_vec()),
            (TAG_DIRNAMES, 8, 2, b"/usr/bin/\0/etc/\0".to_vec()),
            (
                TAG_DIRINDEXES,
                4,
                2,
                [0u32, 1].iter().flat_map(|v| v.to_be_bytes()).collect(),
            ),
        ]);
        let p = parse_header(&h).unwrap();
        assert_eq!(strings(&p, TAG_NAME), vec!["curl"]);
        assert_eq!(strings(&p, TAG_DIRNAMES), vec!["/usr/bin/", "/etc/"]);
        assert_eq!(ints(&p, TAG_DIRINDEXES), vec![0, 1]);
        // Hostile: truncated, offsets outside, unterminated strings.
        assert!(parse_header(&h[..10]).is_err());
        let mut bad = h.clone();
        bad[8 + 8..8 + 12].copy_from_slice(&1000u32.to_be_bytes());
        assert!(parse_header(&bad).is_err());
        let unterminated = header(&[(TAG_NAME, 6, 1, b"curl".to_vec())]);
        assert!(parse_header(&unterminated).is_err());
        assert!(parse_header(&[0xff; 8]).is_err());
    }
}
