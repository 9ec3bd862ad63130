//! Deterministic block-parallel gzip (pigz's scheme): the tar is cut into fixed 1 MiB blocks;
//! block *i* is deflated on its own, primed with the last 32 KiB of block *i−1* as its
//! dictionary and ended with a sync flush (byte-aligned, not final); the blocks are concatenated
//! in order behind a fixed header, then an empty final block and the CRC32 and size of the
//! whole. One standard gzip stream whose bytes depend on the input, the level and the block
//! size only: never on how many threads compressed it nor in which order they finished.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, Crc, FlushCompress};

/// deflate's window: what a block may refer back to in the one before it.
const DICTIONARY: usize = 32 * 1024;

/// The gzip header pare writes: no name, mtime 0, no extra flags, OS 255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// One block's deflate stream (sync-flushed, not final) and the CRC32 of its input.
fn deflate_block(level: u32, dictionary: Option<&[u8]>, data: &[u8]) -> io::Result<(Vec<u8>, Crc)> {
    let mut c = Compress::new(Compression::new(level), false);
    if let Some(d) = dictionary {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    // Room for incompressible input (stored blocks) in one call; more is added if ever short.
    let mut out = Vec::with_capacity(data.len() + data.len() / 256 + 64);
    loop {
        let done = c.total_in() as usize;
        c.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // zlib has finished a sync flush once it consumed the input and left output room.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(64 * 1024);
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok((out, crc))
}

/// The stream's end: an empty final deflate block, the CRC32 and the size (mod 2³²).
fn trailer(crc: &Crc) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(64);
    c.compress_vec(&[], &mut out, FlushCompress::Finish)
        .map_err(io::Error::other)?;
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    Ok(out)
}

type Job = (usize, Arc<Vec<u8>>, Option<Arc<Vec<u8>>>);
type Done = (usize, io::Result<(Vec<u8>, Crc)>);

/// Compress the blocks read from `blocks` with `workers` threads, sending the gzip stream's
/// bytes, in order, to `out`. Memory: at most about 3 × `workers` blocks in flight.
pub(super) fn compress(
    blocks: Receiver<Arc<Vec<u8>>>,
    out: &SyncSender<Vec<u8>>,
    level: u32,
    workers: usize,
) -> io::Result<()> {
    let workers = workers.max(1);
    let failed = AtomicBool::new(false);
    let (job_tx, job_rx) = sync_channel::<Job>(workers);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|s| {
        let (done_tx, done_rx) = sync_channel::<Done>(workers);
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || {
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, block, prev))) = job else { break };
                    let dict = prev
                        .as_deref()
                        .map(|p| &p[p.len().saturating_sub(DICTIONARY)..]);
                    if done_tx
                        .send((i, deflate_block(level, dict, &block)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let failed = &failed;
        // The dispatcher: each block with the one before it (its dictionary). It stops
        // reading when the stream failed, so the tar side sees a closed pipe.
        s.spawn(move || {
            let mut prev: Option<Arc<Vec<u8>>> = None;
            for (i, block) in blocks.into_iter().enumerate() {
                if failed.load(Ordering::Relaxed) || job_tx.send((i, block.clone(), prev)).is_err()
                {
                    break;
                }
                prev = Some(block);
            }
        });
        let result = reorder(done_rx, out, failed);
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        result
    })
}

/// The workers' blocks put back in order behind the header, then the trailer. On an error
/// it keeps draining (so no worker waits on a full channel) and returns the first one.
fn reorder(done: Receiver<Done>, out: &SyncSender<Vec<u8>>, failed: &AtomicBool) -> io::Result<()> {
    let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the layer file thread stopped");
    let mut first_error = out.send(HEADER.to_vec()).map_err(|_| closed()).err();
    if first_error.is_some() {
        failed.store(true, Ordering::Relaxed);
    }
    let mut pending = BTreeMap::new();
    let mut next = 0;
    let mut crc = Crc::new();
    for (i, r) in done {
        if first_error.is_some() {
            continue;
        }
        pending.insert(i, r);
        while let Some(r) = pending.remove(&next) {
            next += 1;
            let sent = r.and_then(|(bytes, c)| {
                crc.combine(&c);
                out.send(bytes).map_err(|_| closed())
            });
            if let Err(e) = sent {
                failed.store(true, Ordering::Relaxed);
                first_error = Some(e);
                break;
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    out.send(trailer(&crc)?).map_err(|_| closed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Some MiB of mixed bytes: text-like runs, repeats across block boundaries, noise.
    fn input(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 4096) % 3 == 0 {
                    x as u8
                } else {
                    b"the quick brown fox "[i % 20] + (x % 3) as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], block: usize, workers: usize) -> Vec<u8> {
        crate::layer::tests::through(data, block, |rx, tx| compress(rx, tx, 6, workers))
    }

    #[test]
    fn the_bytes_do_not_depend_on_the_workers() {
        let data = input(5 << 20 | 12345);
        let one = gzip(&data, 1 << 20, 1);
        for workers in [2, 3, 16] {
            assert_eq!(gzip(&data, 1 << 20, workers), one, "{workers} workers");
        }
        // A standard gzip stream: read back whole by a plain decoder.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // The dictionary makes the blocks nearly as small as one stream.
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        io::Write::write_all(&mut single, &data).unwrap();
        let single = single.finish().unwrap();
        assert!(
            one.len() as f64 <= single.len() as f64 * 1.01,
            "{} vs {}",
            one.len(),
            single.len()
        );
    }

    #[test]
    fn empty_and_tiny_inputs_are_valid_gzip() {
        for data in [Vec::new(), b"x".to_vec(), input(1 << 20)] {
            let z = gzip(&data, 1 << 20, 2);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn a_closed_output_fails_without_hanging() {
        let data = input(8 << 20);
        let (btx, brx) = sync_channel(2);
        let (otx, orx) = sync_channel::<Vec<u8>>(1);
        drop(orx);
        let feeder = std::thread::spawn(move || {
            for c in data.chunks(1 << 20) {
                if btx.send(Arc::new(c.to_vec())).is_err() {
                    return false;
                }
            }
            true
        });
        assert!(compress(brx, &otx, 6, 4).is_err());
        // The feeder finished or saw a closed pipe; either way nothing hangs.
        let _ = feeder.join().unwrap();
    }
}
