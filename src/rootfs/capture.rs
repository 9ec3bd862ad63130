//! What a layer's one inflate pass keeps for the later stages: the bytes of the regular files
//! the tracer and the plan may read, copied into one spool file per layer as the merge streams
//! it, so no layer is inflated a second time. Bounded by a byte budget shared by the whole
//! process (at most half the free space of the temp dir, at most [`CAPTURE_BYTES`]); a file past
//! the budget, over [`CAPTURE_FILE_BYTES`] or in a tree no rule reads costs one targeted read
//! later (counted in [`super::Inflated`]).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::node::Local;
use crate::error::{Error, Result};

/// Most bytes of captured files one process holds on disk at once.
pub const CAPTURE_BYTES: u64 = 16 << 30;
/// Largest single file captured (a JDK's `lib/modules` is ~130 MB).
pub const CAPTURE_FILE_BYTES: u64 = 1 << 30;

/// Trees no evidence rule reads and no plan keeps (documentation, headers, package-manager
/// caches): not worth their disk writes. A file under them that is wanted after all is read
/// from its layer (one counted pass). `usr/share/doc/*/copyright` is kept by the plan and is
/// captured.
const SKIP_PREFIXES: &[&str] = &[
    "usr/share/man/",
    "usr/share/info/",
    "usr/include/",
    "usr/share/locale/",
    "var/lib/apt/lists/",
    "var/cache/",
];

/// Whether a layer entry's bytes are captured during the merge pass.
pub fn worth_capturing(path: &str, size: u64) -> bool {
    if size > CAPTURE_FILE_BYTES {
        return false;
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/") {
        return rest.ends_with("/copyright");
    }
    !SKIP_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Bytes the process may still capture.
pub struct Budget {
    left: AtomicU64,
}

impl Budget {
    pub fn new(bytes: u64) -> Arc<Self> {
        Arc::new(Budget {
            left: AtomicU64::new(bytes),
        })
    }

    /// The process-wide budget: `PARE_CAPTURE_BYTES` when set (tests), else half the free
    /// space of the temp dir, at most [`CAPTURE_BYTES`].
    pub fn global() -> Arc<Self> {
        static GLOBAL: std::sync::OnceLock<Arc<Budget>> = std::sync::OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let bytes = std::env::var("PARE_CAPTURE_BYTES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| {
                        free_bytes(&std::env::temp_dir())
                            .map_or(CAPTURE_BYTES, |f| (f / 2).min(CAPTURE_BYTES))
                    });
                Budget::new(bytes)
            })
            .clone()
    }

    fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.left.fetch_add(n, Ordering::AcqRel);
    }
}

// The field types differ between targets (u32 on some 32-bit ones).
#[allow(clippy::unnecessary_cast)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path; statvfs fills `st` on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0: the struct is initialized.
    let st = unsafe { st.assume_init() };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Where a merge writes its captures, and the budget they count against.
#[derive(Clone)]
pub struct Capture {
    pub dir: PathBuf,
    pub budget: Arc<Budget>,
}

/// Spool files made by this process (their names).
static CAPTURES: AtomicU64 = AtomicU64::new(0);

/// One layer's captured files: entry ordinal → bytes in the layer's spool. The spool is
/// removed and its bytes given back to the budget when the last holder lets go.
#[derive(Default)]
pub struct Captured {
    pub files: HashMap<u64, Local>,
    spool: Option<(PathBuf, u64, Arc<Budget>)>,
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Captured({} files)", self.files.len())
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if let Some((path, bytes, budget)) = self.spool.take() {
            let _ = std::fs::remove_file(path);
            budget.give(bytes);
        }
    }
}

/// Writes one layer's captures as its entries stream by.
pub struct Spooler {
    capture: Capture,
    out: Option<(Arc<Path>, io::BufWriter<std::fs::File>)>,
    offset: u64,
    taken: u64,
    files: HashMap<u64, Local>,
    /// The budget ran out: nothing more from this layer.
    full: bool,
}

impl Spooler {
    pub fn new(capture: Capture) -> Self {
        Spooler {
            capture,
            out: None,
            offset: 0,
            taken: 0,
            files: HashMap::new(),
            full: false,
        }
    }

    /// Copy entry `ordinal`'s `size` bytes from `r` when it is worth it and the budget allows.
    pub fn offer(
        &mut self,
        ordinal: u64,
        path: &str,
        size: u64,
        r: &mut impl io::Read,
    ) -> Result<()> {
        if self.full || !worth_capturing(path, size) {
            return Ok(());
        }
        if !self.capture.budget.take(size) {
            self.full = true;
            return Ok(());
        }
        self.taken += size;
        if self.out.is_none() {
            let n = CAPTURES.fetch_add(1, Ordering::Relaxed);
            // A counter name: never anything taken from the image.
            let p: Arc<Path> = self.capture.dir.join(format!("m{n}")).into();
            let f = std::fs::File::create(&p).map_err(|e| Error::io(&*p, e))?;
            self.out = Some((p, io::BufWriter::with_capacity(1 << 20, f)));
        }
        let (p, w) = self.out.as_mut().expect("spool just made");
        let n = io::copy(&mut io::Read::take(&mut *r, size), w)
            .map_err(|e| Error::io(format!("/{path}"), e))?;
        if n != size {
            return Err(Error::io(
                format!("/{path}"),
                io::Error::new(io::ErrorKind::UnexpectedEof, "the entry is truncated"),
            ));
        }
        self.files.insert(
            ordinal,
            Local {
                path: p.clone(),
                offset: self.offset,
                len: size,
            },
        );
        self.offset += size;
        Ok(())
    }

    pub fn finish(mut self) -> Result<Captured> {
        let taken = std::mem::take(&mut self.taken);
        let mut c = Captured {
            files: std::mem::take(&mut self.files),
            spool: None,
        };
        match self.out.take() {
            Some((p, w)) => {
                c.spool = Some((p.to_path_buf(), taken, self.capture.budget.clone()));
                let mut f = w.into_inner().map_err(|e| Error::io(&*p, e.into_error()))?;
                f.flush().map_err(|e| Error::io(&*p, e))?;
            }
            None => self.capture.budget.give(taken),
        }
        Ok(c)
    }
}

impl Drop for Spooler {
    /// A spooler dropped unfinished (the layer failed): its file and bytes go.
    fn drop(&mut self) {
        if let Some((p, _)) = self.out.take() {
            let _ = std::fs::remove_file(&p);
        }
        self.capture.budget.give(std::mem::take(&mut self.taken));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_and_caches_are_not_captured_but_copyrights_are() {
        assert!(worth_capturing(
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            2 << 20
        ));
        assert!(worth_capturing("usr/share/doc/jq/copyright", 100));
        assert!(!worth_capturing("usr/share/doc/jq/README.gz", 100));
        assert!(!worth_capturing("usr/share/man/man1/jq.1.gz", 100));
        assert!(!worth_capturing("var/lib/apt/lists/x_Packages", 100));
        assert!(!worth_capturing("opt/big", CAPTURE_FILE_BYTES + 1));
    }

    #[test]
    fn the_budget_bounds_captures_and_comes_back_when_they_go() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(10);
        let cap = Capture {
            dir: dir.path().to_path_buf(),
            budget: budget.clone(),
        };
        let mut s = Spooler::new(cap);
        s.offer(0, "a", 6, &mut &b"aaaaaa"[..]).unwrap();
        s.offer(1, "b", 6, &mut &b"bbbbbb"[..]).unwrap();
        s.offer(2, "c", 1, &mut &b"c"[..]).unwrap();
        let c = s.finish().unwrap();
        // `b` did not fit, and nothing after it is taken from that layer.
        assert_eq!(c.files.len(), 1);
        assert_eq!(c.files[&0].read(10).unwrap(), b"aaaaaa");
        assert_eq!(budget.left.load(Ordering::Relaxed), 4);
        let spool = c.files[&0].path.to_path_buf();
        drop(c);
        assert!(!spool.exists());
        assert_eq!(budget.left.load(Ordering::Relaxed), 10);
    }
}
