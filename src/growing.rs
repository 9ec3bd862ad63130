//! A blob file being downloaded while a reader already consumes it: the download appends (it
//! resumes after a cut instead of starting over, so the file only grows and its bytes are
//! exactly the bytes the digest check hashed), and a [`Follower`] reads up to what has been
//! written, waiting for more. When the download ends, the follower sees the end of the file,
//! or the download's error.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct State {
    len: u64,
    /// `Some` once the download ended: `Ok` verified, `Err` the reason it failed.
    done: Option<Result<(), String>>,
}

/// The progress of one download into `path`.
#[derive(Default)]
pub struct Growing {
    state: Mutex<State>,
    cv: Condvar,
}

impl std::fmt::Debug for Growing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        write!(f, "Growing({} bytes, done: {:?})", s.len, s.done)
    }
}

impl Growing {
    pub fn new() -> Arc<Self> {
        Arc::new(Growing::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file now holds `len` bytes (written and flushed to the OS).
    pub fn advance(&self, len: u64) {
        self.lock().len = len;
        self.cv.notify_all();
    }

    /// The download ended: verified, or failed with `error`.
    pub fn finish(&self, result: Result<(), String>) {
        let mut s = self.lock();
        if s.done.is_none() {
            s.done = Some(result);
        }
        drop(s);
        self.cv.notify_all();
    }

    /// Whether the download ended in failure.
    pub fn failed(&self) -> bool {
        matches!(self.lock().done, Some(Err(_)))
    }

    /// Whether the download ended verified.
    pub fn complete(&self) -> bool {
        matches!(self.lock().done, Some(Ok(())))
    }

    /// A reader of the file from its start, following the download.
    pub fn follow(self: &Arc<Self>, path: PathBuf) -> Follower {
        Follower {
            growing: self.clone(),
            path,
            file: None,
            pos: 0,
        }
    }
}

/// Reads a file as it grows; see [`Growing`].
pub struct Follower {
    growing: Arc<Growing>,
    path: PathBuf,
    file: Option<std::fs::File>,
    pos: u64,
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let avail = {
            let mut s = self.growing.lock();
            loop {
                if s.len > self.pos {
                    break s.len - self.pos;
                }
                match &s.done {
                    Some(Ok(())) => return Ok(0),
                    Some(Err(e)) => return Err(io::Error::other(e.clone())),
                    None => {
                        s = self.growing.cv.wait(s).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        };
        if self.file.is_none() {
            self.file = Some(std::fs::File::open(&self.path)?);
        }
        let f = self.file.as_mut().expect("just opened");
        let want = buf.len().min(avail.min(usize::MAX as u64) as usize);
        let n = std::os::unix::fs::FileExt::read_at(f, &mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the downloaded file is shorter than written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_follower_reads_what_is_written_and_waits_for_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("blob");
        let mut f = std::fs::File::create(&p).unwrap();
        let g = Growing::new();
        let mut r = g.follow(p.clone());
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            r.read_to_end(&mut out).map(|_| out)
        });
        for chunk in [&b"hello "[..], b"growing ", b"world"] {
            f.write_all(chunk).unwrap();
            g.advance(f.metadata().unwrap().len());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        g.finish(Ok(()));
        assert_eq!(reader.join().unwrap().unwrap(), b"hello growing world");
    }

    #[test]
    fn a_failed_download_is_the_followers_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("blob");
        std::fs::write(&p, b"abc").unwrap();
        let g = Growing::new();
        g.advance(3);
        let mut r = g.follow(p);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        g.finish(Err("sha256 mismatch".into()));
        let e = r.read(&mut buf).unwrap_err();
        assert!(e.to_string().contains("sha256 mismatch"));
    }
}
