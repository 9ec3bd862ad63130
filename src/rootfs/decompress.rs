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
        Box::new(MultiZstd::new(Box::new(r)))
    } else {
        Box::new(r)
    })
}

/// A zstd stream of any number of frames (zstd:chunked layers have many), skippable frames
/// skipped; ruzstd's decoder reads one frame.
struct MultiZstd {
    cur: Option<ruzstd::decoding::StreamingDecoder<Prefixed, ruzstd::decoding::FrameDecoder>>,
    spare: Option<(Box<dyn Read + Send>, ruzstd::decoding::FrameDecoder)>,
}

/// A reader with 4 bytes put back in front.
struct Prefixed {
    head: [u8; 4],
    used: usize,
    inner: Box<dyn Read + Send>,
}

impl Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.used < 4 {
            let n = (4 - self.used).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.used..self.used + n]);
            self.used += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl MultiZstd {
    fn new(src: Box<dyn Read + Send>) -> Self {
        MultiZstd {
            cur: None,
            spare: Some((src, ruzstd::decoding::FrameDecoder::new())),
        }
    }
}

impl Read for MultiZstd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let zerr = |e: ruzstd::decoding::errors::FrameDecoderError| {
            io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
        };
        loop {
            if let Some(d) = &mut self.cur {
                let n = d.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let d = self.cur.take().expect("current frame");
                let (p, dec) = d.into_parts();
                self.spare = Some((p.inner, dec));
            }
            let Some((mut src, dec)) = self.spare.take() else {
                return Ok(0);
            };
            let mut magic = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                let k = src.read(&mut magic[got..])?;
                if k == 0 {
                    break;
                }
                got += k;
            }
            if got == 0 {
                return Ok(0);
            }
            if got < 4 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "zstd: truncated frame",
                ));
            }
            if (0x184D_2A50..=0x184D_2A5F).contains(&u32::from_le_bytes(magic)) {
                let mut len = [0u8; 4];
                src.read_exact(&mut len)?;
                let len = u64::from(u32::from_le_bytes(len));
                let skipped = io::copy(&mut (&mut src).take(len), &mut io::sink())?;
                if skipped != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "zstd: truncated skippable frame",
                    ));
                }
                self.spare = Some((src, dec));
                continue;
            }
            let p = Prefixed {
                head: magic,
                used: 0,
                inner: src,
            };
            self.cur =
                Some(ruzstd::decoding::StreamingDecoder::new_with_decoder(p, dec).map_err(zerr)?);
        }
    }
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
}
