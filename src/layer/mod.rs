//! The deterministic layer writer: entries in path order, fixed mtime, numeric owners, no
//! user/group names, no xattrs; gzip (fixed header, 1 MiB blocks compressed in parallel) or
//! zstd. diff_id (sha256 of the tar) and digest (sha256 of the compressed blob) are computed
//! while streaming to a file; the bytes never depend on the number of threads.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};

use crate::digest::HashingWriter;
use crate::error::{Error, Result};
use crate::plan::Content;
use crate::sbom::Sums;

pub use crate::image::{LayerCompression, WrittenLayer};

mod gzip;
mod made;
pub mod split;
mod sums;
mod zstd;

pub use made::{MADE_BUDGET, Made};
pub use split::{Group, Item, split};

/// The tar is cut into blocks of this many bytes (the gzip blocks, zstd's jobs): part of the
/// layer format, since the bytes depend on it.
const BLOCK: usize = 1 << 20;

/// deflate's level: 5 writes layers 0.2–0.3% larger than zlib's default 6, about a quarter
/// faster (measured on kept Go, Node.js, Perl and Python trees).
const GZIP_LEVEL: u32 = 5;

/// The layer format in the recipe (`gzip-5-1m-by-source`: compression, level, block size, and
/// layers that follow the source's, [`split`]), made from the constants that shape the bytes: a different writer gives different bytes, so a batch
/// re-hardens results of another one.
pub fn format(compression: LayerCompression) -> String {
    let (name, level) = match compression {
        LayerCompression::Gzip => ("gzip", GZIP_LEVEL as i32),
        LayerCompression::Zstd => ("zstd", zstd::LEVEL),
    };
    format!("{name}-{level}-{}m-by-source", BLOCK >> 20)
}

/// How to write a layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    pub compression: LayerCompression,
    /// Compressing threads (0: `PARE_THREADS`, else one per core, at most 8). The bytes do
    /// not depend on it.
    pub threads: usize,
    /// Take each regular file's SHA1 and SHA256 (the SBOM's) while it is read into the tar.
    pub sums: bool,
}

impl LayerOptions {
    fn workers(&self) -> usize {
        match self.threads {
            0 => crate::rootfs::default_threads().min(8),
            n => n,
        }
    }
}

/// A written layer and, when asked, the checksums of its regular files by image path.
pub struct Written {
    pub layer: WrittenLayer,
    pub sums: BTreeMap<String, Sums>,
}

/// A writer that cuts what it is given into `BLOCK`-sized blocks and hands each to every
/// receiver of `txs` (bounded channels: memory stays a few blocks whatever the layer's size).
struct BlockWriter {
    buf: Vec<u8>,
    txs: Vec<SyncSender<Arc<Vec<u8>>>>,
    /// Bytes written so far (the checksums' regions are noted against it).
    written: std::rc::Rc<std::cell::Cell<u64>>,
}

impl BlockWriter {
    fn new(txs: Vec<SyncSender<Arc<Vec<u8>>>>) -> Self {
        BlockWriter {
            buf: Vec::with_capacity(BLOCK),
            txs,
            written: Default::default(),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = Arc::new(std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK)));
        for tx in &self.txs {
            tx.send(block.clone()).map_err(|_| {
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

impl Write for BlockWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        self.written.set(self.written.get() + n as u64);
        if self.buf.len() == BLOCK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write `items` (in path order) as a compressed tar at `out`. `files` maps canonical image
/// paths to local copies.
///
/// The threads: this one builds the tar; one hashes it (the diff_id); one takes each file's
/// checksums from the same blocks; the compressor (gzip: its own workers, one block each;
/// zstd: libzstd's workers) hands the compressed stream to one that hashes and writes it.
/// Each byte of a kept file is read once.
pub fn write_layer(
    items: &[Item],
    files: &HashMap<String, crate::rootfs::Local>,
    out: &Path,
    opts: &LayerOptions,
) -> Result<Written> {
    // A new file, never one already there (a source blob may sit in the same dir).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| Error::io(out, e))?;
    let werr = |e: io::Error| Error::io(out, e);
    let workers = opts.workers();
    std::thread::scope(|scope| {
        let (tx_hash, rx_hash) = sync_channel::<Arc<Vec<u8>>>(2);
        let (tx_z, rx_z) = sync_channel::<Arc<Vec<u8>>>(2);
        let (tx_out, rx_out) = sync_channel::<Vec<u8>>(4);
        let diff = scope.spawn(move || {
            let mut h = HashingWriter::new(io::sink());
            for c in rx_hash {
                let _ = h.write_all(&c);
            }
            let (_, d, n) = h.finish();
            (d, n)
        });
        let written = scope.spawn(move || -> io::Result<(String, u64)> {
            let mut w = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
            for c in rx_out {
                w.write_all(&c)?;
            }
            let (mut buf, digest, size) = w.finish();
            buf.flush()?;
            Ok((digest, size))
        });
        // The files' checksums, on their own thread from the same blocks.
        let (tx_regions, rx_regions) = std::sync::mpsc::channel();
        let (tx_sums, summed) = if opts.sums {
            let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(2);
            let t = scope.spawn(move || sums::sum_regions(rx, rx_regions));
            (Some(tx), Some(t))
        } else {
            (None, None)
        };
        let compression = opts.compression;
        let compressed = scope.spawn(move || match compression {
            LayerCompression::Gzip => gzip::compress(rx_z, &tx_out, GZIP_LEVEL, workers),
            LayerCompression::Zstd => zstd::compress(rx_z, &tx_out, workers),
        });
        let mut sums = BTreeMap::new();
        let built = (|| -> Result<()> {
            let mut txs = vec![tx_hash, tx_z];
            txs.extend(tx_sums);
            let w = BlockWriter::new(txs);
            let marker = opts.sums.then(|| sums::Marker {
                written: w.written.clone(),
                tx: tx_regions,
            });
            let mut tar = tar::Builder::new(w);
            tar.mode(tar::HeaderMode::Deterministic);
            for it in items {
                let s = append(&mut tar, it, files, marker.as_ref()).map_err(werr)?;
                if let Some(s) = s {
                    sums.insert(it.path.to_string(), s);
                }
            }
            tar.into_inner().map_err(werr)?.finish().map_err(werr)
        })();
        // The threads' own failures come first: the tar side then only saw a closed pipe.
        let z = compressed
            .join()
            .map_err(|_| Error::Other("the compressor thread panicked".into()))?;
        let out_done = written
            .join()
            .map_err(|_| Error::Other("the layer file thread panicked".into()))?;
        let (diff_id, uncompressed_size) = diff
            .join()
            .map_err(|_| Error::Other("the diff_id thread panicked".into()))?;
        if let Some(t) = summed {
            sums.extend(
                t.join()
                    .map_err(|_| Error::Other("the checksum thread panicked".into()))?,
            );
        }
        let (digest, size) = out_done.map_err(werr)?;
        z.map_err(werr)?;
        built?;
        Ok(Written {
            layer: WrittenLayer {
                path: out.to_path_buf(),
                digest,
                size,
                diff_id,
                uncompressed_size,
                compression,
            },
            sums,
        })
    })
}

/// Layers written side by side (each with its compressors), so one layer's last block does
/// not leave the other cores idle while it is compressed.
const LAYERS_AT_ONCE: usize = 3;

/// Write each group as a layer (`result-N` in `dir`, or the one `made` kept for its key),
/// a few at once; in the groups' order.
pub fn write_groups(
    groups: &[Group],
    files: &HashMap<String, crate::rootfs::Local>,
    dir: &Path,
    opts: &LayerOptions,
    made: Option<&Made>,
) -> Result<Vec<Written>> {
    let numbered: Vec<(usize, &Group)> = groups.iter().enumerate().collect();
    crate::par::map(&numbered, LAYERS_AT_ONCE, |&(i, g)| {
        // Not `layer-N`: the source's downloaded layers are named so in the dir.
        let path = dir.join(format!("result-{i}"));
        let write = |out: &Path| write_layer(&g.items, files, out, opts);
        match (made, &g.key) {
            (Some(m), Some(key)) => m.get_or_write(key, opts.sums, &path, write),
            _ => write(&path),
        }
    })
    .into_iter()
    .collect()
}

/// One plan entry into the tar. With a `marker`, a regular file's checksums: a small one's
/// here, a file's from the image by the checksum thread (its bytes' place in the stream
/// noted).
fn append<W: io::Write>(
    tar: &mut tar::Builder<W>,
    it: &Item,
    files: &HashMap<String, crate::rootfs::Local>,
    marker: Option<&sums::Marker>,
) -> io::Result<Option<Sums>> {
    let (path, e) = (it.path, it.entry);
    let mut h = tar::Header::new_gnu();
    h.set_mtime(it.mtime);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mode(e.mode);
    match &e.content {
        Content::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, format!("{path}/"), io::empty())?;
            Ok(None)
        }
        Content::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, path, target)?;
            Ok(None)
        }
        Content::Bytes(b) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(b.len() as u64);
            tar.append_data(&mut h, path, &b[..])?;
            marker.map(|_| Sums::of_reader(&b[..])).transpose()
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
            match marker {
                Some(m) if len > 0 => {
                    tar.append_data(&mut h, path, m.mark(path, len, f))?;
                    Ok(None)
                }
                Some(_) => {
                    tar.append_data(&mut h, path, f)?;
                    Sums::of_reader(io::empty()).map(Some)
                }
                None => {
                    tar.append_data(&mut h, path, f)?;
                    Ok(None)
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `data` cut into pieces of `cut` bytes and fed to a compressing `stage` (gzip's or
    /// zstd's), from a thread of its own; what the stage sends out, whole.
    pub(in crate::layer) fn through(
        data: &[u8],
        cut: usize,
        stage: impl FnOnce(
            std::sync::mpsc::Receiver<Arc<Vec<u8>>>,
            &SyncSender<Vec<u8>>,
        ) -> io::Result<()>,
    ) -> Vec<u8> {
        let (btx, brx) = sync_channel(2);
        let (otx, orx) = sync_channel(2);
        let blocks: Vec<Arc<Vec<u8>>> = data.chunks(cut).map(|c| Arc::new(c.to_vec())).collect();
        std::thread::scope(|s| {
            s.spawn(move || {
                for b in blocks {
                    btx.send(b).unwrap();
                }
            });
            let out = s.spawn(move || orx.into_iter().flatten().collect::<Vec<u8>>());
            stage(brx, &otx).unwrap();
            drop(otx);
            out.join().unwrap()
        })
    }
    use crate::plan::{Entry, Plan};

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

    fn opts(compression: LayerCompression, threads: usize) -> LayerOptions {
        LayerOptions {
            compression,
            threads,
            sums: true,
        }
    }

    /// The recipe's layer formats: changing them re-hardens every result of a batch.
    #[test]
    fn layer_formats() {
        assert_eq!(format(LayerCompression::Gzip), "gzip-5-1m-by-source");
        assert_eq!(format(LayerCompression::Zstd), "zstd-3-1m-by-source");
    }

    /// Groups written side by side give each the bytes it gets alone, in the groups' order;
    /// with a cache, a second image's equal group is not written again.
    #[test]
    fn groups_written_at_once_are_the_groups_written_alone() {
        let d = tempfile::tempdir().unwrap();
        let plans: Vec<Plan> = (0..5)
            .map(|i| {
                let mut p = plan();
                p.entries.insert(
                    format!("g{i}"),
                    Entry {
                        content: Content::Bytes(vec![i as u8; 3000 * (i + 1)]),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        size: 3000 * (i as u64 + 1),
                        reason: String::new(),
                        evidence: Vec::new(),
                    },
                );
                p
            })
            .collect();
        let groups: Vec<Group> = plans
            .iter()
            .enumerate()
            .map(|(i, p)| Group {
                source: Some(i),
                items: split::all(p, 9),
                key: Some(format!("k{i}")),
            })
            .collect();
        let o = opts(LayerCompression::Gzip, 2);
        let made = Made::new().unwrap();
        let at_once = write_groups(&groups, &HashMap::new(), d.path(), &o, Some(&made)).unwrap();
        for (i, g) in groups.iter().enumerate() {
            let alone = d.path().join(format!("alone-{i}"));
            let one = write_layer(&g.items, &HashMap::new(), &alone, &o).unwrap();
            assert_eq!(one.layer.digest, at_once[i].layer.digest, "group {i}");
            assert_eq!(one.sums.len(), at_once[i].sums.len());
        }
        let dir2 = tempfile::tempdir().unwrap();
        let again = write_groups(&groups, &HashMap::new(), dir2.path(), &o, Some(&made)).unwrap();
        assert_eq!(made.hits.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert!(
            std::fs::read_dir(dir2.path()).unwrap().next().is_none(),
            "nothing written"
        );
        assert_eq!(again[4].layer.digest, at_once[4].layer.digest);
    }

    /// The writer never replaces a file (the image's downloaded layers share its dir).
    #[test]
    fn an_existing_file_is_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let there = d.path().join("layer-0");
        std::fs::write(&there, b"a source blob").unwrap();
        let o = opts(LayerCompression::Gzip, 1);
        assert!(write_layer(&split::all(&plan(), 1), &HashMap::new(), &there, &o).is_err());
        assert_eq!(std::fs::read(&there).unwrap(), b"a source blob");
    }

    #[test]
    fn deterministic_and_readable() {
        let d = tempfile::tempdir().unwrap();
        for c in [LayerCompression::Gzip, LayerCompression::Zstd] {
            let o = opts(c, 0);
            let w = |name: &str, mtime| {
                write_layer(
                    &split::all(&plan(), mtime),
                    &HashMap::new(),
                    &d.path().join(format!("{c:?}-{name}")),
                    &o,
                )
                .unwrap()
                .layer
            };
            let (a, b) = (w("a", 1_700_000_000), w("b", 1_700_000_000));
            assert_eq!(a.digest, b.digest);
            assert_eq!(a.diff_id, b.diff_id);
            assert_eq!(a.descriptor().media_type, c.media_type());
            crate::digest::verify_file(&a.path, &a.digest, a.size).unwrap();
            let c = w("c", 1);
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
    }

    /// One thread and more threads than cores give the same layer, gzip and zstd alike, and
    /// the checksums taken on the way are those of the files.
    #[test]
    fn the_bytes_do_not_depend_on_the_threads() {
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
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for c in [LayerCompression::Gzip, LayerCompression::Zstd] {
            let one = write_layer(
                &split::all(&p, 7),
                &files,
                &d.path().join(format!("{c:?}1")),
                &opts(c, 1),
            )
            .unwrap();
            let many = write_layer(
                &split::all(&p, 7),
                &files,
                &d.path().join(format!("{c:?}n")),
                &opts(c, cores * 3),
            )
            .unwrap();
            assert_eq!(one.layer.digest, many.layer.digest, "{c:?}");
            assert_eq!(one.layer.diff_id, many.layer.diff_id);
            assert_eq!(
                one.sums["usr/big"].sha256,
                Sums::of_reader(&big[..]).unwrap().sha256
            );
            assert_eq!(
                one.sums["etc/x"].sha1,
                Sums::of_reader(&b"abc"[..]).unwrap().sha1
            );
            assert_eq!(one.sums.len(), 3, "regular files only");
        }
        // The gzip layer is a plain gzip of the plain tar (what any reader sees).
        let g = write_layer(
            &split::all(&p, 7),
            &files,
            &d.path().join("g"),
            &opts(LayerCompression::Gzip, 2),
        )
        .unwrap()
        .layer;
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(&g.path).unwrap()),
            &mut tar,
        )
        .unwrap();
        assert_eq!(crate::digest::sha256_bytes(&tar), g.diff_id);
    }

    /// The checksum thread's sums, for files of every size around the tar's 512-byte records
    /// and the 1 MiB blocks (empty ones included), are those of the files.
    #[test]
    fn checksums_of_files_across_blocks() {
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..9_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let spool = d.path().join("spool");
        std::fs::write(&spool, &data).unwrap();
        let sizes = [
            0u64,
            1,
            511,
            512,
            513,
            1 << 20,
            (1 << 20) + 1,
            3_000_000,
            7,
            0,
            2_000_000,
        ];
        let mut p = Plan::default();
        let mut files = HashMap::new();
        let mut offset = 0u64;
        for (i, &size) in sizes.iter().enumerate() {
            let name = format!("f/{i:02}-{}", "x".repeat(i * 20));
            p.entries.insert(
                name.clone(),
                Entry {
                    content: Content::Image(name.clone()),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    size,
                    reason: String::new(),
                    evidence: Vec::new(),
                },
            );
            files.insert(
                name,
                crate::rootfs::Local {
                    path: spool.clone().into(),
                    offset,
                    len: size,
                },
            );
            offset += size;
        }
        let w = write_layer(
            &split::all(&p, 1),
            &files,
            &d.path().join("l"),
            &opts(LayerCompression::Zstd, 2),
        )
        .unwrap();
        assert_eq!(w.sums.len(), sizes.len());
        for (name, local) in &files {
            let want =
                Sums::of_reader(&data[local.offset as usize..(local.offset + local.len) as usize])
                    .unwrap();
            assert_eq!(w.sums[name].sha256, want.sha256, "{name}");
            assert_eq!(w.sums[name].sha1, want.sha1, "{name}");
        }
    }
}
