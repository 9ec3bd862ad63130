//! What the report and the SBOM say of the packages and files kept.

use crate::image::WrittenLayer;
use crate::plan::{Content, Plan};
use crate::report::{FileInfo, SetIdInfo, SizeChange, Sizes};
use crate::rootfs::Rootfs;
use crate::trace::Trace;
use crate::transport::source::PulledImage;

/// Per package: the files kept and dropped.
pub(super) fn packages_info(
    db: &crate::packages::Db,
    fs: &Rootfs,
    plan: &Plan,
    trace: &Trace,
) -> crate::report::PackagesInfo {
    use crate::report::PackageInfo;
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for (i, p) in db.packages.iter().enumerate() {
        let kept_here: std::collections::HashSet<&String> =
            plan.packages.get(&i).into_iter().flatten().collect();
        let (k, d): (Vec<String>, Vec<String>) = db
            .files_of(fs, i)
            .into_iter()
            .partition(|f| kept_here.contains(f));
        let mut info = PackageInfo {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.arch.clone(),
            source: p.source.clone(),
            kept_count: k.len(),
            dropped_count: d.len(),
            files_kept: k.iter().map(|f| crate::rootfs::display(f)).collect(),
            files_dropped: d.iter().map(|f| crate::rootfs::display(f)).collect(),
        };
        if plan.packages.contains_key(&i) {
            kept.push(info);
        } else {
            // All of it is gone: the counts say enough.
            info.files_dropped.clear();
            dropped.push(info);
        }
    }
    crate::report::PackagesInfo {
        format: db.format.name(),
        kept,
        dropped,
        missing: trace
            .missing_from_packages
            .iter()
            .map(|(file, needed_by, package)| crate::report::MissingFile {
                file: file.clone(),
                needed_by: needed_by.clone(),
                package: package.clone(),
            })
            .collect(),
    }
}

/// SHA1 and SHA256 of every regular file of the plan (for the SBOM), and its os-release.
pub(super) type FileSums = (
    std::collections::BTreeMap<String, crate::sbom::Sums>,
    std::collections::BTreeMap<String, String>,
);

/// The kept os-release's fields (the SBOM's operating system), if one is kept.
pub(super) fn os_release(
    plan: &Plan,
    files: &std::collections::HashMap<String, crate::rootfs::Local>,
) -> std::collections::BTreeMap<String, String> {
    for p in ["etc/os-release", "usr/lib/os-release"] {
        if let Some(e) = plan.entries.get(p)
            && let Content::Image(src) = &e.content
            && let Some(local) = files.get(src)
            && let Ok(b) = local.read(1 << 20)
        {
            return crate::sbom::parse_os_release(&String::from_utf8_lossy(&b));
        }
    }
    Default::default()
}

/// The report's list of kept entries.
pub(super) fn files_info(plan: &Plan) -> Vec<FileInfo> {
    plan.entries
        .iter()
        .map(|(p, e)| FileInfo {
            path: crate::rootfs::display(p),
            kind: match e.content {
                Content::Dir => "dir",
                Content::Symlink(_) => "symlink",
                _ => "file",
            },
            size: e.size,
            mode: format!("{:04o}", e.mode),
            target: match &e.content {
                Content::Symlink(t) => Some(t.clone()),
                _ => None,
            },
            reason: e.reason.clone(),
            evidence: e.evidence.clone(),
        })
        .collect()
}

/// The setuid/setgid files kept with the bits cleared.
pub(super) fn setid_cleared(plan: &Plan) -> Vec<SetIdInfo> {
    plan.setid_cleared
        .iter()
        .map(|s| SetIdInfo {
            path: s.path.clone(),
            mode_before: format!("{:04o}", s.mode_before),
            mode_after: format!("{:04o}", s.mode_after),
            uid: s.uid,
            gid: s.gid,
        })
        .collect()
}

/// The setuid/setgid files of the source that were not kept.
pub(super) fn setid_removed(plan: &Plan, rootfs: &Rootfs) -> Vec<SetIdInfo> {
    rootfs
        .nodes
        .iter()
        .filter(|(p, n)| {
            matches!(n.kind, crate::rootfs::Kind::File { .. })
                && n.mode & 0o6000 != 0
                && !plan.entries.contains_key(*p)
        })
        .map(|(p, n)| SetIdInfo {
            path: crate::rootfs::display(p),
            mode_before: format!("{:04o}", n.mode),
            mode_after: "removed".into(),
            uid: n.uid,
            gid: n.gid,
        })
        .collect()
}

/// How much of the layers was inflated, and in how many passes.
pub(super) fn layer_reads(rootfs: &Rootfs) -> crate::report::LayerReads {
    use std::sync::atomic::Ordering::Relaxed;
    let r = &rootfs.inflated;
    crate::report::LayerReads {
        uncompressed_bytes: rootfs.uncompressed_size(),
        merge_bytes: r.merge_bytes.load(Relaxed),
        later_bytes: r.later_bytes.load(Relaxed),
        later_passes: r.later_passes.load(Relaxed),
        later_files: r.later_files.load(Relaxed),
    }
}

/// The image's sizes before and after.
pub(super) fn sizes(pulled: &PulledImage, rootfs: &Rootfs, layers: &[WrittenLayer]) -> SizeChange {
    SizeChange {
        before: Sizes {
            compressed: pulled.compressed_size(),
            uncompressed: rootfs.uncompressed_size(),
        },
        after: Sizes {
            compressed: layers.iter().map(|l| l.size).sum(),
            uncompressed: layers.iter().map(|l| l.uncompressed_size).sum(),
        },
    }
}
