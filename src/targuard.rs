//! A guard on a tar stream, below tar-rs. tar-rs reads GNU long names, long link names and PAX
//! headers whole into memory, and expands GNU sparse files to their declared size; a small
//! hostile layer can declare gigabytes of either. The guard watches the bytes go by, finds each
//! header exactly where tar-rs will (same rounding, PAX `size` override, sparse extension
//! blocks), and fails the read that would deliver an oversized one.

use std::io::{self, Read};

/// Largest GNU long name/link or PAX header accepted.
pub const MAX_EXTENSION: u64 = 1 << 20;
/// Largest expanded size of a GNU sparse file.
pub const MAX_SPARSE: u64 = 64 << 30;

const BLOCK: u64 = 512;

enum State {
    /// Passing data; the next header starts at `next_header`.
    Data,
    /// Capturing the body of a PAX header (to find a `size` override).
    Pax { remaining: u64, buf: Vec<u8> },
    /// Sparse extension blocks follow the header.
    SparseExt,
    /// After the end-of-archive block: everything passes.
    Done,
}

pub struct TarGuard<R> {
    inner: R,
    pos: u64,
    next_header: u64,
    header: [u8; 512],
    filled: usize,
    state: State,
    pending_pax_size: Option<u64>,
}

fn err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            pos: 0,
            next_header: 0,
            header: [0; 512],
            filled: 0,
            state: State::Data,
            pending_pax_size: None,
        }
    }

    /// Feed bytes that are about to be handed to tar-rs.
    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Pax { remaining, buf } => {
                    let n = (*remaining).min(data.len() as u64) as usize;
                    buf.extend_from_slice(&data[..n]);
                    *remaining -= n as u64;
                    self.pos += n as u64;
                    data = &data[n..];
                    if *remaining == 0 {
                        let size = tar::PaxExtensions::new(buf)
                            .flatten()
                            .find(|e| e.key() == Ok("size"))
                            .and_then(|e| e.value().ok().and_then(|v| v.parse::<u64>().ok()));
                        self.pending_pax_size = size;
                        self.state = State::Data;
                    }
                }
                State::Data if self.pos < self.next_header => {
                    let n = (self.next_header - self.pos).min(data.len() as u64) as usize;
                    self.pos += n as u64;
                    data = &data[n..];
                }
                State::Data | State::SparseExt => {
                    let n = (512 - self.filled).min(data.len());
                    self.header[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    self.filled += n;
                    self.pos += n as u64;
                    data = &data[n..];
                    if self.filled == 512 {
                        self.filled = 0;
                        if matches!(self.state, State::SparseExt) {
                            // One more 512-byte sparse map; the data moves down by a block.
                            self.next_header += BLOCK;
                            if self.header[504] != 1 {
                                self.state = State::Data;
                            }
                        } else {
                            self.on_header()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        let block = self.header;
        if block.iter().all(|&b| b == 0) {
            // tar-rs stops at the first zero block.
            self.state = State::Done;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&block);
        let Ok(mut size) = h.entry_size() else {
            // tar-rs fails on this header too.
            self.state = State::Done;
            return Ok(());
        };
        let ty = h.entry_type();
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let extension = ty.is_gnu_longname()
            || ty.is_gnu_longlink()
            || ty.is_pax_local_extensions()
            || ty.is_pax_global_extensions();
        if !extension && let Some(s) = self.pending_pax_size.take() {
            size = s;
        }
        if recognized
            && (ty.is_gnu_longname() || ty.is_gnu_longlink() || ty.is_pax_local_extensions())
            && size > MAX_EXTENSION
        {
            return Err(err(format!(
                "tar extension header of {size} bytes at offset {} (more than {MAX_EXTENSION} allowed)",
                self.pos - BLOCK
            )));
        }
        let body = size
            .checked_add(BLOCK - 1)
            .ok_or_else(|| err("tar entry size overflow".into()))?
            & !(BLOCK - 1);
        self.next_header = self
            .pos
            .checked_add(body)
            .ok_or_else(|| err("tar entry size overflow".into()))?;
        if recognized && ty.is_pax_local_extensions() {
            self.state = State::Pax {
                remaining: size,
                buf: Vec::with_capacity(size as usize),
            };
            // The captured body is also skipped as data once capture ends.
            self.next_header = self.pos + body;
            if size == 0 {
                self.state = State::Data;
            }
            return Ok(());
        }
        if ty.is_gnu_sparse()
            && let Some(gnu) = h.as_gnu()
        {
            let real = gnu.real_size().unwrap_or(0);
            if real > MAX_SPARSE {
                return Err(err(format!(
                    "sparse file of {real} bytes in a layer (more than {MAX_SPARSE} allowed)"
                )));
            }
            if gnu.is_extended() {
                self.state = State::SparseExt;
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Every entry tar-rs yields through the guard, as (path, size).
    fn list(bytes: &[u8]) -> io::Result<Vec<(String, u64)>> {
        let mut a = tar::Archive::new(TarGuard::new(bytes));
        let mut out = vec![];
        for e in a.entries()? {
            let mut e = e?;
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut n = 0u64;
            let mut buf = [0u8; 8192];
            loop {
                let k = e.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            out.push((p, n));
        }
        Ok(out)
    }

    fn plain(bytes: &[u8]) -> Vec<(String, u64)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let n = io::copy(&mut e, &mut io::sink()).unwrap();
                (p, n)
            })
            .collect()
    }

    #[test]
    fn real_gnu_tar_archives_pass_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let long = "d".repeat(120);
        std::fs::create_dir_all(root.join(&long).join("e".repeat(110))).unwrap();
        std::fs::write(
            root.join(&long).join("e".repeat(110)).join("f".repeat(100)),
            vec![7u8; 3000],
        )
        .unwrap();
        std::os::unix::fs::symlink("t".repeat(300), root.join("longlink")).unwrap();
        std::fs::write(root.join("small"), b"x").unwrap();
        // A sparse file with data at both ends and enough holes for extension blocks.
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = sparse;
            for i in 0..40u64 {
                f.seek(SeekFrom::Start(i * (1 << 20))).unwrap();
                f.write_all(b"data").unwrap();
            }
        }
        for fmt in ["gnu", "pax", "posix", "ustar"] {
            let out = d.path().join(format!("{fmt}.tar"));
            let mut cmd = Command::new("tar");
            cmd.arg(format!("--format={fmt}"))
                .arg("-cf")
                .arg(&out)
                .arg("-C")
                .arg(&root);
            if fmt == "gnu" {
                cmd.arg("--sparse");
            }
            if fmt == "ustar" {
                // ustar cannot hold the long names; archive the short ones.
                cmd.args(["small", "sparse"]);
            } else {
                cmd.arg(".");
            }
            let o = cmd.output().unwrap();
            assert!(
                o.status.success(),
                "tar {fmt}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let bytes = std::fs::read(&out).unwrap();
            let got = list(&bytes)
                .unwrap_or_else(|e| panic!("{fmt}: guard refused a valid archive: {e}"));
            assert_eq!(got, plain(&bytes), "{fmt}");
            assert!(
                got.iter()
                    .any(|(p, n)| p.ends_with("sparse") && *n == 64 << 20),
                "{fmt}: {got:?}"
            );
        }
    }

    #[test]
    fn refuses_huge_long_names_and_sparse_sizes() {
        // A GNU long-name header declaring 2 MiB.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(2 << 20);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 2 << 20));
        let e = list(&bytes).unwrap_err();
        assert!(
            e.to_string().contains("extension header of 2097152 bytes"),
            "{e}"
        );

        // A PAX header declaring 3 MiB.
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(3 << 20);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(b'\n', 3 << 20));
        assert!(list(&bytes).is_err());

        // A sparse file claiming a petabyte.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path("big").unwrap();
        h.set_size(0);
        h.as_gnu_mut().unwrap().set_real_size(1 << 50);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend([0u8; 1024]);
        let e = list(&bytes).unwrap_err();
        assert!(e.to_string().contains("sparse file"), "{e}");
    }
}
