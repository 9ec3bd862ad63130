//! Layer blobs opened as tar streams: gzip, zstd (any number of frames) or plain, sniffed from
//! the first bytes; and a read-ahead thread so inflating runs beside the parse.

use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::LayerBlob;

/// Open a layer blob as a tar stream, whatever its compression (sniffed from magic bytes, so a
/// mislabelled media type still reads).
pub fn open_layer(path: &Path) -> Result<Box<dyn Read + Send>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    decompressing(f, path)
}

/// A layer blob's uncompressed stream; a blob still downloading is read as it arrives (the
/// stream ends only once the download is verified).
pub fn open_blob(blob: &LayerBlob) -> Result<Box<dyn Read + Send>> {
    match (&blob.growing, &blob.unverified) {
        (Some(g), _) if !g.complete() => decompressing(g.follow(blob.path.clone()), &blob.path),
        (_, Some(v)) if !v.verified() => {
            let f = std::fs::File::open(&blob.path).map_err(|e| Error::io(&blob.path, e))?;
            decompressing(v.reader(f), &blob.path)
        }
        _ => open_layer(&blob.path),
    }
}

/// `r` read on a thread of its own, up to a few MiB ahead of the caller: a layer's inflate then
/// runs beside the tar parse and the captures instead of taking turns with them.
pub fn read_ahead(mut r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    const BLOCK: usize = 1 << 20;
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; BLOCK];
            let mut n = 0;
            let mut failed = None;
            while n < BLOCK {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            buf.truncate(n);
            let end = n < BLOCK;
            if n > 0 && tx.send(Ok(buf)).is_err() {
                return;
            }
            if let Some(e) = failed {
                let _ = tx.send(Err(e));
                return;
            }
            if end {
                return;
            }
        }
    });
    Box::new(ReadAhead {
        rx,
        cur: Vec::new(),
        pos: 0,
    })
}

struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The reader thread ended: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `f` decompressed as its first bytes say (gzip, zstd, or a plain tar).
fn decompressing(mut f: impl Read + Send + 'static, path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        let k = f.read(&mut magic[n..]).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let head = io::Cursor::new(magic[..n].to_vec());
    let r = BufReader::with_capacity(256 * 1024, head.chain(f));
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        // libzstd reads every frame (zstd:chunked layers have many) and skips skippable
        // ones; windows above 128 MiB are refused (memory stays bounded on hostile input).
        let mut z = zstd::stream::read::Decoder::with_buffer(r).map_err(|e| Error::io(path, e))?;
        z.window_log_max(27).map_err(|e| Error::io(path, e))?;
        Box::new(z)
    } else {
        Box::new(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::Rootfs;
    use crate::rootfs::tests::{paths, tar_of};

    #[test]
    fn zstd_with_several_frames_and_a_skippable_one() {
        let tar1 = tar_of(&[("a", "f:first")]);
        let tar2 = tar_of(&[("b", "f:second")]);
        // One tar split over two frames, with a skippable frame between them.
        let mut whole = tar1[..tar1.len() - 1024].to_vec();
        whole.extend_from_slice(&tar2);
        let (p1, p2) = whole.split_at(700);
        let mut z =
            ruzstd::encoding::compress_to_vec(p1, ruzstd::encoding::CompressionLevel::Fastest);
        z.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        z.extend_from_slice(&3u32.to_le_bytes());
        z.extend_from_slice(b"xyz");
        z.extend(ruzstd::encoding::compress_to_vec(
            p2,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("l");
        std::fs::write(&path, z).unwrap();
        let mut fs = Rootfs::empty();
        let (diff_id, n) = fs.apply_layer(0, open_layer(&path).unwrap()).unwrap();
        assert_eq!(n, whole.len() as u64);
        assert_eq!(diff_id, crate::digest::sha256_bytes(&whole));
        assert_eq!(paths(&fs), vec!["a", "b"]);
    }

    /// A zstd layer cut short is an error, never a shorter layer read as whole.
    #[test]
    fn a_cut_zstd_stream_is_an_error() {
        let tar = tar_of(&[("a", "f:first"), ("b", "f:second")]);
        let z = ruzstd::encoding::compress_to_vec(
            &tar[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let d = tempfile::tempdir().unwrap();
        for cut in [z.len() - 1, z.len() / 2, 5] {
            let path = d.path().join(format!("l{cut}"));
            std::fs::write(&path, &z[..cut]).unwrap();
            let mut out = Vec::new();
            let r = open_layer(&path)
                .and_then(|mut r| r.read_to_end(&mut out).map_err(|e| Error::io(&path, e)));
            assert!(
                r.is_err(),
                "cut at {cut} of {}: read {} bytes",
                z.len(),
                out.len()
            );
        }
    }
}
