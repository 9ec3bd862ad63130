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

/// A blob on disk whose digest is checked by the first reader that reads it whole (an `oci:`
/// layout's layers: the merge reads each once anyway, so no pass of its own is needed).
#[derive(Debug)]
pub struct Unverified {
    digest: String,
    size: u64,
    verified: std::sync::atomic::AtomicBool,
}

impl Unverified {
    pub fn new(digest: &str, size: u64) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Unverified {
            digest: digest.to_string(),
            size,
            verified: Default::default(),
        })
    }

    pub fn verified(&self) -> bool {
        self.verified.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `r` (the blob from its first byte), checked when it reaches its end: a mismatch is
    /// the read error there.
    pub fn reader<R: Read>(self: &std::sync::Arc<Self>, r: R) -> Verifying<R> {
        Verifying {
            inner: r,
            hasher: Hasher::default(),
            of: self.clone(),
        }
    }

    /// Make sure the blob at `path` was checked: a reader that stopped before its end leaves
    /// it to a pass of its own.
    pub fn ensure(&self, path: &Path) -> Result<()> {
        if !self.verified() {
            verify_file(path, &self.digest, self.size)?;
            self.verified
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }
}

/// See [`Unverified::reader`].
pub struct Verifying<R> {
    inner: R,
    hasher: Hasher,
    of: std::sync::Arc<Unverified>,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if self.hasher.count() > self.of.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} is longer than its descriptor's {} bytes",
                    self.of.digest, self.of.size
                ),
            ));
        }
        if n == 0 && !buf.is_empty() && !self.of.verified() {
            let h = std::mem::take(&mut self.hasher);
            check(&self.of.digest, self.of.size, h)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.of
                .verified
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(n)
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
