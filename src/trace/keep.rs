//! `--keep PATTERN`: matching files and directories are kept (a directory with its whole
//! subtree); ELF files among them are traced like anything else kept.

use super::kit::{Cx, Evidence, Rule, Why};
use crate::error::{Error, Result};
use crate::rootfs::{Kind, display};

pub(crate) struct Keep;

impl Rule for Keep {
    fn start(&mut self, cx: &mut Cx) -> Result<()> {
        let pats = cx.opts.keep.clone();
        for pat in pats {
            let abs = if pat.starts_with('/') {
                pat.clone()
            } else {
                format!("/{pat}")
            };
            let matcher = globset::GlobBuilder::new(&abs)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Usage(format!("--keep {pat:?}: {e}")))?
                .compile_matcher();
            let mut matched: Vec<String> = cx
                .fs
                .nodes
                .keys()
                .filter(|k| !k.is_empty() && matcher.is_match(display(k)))
                .cloned()
                .collect();
            if matched.is_empty() {
                // A literal path may go through symlinks.
                if let Ok(r) = cx.fs.resolve(&abs, true)
                    && cx.fs.get(&r.path).is_some()
                {
                    cx.keep_links(&r.symlinks, &r.path);
                    matched.push(r.path);
                }
            }
            if matched.is_empty() {
                return Err(Error::Usage(format!(
                    "--keep {pat:?} matches nothing in the image"
                )));
            }
            let ev = Evidence::new(Why::KeepFlag, None, format!("--keep {pat}"));
            let mut all = Vec::new();
            for m in matched {
                all.push(m.clone());
                if cx.fs.get(&m).is_some_and(|n| n.is_dir()) {
                    all.extend(cx.fs.subtree(&m).map(|(k, _)| k.clone()));
                }
            }
            let files: Vec<String> = all
                .iter()
                .filter(|p| matches!(cx.fs.get(p).map(|n| &n.kind), Some(Kind::File { .. })))
                .cloned()
                .collect();
            cx.contents.prefetch(cx.fs, &files)?;
            for p in all {
                match cx.fs.get(&p).map(|n| n.kind.clone()) {
                    Some(Kind::File { .. } | Kind::Dir) => {
                        cx.keep(&p, ev.clone());
                    }
                    Some(Kind::Symlink(_)) => {
                        cx.out
                            .symlinks
                            .entry(p.clone())
                            .or_default()
                            .push(ev.clone());
                        if let Ok(r) = cx.fs.resolve(&p, true)
                            && cx
                                .fs
                                .get(&r.path)
                                .is_some_and(|n| matches!(n.kind, Kind::File { .. }))
                        {
                            cx.keep_links(&r.symlinks, &r.path);
                            cx.keep(
                                &r.path,
                                Evidence::new(
                                    Why::KeepFlag,
                                    None,
                                    format!("target of {}", display(&p)),
                                ),
                            );
                        }
                    }
                    _ => cx.warn(format!("{}: device or fifo not kept", display(&p))),
                }
            }
        }
        Ok(())
    }
}
