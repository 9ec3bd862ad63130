//! zstd layers: one frame, level 3, with a content checksum, compressed by libzstd's own
//! worker threads in fixed 1 MiB jobs. zstd promises the same bytes for any number of workers
//! from one up (with the same parameters); one worker is the reference, and the tests compare
//! it with more workers than the machine has cores.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use zstd::zstd_safe::CParameter;

/// zstd's default level: about deflate's ratio at several times its speed.
pub(super) const LEVEL: i32 = 3;

/// Sends what the encoder writes to `out` in pieces of about 1 MiB.
struct Sender<'a> {
    out: &'a SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Sender<'_> {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out
            .send(std::mem::take(&mut self.buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer file thread stopped"))
    }
}

impl Write for Sender<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= super::BLOCK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compress the blocks read from `blocks` with `workers` zstd worker threads, sending the
/// frame's bytes, in order, to `out`.
pub(super) fn compress(
    blocks: Receiver<Arc<Vec<u8>>>,
    out: &SyncSender<Vec<u8>>,
    workers: usize,
) -> io::Result<()> {
    let sender = Sender {
        out,
        buf: Vec::new(),
    };
    let mut z = zstd::stream::write::Encoder::new(sender, LEVEL)?;
    z.include_checksum(true)?;
    z.multithread(workers.max(1) as u32)?;
    // Each worker's job: one block. Fixed, so the bytes do not depend on the worker count.
    z.set_parameter(CParameter::JobSize(super::BLOCK as u32))?;
    for block in blocks {
        z.write_all(&block)?;
    }
    z.finish()?.send()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd(data: &[u8], cut: usize, workers: usize) -> Vec<u8> {
        crate::layer::tests::through(data, cut, |rx, tx| compress(rx, tx, workers))
    }

    #[test]
    fn the_bytes_do_not_depend_on_the_workers() {
        let mut x: u64 = 7;
        let data: Vec<u8> = (0..(6 << 20) + 999)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if (i / 8192) % 2 == 0 {
                    (x >> 60) as u8 + b'a'
                } else {
                    (x >> 33) as u8
                }
            })
            .collect();
        let one = zstd(&data, 1 << 20, 1);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for workers in [2, cores, cores * 4] {
            assert_eq!(zstd(&data, 1 << 20, workers), one, "{workers} workers");
        }
        // Nor on how the input was cut into writes.
        assert_eq!(zstd(&data, 4096 + 17, 3), one);
        // Read back by an independent decoder (the one the merge reads layers with).
        let mut back = Vec::new();
        std::io::Read::read_to_end(
            &mut ruzstd::decoding::StreamingDecoder::new(&one[..]).unwrap(),
            &mut back,
        )
        .unwrap();
        assert_eq!(back, data);
    }
}
