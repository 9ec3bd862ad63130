//! The deterministic layer writer: entries in path order, fixed mtime, numeric owners, no
//! user/group names, no xattrs, gzip with a fixed header. diff_id (sha256 of the tar) and
//! digest (sha256 of the gzip) are computed while streaming to a file.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use flate2::{Compression, GzBuilder};

use crate::digest::HashingWriter;
use crate::error::{Error, Result};
use crate::plan::{Content, Plan};

pub use crate::image::WrittenLayer;

/// Bytes handed between the layer writer's threads at a time.
const CHUNK: usize = 1 << 20;

/// Bytes written, and where each write ended: zlib's output depends on how its input is cut
/// into writes, so the compressor replays the writes exactly as they were made.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Chunk {
    fn writes(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let w = &self.bytes[start..end];
            start = end;
            w
        })
    }
}

type ChunkTx = std::sync::mpsc::SyncSender<std::sync::Arc<Chunk>>;

/// A writer that hands its writes, in chunks, to every receiver of `txs` (bounded channels, so
/// memory stays a few chunks whatever the layer's size).
struct ChunkWriter {
    buf: Chunk,
    txs: Vec<ChunkTx>,
}

impl ChunkWriter {
    fn new(txs: Vec<ChunkTx>) -> Self {
        ChunkWriter {
            buf: Chunk::default(),
            txs,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.bytes.is_empty() {
            return Ok(());
        }
        let chunk = std::sync::Arc::new(std::mem::take(&mut self.buf));
        for tx in &self.txs {
            tx.send(chunk.clone()).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "a layer writer thread stopped")
            })?;
        }
        Ok(())
    }

    /// Send what is left; the receivers then see the end.
    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if b.is_empty() {
            return Ok(0);
        }
        self.buf.bytes.extend_from_slice(b);
        self.buf.ends.push(self.buf.bytes.len());
        if self.buf.bytes.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write the plan as a gzip'd tar at `out`. `files` maps canonical image paths to local copies.
///
/// Three threads share the work so the compressor, the one that bounds the time, does
/// nothing else: this one builds the tar; one hashes it (the diff_id); one compresses it as
/// one gzip stream (the same bytes as compressing it in one thread: deflate's output does not
/// depend on how its input is cut into writes) and hands the result to a fourth that hashes and
/// writes it.
pub fn write_layer(
    plan: &Plan,
    files: &HashMap<String, crate::rootfs::Local>,
    out: &Path,
    mtime: u64,
) -> Result<WrittenLayer> {
    use std::sync::mpsc::sync_channel;
    let file = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let werr = |e: io::Error| Error::io(out, e);
    std::thread::scope(|scope| {
        let (tx_hash, rx_hash) = sync_channel::<std::sync::Arc<Chunk>>(4);
        let (tx_gz, rx_gz) = sync_channel::<std::sync::Arc<Chunk>>(4);
        let (tx_out, rx_out) = sync_channel::<std::sync::Arc<Chunk>>(4);
        let diff = scope.spawn(move || {
            let mut h = HashingWriter::new(io::sink());
            for c in rx_hash {
                let _ = h.write_all(&c.bytes);
            }
            let (_, d, n) = h.finish();
            (d, n)
        });
        let written = scope.spawn(move || -> io::Result<(String, u64)> {
            let mut w = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
            for c in rx_out {
                w.write_all(&c.bytes)?;
            }
            let (mut buf, digest, size) = w.finish();
            buf.flush()?;
            Ok((digest, size))
        });
        let compressed = scope.spawn(move || -> io::Result<()> {
            let mut gz = GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(ChunkWriter::new(vec![tx_out]), Compression::new(6));
            for c in rx_gz {
                for w in c.writes() {
                    gz.write_all(w)?;
                }
            }
            gz.finish()?.finish()
        });
        let built = (|| -> Result<()> {
            let mut tar = tar::Builder::new(ChunkWriter::new(vec![tx_hash, tx_gz]));
            tar.mode(tar::HeaderMode::Deterministic);
            for (path, e) in &plan.entries {
                append(&mut tar, path, e, files, mtime).map_err(werr)?;
            }
            tar.into_inner().map_err(werr)?.finish().map_err(werr)
        })();
        // The threads' own failures come first: the tar side then only saw a closed pipe.
        let gz = compressed
            .join()
            .map_err(|_| Error::Other("the compressor thread panicked".into()))?;
        let out_done = written
            .join()
            .map_err(|_| Error::Other("the layer file thread panicked".into()))?;
        let (diff_id, uncompressed_size) = diff
            .join()
            .map_err(|_| Error::Other("the diff_id thread panicked".into()))?;
        let (digest, size) = out_done.map_err(werr)?;
        gz.map_err(werr)?;
        built?;
        Ok(WrittenLayer {
            path: out.to_path_buf(),
            digest,
            size,
            diff_id,
            uncompressed_size,
        })
    })
}

/// One plan entry into the tar.
fn append<W: io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    e: &crate::plan::Entry,
    files: &HashMap<String, crate::rootfs::Local>,
    mtime: u64,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(mtime);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mode(e.mode);
    match &e.content {
        Content::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, format!("{path}/"), io::empty())
        }
        Content::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, path, target)
        }
        Content::Bytes(b) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(b.len() as u64);
            tar.append_data(&mut h, path, &b[..])
        }
        Content::Image(src) => {
            let local = files
                .get(src)
                .ok_or_else(|| io::Error::other(format!("internal: no bytes read for /{src}")))?;
            let f = local.open()?;
            let len = local.len;
            if len != e.size {
                return Err(io::Error::other(format!(
                    "internal: /{src} is {len} bytes, expected {}",
                    e.size
                )));
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(len);
            tar.append_data(&mut h, path, f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Entry;

    fn plan() -> Plan {
        let mut p = Plan::default();
        let e = |content, mode| Entry {
            content,
            mode,
            uid: 0,
            gid: 0,
            size: 3,
            reason: String::new(),
            evidence: Vec::new(),
        };
        p.entries.insert("etc".into(), e(Content::Dir, 0o755));
        p.entries
            .insert("etc/x".into(), e(Content::Bytes(b"abc".to_vec()), 0o644));
        p.entries
            .insert("etc/y".into(), e(Content::Symlink("x".into()), 0o777));
        p.entries.insert(
            format!("long/{}", "n".repeat(150)),
            e(Content::Bytes(b"def".to_vec()), 0o600),
        );
        p
    }

    #[test]
    fn deterministic_and_readable() {
        let d = tempfile::tempdir().unwrap();
        let a = write_layer(&plan(), &HashMap::new(), &d.path().join("a"), 1_700_000_000).unwrap();
        let b = write_layer(&plan(), &HashMap::new(), &d.path().join("b"), 1_700_000_000).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        crate::digest::verify_file(&a.path, &a.digest, a.size).unwrap();
        let c = write_layer(&plan(), &HashMap::new(), &d.path().join("c"), 1).unwrap();
        assert_ne!(a.digest, c.digest, "mtime is part of the bytes");
        // Read it back with the rootfs merger.
        let mut fs = crate::rootfs::Rootfs::merge(vec![], None).unwrap();
        let (diff_id, n) = fs
            .apply_layer(0, crate::rootfs::open_layer(&a.path).unwrap())
            .unwrap();
        assert_eq!(diff_id, a.diff_id);
        assert_eq!(n, a.uncompressed_size);
        assert!(fs.get(&format!("long/{}", "n".repeat(150))).is_some());
        assert_eq!(
            fs.get("etc/y").unwrap().kind,
            crate::rootfs::Kind::Symlink("x".into())
        );
    }

    /// The threaded writer gives the bytes the plain chain (tar → gzip, one thread) gives: zlib's
    /// output depends on how its input is cut into writes, so the compressor must replay them.
    #[test]
    fn threads_give_the_bytes_of_the_single_threaded_chain() {
        let d = tempfile::tempdir().unwrap();
        // Several MiB of poorly compressible bytes in a local file, plus the small entries.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let big: Vec<u8> = (0..5_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 7) as u8 + b'a'
            })
            .collect();
        let spool = d.path().join("spool");
        std::fs::write(&spool, &big).unwrap();
        let mut p = plan();
        p.entries.insert(
            "usr/big".into(),
            Entry {
                content: Content::Image("usr/big".into()),
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: big.len() as u64,
                reason: String::new(),
                evidence: Vec::new(),
            },
        );
        let files: HashMap<String, crate::rootfs::Local> = [(
            "usr/big".to_string(),
            crate::rootfs::Local {
                path: spool.clone().into(),
                offset: 0,
                len: big.len() as u64,
            },
        )]
        .into();
        let threaded = write_layer(&p, &files, &d.path().join("t"), 7).unwrap();
        // The reference: what write_layer did in one thread.
        let plain = d.path().join("p");
        let outer = HashingWriter::new(std::fs::File::create(&plain).unwrap());
        let gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(outer, Compression::new(6));
        let mut tar = tar::Builder::new(HashingWriter::new(gz));
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, e) in &p.entries {
            append(&mut tar, path, e, &files, 7).unwrap();
        }
        let (gz, diff_id, _) = tar.into_inner().unwrap().finish();
        let (_, digest, _) = gz.finish().unwrap().finish();
        assert_eq!(threaded.diff_id, diff_id);
        assert_eq!(threaded.digest, digest);
    }
}
