//! The SBOM's per-file SHA1 and SHA256, taken on a thread of their own from the tar blocks the
//! layer writer already hands around: the tar side only notes where each file's bytes start.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use sha1::Digest as _;

use crate::sbom::Sums;

/// A regular file's bytes in the tar stream.
pub(super) struct Region {
    path: String,
    start: u64,
    len: u64,
}

/// What the tar side needs to note regions: the stream's length so far (kept by the block
/// writer) and where to send them.
#[derive(Clone)]
pub(super) struct Marker {
    pub(super) written: Rc<Cell<u64>>,
    pub(super) tx: Sender<Region>,
}

impl Marker {
    /// `r`, the content of `path` (`len` bytes), noting where its bytes start in the stream
    /// when the tar builder first reads it (its headers are written by then).
    pub(super) fn mark<R: Read>(&self, path: &str, len: u64, r: R) -> Marking<R> {
        Marking {
            inner: r,
            region: Some(Region {
                path: path.to_string(),
                start: 0,
                len,
            }),
            marker: self.clone(),
        }
    }
}

/// See [`Marker::mark`].
pub(super) struct Marking<R> {
    inner: R,
    region: Option<Region>,
    marker: Marker,
}

impl<R: Read> Read for Marking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(mut r) = self.region.take() {
            r.start = self.marker.written.get();
            // The sums thread outlives the tar side; a send fails only once it is gone, and
            // then the layer fails anyway.
            let _ = self.marker.tx.send(r);
        }
        self.inner.read(buf)
    }
}

/// The sums of the regions, from the stream's blocks. Every region starting in a block was
/// sent before that block was (a region is noted before its first byte is written), so it
/// is at hand when the block is.
pub(super) fn sum_regions(
    blocks: Receiver<Arc<Vec<u8>>>,
    regions: Receiver<Region>,
) -> BTreeMap<String, Sums> {
    let mut out = BTreeMap::new();
    let mut pending: VecDeque<Region> = VecDeque::new();
    let mut current: Option<(Region, sha1::Sha1, sha2::Sha256, u64)> = None;
    let mut pos = 0u64;
    for block in blocks {
        let end = pos + block.len() as u64;
        pending.extend(regions.try_iter());
        loop {
            if current.is_none() {
                match pending.front() {
                    Some(r) if r.start < end => {
                        let r = pending.pop_front().expect("just seen");
                        current = Some((r, Default::default(), Default::default(), 0));
                    }
                    _ => break,
                }
            }
            let (r, s1, s2, done) = current.as_mut().expect("just set");
            let from = r.start + *done;
            let to = (r.start + r.len).min(end);
            if from < to {
                let bytes = &block[(from - pos) as usize..(to - pos) as usize];
                s1.update(bytes);
                sha2::Digest::update(s2, bytes);
                *done += to - from;
            }
            if *done < r.len {
                break;
            }
            let (r, s1, s2, _) = current.take().expect("just used");
            out.insert(
                r.path,
                Sums {
                    sha1: hex::encode(s1.finalize()),
                    sha256: hex::encode(sha2::Digest::finalize(s2)),
                },
            );
        }
        pos = end;
    }
    out
}
