//! sha256 digests of streams, computed while the bytes pass through.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// `sha256:<hex>` of a byte slice.
pub fn sha256_bytes(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A writer that hashes and counts what it forwards.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `(inner, "sha256:<hex>", bytes written)`.
    pub fn finish(self) -> (W, String, u64) {
        let d = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, d, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Incremental sha256 with a byte count, for async streams.
#[derive(Default)]
pub struct Hasher {
    hasher: Sha256,
    count: u64,
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.count += data.len() as u64;
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

/// Hash a file and check it against a descriptor's digest and size.
pub fn verify_file(path: &Path, digest: &str, size: u64) -> Result<()> {
    verify_file_with(path, digest, size, |_| {})
}

/// [`verify_file`], reporting each chunk's length to `progress`.
pub fn verify_file_with(
    path: &Path,
    digest: &str,
    size: u64,
    progress: impl Fn(u64),
) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress(n as u64);
        if h.count() > size {
            break;
        }
    }
    check(digest, size, h)
}

/// Compare a finished hash with a descriptor.
pub fn check(digest: &str, size: u64, h: Hasher) -> Result<()> {
    let (actual, count) = h.finish();
    if count != size {
        return Err(Error::SizeMismatch {
            digest: digest.to_string(),
            expected: size,
            actual: count,
        });
    }
    if actual != digest {
        return Err(Error::DigestMismatch {
            digest: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_bytes(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (v, d, n) = w.finish();
        assert_eq!(v, b"abc");
        assert_eq!(n, 3);
        assert_eq!(d, sha256_bytes(b"abc"));
    }

    #[test]
    fn verify_detects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, b"hello").unwrap();
        let good = sha256_bytes(b"hello");
        verify_file(&p, &good, 5).unwrap();
        assert!(matches!(
            verify_file(&p, &good, 4),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            verify_file(&p, &sha256_bytes(b"hellO"), 5),
            Err(Error::DigestMismatch { .. })
        ));
    }
}
