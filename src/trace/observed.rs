//! `--learn`: the paths a probe's program used in the source's sandbox (recorded with ptrace)
//! are kept, with the symlinks on their way; ELF files among them are traced like anything
//! else kept. A path that only this rule keeps is one static analysis missed.

use super::kit::{Cx, Evidence, Rule, Why};
use crate::error::Result;
use crate::rootfs::Kind;

pub(crate) struct Observed;

impl Rule for Observed {
    fn start(&mut self, cx: &mut Cx) -> Result<()> {
        let paths = cx.opts.observed.clone();
        let mut files = Vec::new();
        let mut found = Vec::new();
        for p in &paths {
            if let Ok(r) = cx.fs.resolve(p, true)
                && let Some(kind) = cx.fs.get(&r.path).map(|n| n.kind.clone())
            {
                if matches!(kind, Kind::File { .. }) {
                    files.push(r.path.clone());
                }
                if matches!(kind, Kind::File { .. } | Kind::Dir) {
                    found.push((r, kind));
                }
            }
        }
        cx.contents.prefetch(cx.fs, &files)?;
        for (r, _) in found {
            if r.path.is_empty() {
                continue;
            }
            cx.keep_links(&r.symlinks, &r.path);
            cx.keep(
                &r.path,
                Evidence::new(Why::Observed, None, "observed by probe"),
            );
        }
        Ok(())
    }
}
