//! What the run user can do in the plan: the Kubernetes securityContext that fits it, and
//! warnings for what it cannot reach.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Content, Entry, Plan, RunUser};
use crate::rootfs::display;

/// A Kubernetes container `securityContext` for the hardened image.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    pub run_as_non_root: bool,
    pub run_as_user: u32,
    pub run_as_group: u32,
    pub allow_privilege_escalation: bool,
    /// True when the run user can write no directory of the image but /tmp and its home
    /// (mount emptyDir volumes there).
    pub read_only_root_filesystem: bool,
    pub capabilities_drop: Vec<String>,
    /// Directories of the image the run user can write.
    pub writable_paths: Vec<String>,
    /// `--seccomp-profile FILE`: the profile's name under the kubelet's seccomp directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

impl SecurityContext {
    /// As YAML, ready to paste under a container spec.
    pub fn yaml(&self) -> String {
        let mut o = String::from("securityContext:\n");
        o.push_str(&format!("  runAsNonRoot: {}\n", self.run_as_non_root));
        o.push_str(&format!("  runAsUser: {}\n", self.run_as_user));
        o.push_str(&format!("  runAsGroup: {}\n", self.run_as_group));
        o.push_str(&format!(
            "  allowPrivilegeEscalation: {}\n",
            self.allow_privilege_escalation
        ));
        o.push_str(&format!(
            "  readOnlyRootFilesystem: {}\n",
            self.read_only_root_filesystem
        ));
        o.push_str("  capabilities:\n    drop:\n");
        for c in &self.capabilities_drop {
            o.push_str(&format!("      - {c}\n"));
        }
        if let Some(p) = &self.localhost_profile {
            o.push_str(&format!(
                "  seccompProfile:\n    type: Localhost\n    localhostProfile: {p}\n\
                 # copy the profile to /var/lib/kubelet/seccomp/{p} on every node\n"
            ));
        }
        if !self.writable_paths.is_empty() {
            o.push_str(&format!(
                "# writable by the run user: {}{}\n",
                self.writable_paths.join(", "),
                if self.read_only_root_filesystem {
                    " (mount emptyDir volumes there)"
                } else {
                    ""
                }
            ));
        }
        o
    }
}

/// The securityContext for the plan: writable paths are the directories the run user can
/// write; the root filesystem can be read-only when those are only /tmp and its home.
pub fn security_context(plan: &Plan) -> SecurityContext {
    let u = plan.user();
    let home = crate::rootfs::normalize(&u.home).unwrap_or_default();
    let writable: Vec<String> = plan
        .entries
        .iter()
        .filter(|(_, e)| e.content == Content::Dir && can(e, u, 2))
        .map(|(p, _)| p.clone())
        .collect();
    // Scratch directories and the home take emptyDir volumes.
    let read_only = writable
        .iter()
        .all(|p| p == "tmp" || p == "var/tmp" || *p == home);
    SecurityContext {
        run_as_non_root: true,
        run_as_user: u.uid,
        run_as_group: u.gid,
        allow_privilege_escalation: false,
        read_only_root_filesystem: read_only,
        capabilities_drop: vec!["ALL".into()],
        writable_paths: writable.iter().map(|p| display(p)).collect(),
        localhost_profile: None,
    }
}

/// Whether the run user has `bit` (4 read, 2 write, 1 execute) on an entry.
fn can(e: &Entry, u: &RunUser, bit: u32) -> bool {
    let m = if e.uid == u64::from(u.uid) {
        e.mode >> 6
    } else if e.gid == u64::from(u.gid) {
        e.mode >> 3
    } else {
        e.mode
    };
    m & bit != 0
}

/// Warn when the non-root user cannot reach what was kept: a directory it cannot enter, a
/// file it cannot read, an entrypoint it cannot run. (Running as root hid these in the source.)
pub(super) fn access_warnings(plan: &mut Plan, u: &RunUser, entrypoint: &str) {
    let mut blocked: BTreeMap<String, usize> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (p, e) in &plan.entries {
        if !matches!(e.content, Content::Image(_) | Content::Bytes(_)) {
            continue;
        }
        let mut cur = p.as_str();
        let mut reachable = true;
        while let Some(i) = cur.rfind('/') {
            cur = &cur[..i];
            if let Some(d) = plan.entries.get(cur)
                && !can(d, u, 1)
            {
                *blocked.entry(cur.to_string()).or_default() += 1;
                reachable = false;
            }
        }
        if reachable && !can(e, u, 4) {
            unreadable.push(format!(
                "{} ({:04o}, owner {}:{})",
                display(p),
                e.mode,
                e.uid,
                e.gid
            ));
        }
    }
    for (d, n) in &blocked {
        let e = &plan.entries[d];
        plan.warnings.push(format!(
            "the run user ({}:{}) cannot enter {} (mode {:04o}, owner {}:{}): {n} kept file{} under it will be unreachable",
            u.uid, u.gid, display(d), e.mode, e.uid, e.gid, if *n == 1 { "" } else { "s" }
        ));
    }
    if !unreadable.is_empty() {
        plan.warnings.push(format!(
            "{} kept file{} not readable by the run user ({}:{}): {}",
            unreadable.len(),
            if unreadable.len() == 1 {
                " is"
            } else {
                "s are"
            },
            u.uid,
            u.gid,
            unreadable
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(e) = plan.entries.get(entrypoint)
        && !can(e, u, 1)
    {
        plan.warnings.push(format!(
                "the entrypoint {} (mode {:04o}, owner {}:{}) is not executable by the run user ({}:{})",
                display(entrypoint), e.mode, e.uid, e.gid, u.uid, u.gid
            ));
    }
}
