//! The one record of a harden run: the JSON report (`--report FILE`) and the one-line human
//! summary are both printed from [`Report`].

use serde::Serialize;

use crate::progress::human_bytes;

/// The Kubernetes securityContext: made from the plan, which is where it lives.
pub use crate::plan::SecurityContext;

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub reference: String,
    /// What the reference resolves to (an index's digest when it names an index).
    pub digest: String,
    pub manifest_digest: String,
    pub platform: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// "image" (the image's own non-root User), "default" (65532) or "--user".
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub path: String,
    /// "file", "dir" or "symlink".
    pub kind: &'static str,
    pub size: u64,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub reason: String,
    /// Every reason the tracer found, strongest first (kind, the file that caused it, and a
    /// sentence).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<crate::trace::Evidence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetIdInfo {
    pub path: String,
    pub mode_before: String,
    pub mode_after: String,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Sizes {
    pub compressed: u64,
    pub uncompressed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeChange {
    pub before: Sizes,
    pub after: Sizes,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: ImageInfo,
    pub destination: ImageInfo,
    /// `--verify-key`: the source's signature that verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_signature: Option<crate::sign::Verified>,
    /// `--sign-key`: the result is signed (`sha256-<hex>.sig`) and its SBOM attested.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub signed: bool,
    /// True when nothing was written (`--dry-run`).
    pub dry_run: bool,
    pub user: UserInfo,
    pub argv: Vec<String>,
    pub entrypoint: String,
    pub files: Vec<FileInfo>,
    pub setid_cleared: Vec<SetIdInfo>,
    /// setuid/setgid files of the source that the hardened image does not contain at all.
    pub setid_removed: Vec<SetIdInfo>,
    pub capabilities_dropped: Vec<String>,
    pub sizes: SizeChange,
    /// How much of the source's layers was decompressed, and when.
    pub layer_reads: LayerReads,
    pub layers_before: usize,
    /// The result's layers: one per source layer it keeps a share of, and pare's own.
    #[serde(default)]
    pub layers_after: usize,
    pub warnings: Vec<String>,
    /// libc features that fired (feature, the symbol or library, the object).
    pub features: Vec<crate::trace::FeatureHit>,
    /// Paths looked at and not kept, with why (secrets named by a string, directories over
    /// the bound, gconv modules no program names, …).
    pub dropped: std::collections::BTreeMap<String, String>,
    /// Executables only weak evidence points at (a program that can run shell commands, a
    /// name in a binary's strings): not kept, with why and how to keep them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub withheld: std::collections::BTreeMap<String, String>,
    /// What static analysis could not decide (a command computed at run time at FILE:LINE, a
    /// large tree not kept, charsets chosen at run time), and how to settle it: `learn` is the
    /// `--learn` option that runs the entrypoint with the image's own Cmd in a sandbox and keeps
    /// what it uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_questions: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub learn: String,
    pub seconds: f64,
    /// The Kubernetes securityContext that fits the hardened image.
    pub security_context: SecurityContext,
    /// `--check`: the checklist run on the result before it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::policy::CheckReport>,
    /// `--learn`: kept paths only a probe's run showed (static analysis missed them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observed_only: Vec<String>,
    /// `--learn`: paths a probe's programs looked up that the source does not have (not kept;
    /// a name here that the program needs points at a broken source or a probe that went
    /// another way).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observed_absent: Vec<String>,
    /// `--learn` with `--seccomp-profile`: the system calls the probes' programs made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<String>,
    /// `--probe`: each probe's run in the result and in the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<crate::probe::ProbeResult>>,
    /// The image's packages: which keep files (their metadata is written for scanners), and
    /// which are gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<PackagesInfo>,
}

/// Bytes of the source's layer streams decompressed while hardening it: each layer once by the
/// merge (0 for a layer another image of the same batch parsed), plus targeted passes for files
/// the merge did not capture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerReads {
    /// Sum of the layers' uncompressed sizes.
    pub uncompressed_bytes: u64,
    /// Decompressed by the merge pass.
    pub merge_bytes: u64,
    /// Decompressed after it, by `later_passes` passes for `later_files` files.
    pub later_bytes: u64,
    pub later_passes: u64,
    pub later_files: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackagesInfo {
    /// `dpkg`, `apk` or `rpm`.
    pub format: &'static str,
    /// Packages that keep at least one file, with the files kept and dropped.
    pub kept: Vec<PackageInfo>,
    /// Packages none of whose files are kept (not listed in the hardened image's metadata).
    pub dropped: Vec<PackageInfo>,
    /// Libraries missing from the image (`--allow-missing`) and the package that lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MissingFile {
    pub file: String,
    pub needed_by: String,
    pub package: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub arch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Files (and symlinks) of the package that the hardened image keeps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_kept: Vec<String>,
    /// Files of the package that it drops.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_dropped: Vec<String>,
    pub kept_count: usize,
    pub dropped_count: usize,
}

impl Report {
    pub fn file_count(&self) -> usize {
        self.files.iter().filter(|f| f.kind == "file").count()
    }

    /// `team/api:1.4 → team/api:1.4-hardened  148.2 MB → 9.1 MB (−93.9%), 41 files, user 65532, 6 setuid/setgid bits cleared`
    pub fn summary(&self) -> String {
        let before = self.sizes.before.uncompressed;
        let after = self.sizes.after.uncompressed;
        let pct = if before > 0 {
            (after as f64 - before as f64) / before as f64 * 100.0
        } else {
            0.0
        };
        let sign = if pct <= 0.0 { "−" } else { "+" };
        format!(
            "{}{} → {}  {} → {} ({sign}{:.1}%), {} files, user {}, {} setuid/setgid bit{} cleared{}{}{}",
            if self.dry_run { "[dry run] " } else { "" },
            short_ref(&self.source.reference),
            short_ref(&self.destination.reference),
            human_bytes(before),
            human_bytes(after),
            pct.abs(),
            self.file_count(),
            self.user.uid,
            self.setid_cleared.len(),
            if self.setid_cleared.len() == 1 {
                ""
            } else {
                "s"
            },
            if self.setid_removed.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} setuid/setgid file{} removed",
                    self.setid_removed.len(),
                    if self.setid_removed.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                )
            },
            if self.capabilities_dropped.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} file capabilities dropped",
                    self.capabilities_dropped.len()
                )
            },
            match &self.packages {
                Some(p) => format!(
                    ", {} of {} {} packages kept",
                    p.kept.len(),
                    p.kept.len() + p.dropped.len(),
                    p.format
                ),
                None => String::new(),
            }
        )
    }
}

/// `registry.example.com/team/api:1.4` → `team/api:1.4`; `docker.io/library/nginx:1` → `nginx:1`.
pub fn short_ref(r: &str) -> String {
    if r.starts_with("oci:") || r.starts_with("docker-archive:") {
        return r.to_string();
    }
    let rest = match r.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => r,
    };
    rest.strip_prefix("library/").unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_refs() {
        assert_eq!(
            short_ref("registry.example.com/team/api:1.4"),
            "team/api:1.4"
        );
        assert_eq!(short_ref("docker.io/library/nginx:1"), "nginx:1");
        assert_eq!(short_ref("oci:/x:y"), "oci:/x:y");
    }
}
