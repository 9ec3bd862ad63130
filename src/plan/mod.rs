//! The harden plan: every entry of the new layer and why it is there. The traced closure, the
//! data files a program expects (CA bundle, zoneinfo, os-release, libc's config files), the
//! WorkingDir, `/tmp`, `/etc/passwd` and `/etc/group` for the run user, and the user's home.
//! setuid/setgid bits are cleared here and file capabilities dropped (and both reported).

mod builder;
mod security;
mod user;

pub use security::{SecurityContext, security_context};
pub use user::{NONROOT_UID, parse_user_flag};

use std::collections::BTreeMap;

use crate::error::Result;
use crate::rootfs::Rootfs;
use crate::trace::{Contents, Evidence, RunConfig, Trace};
use builder::Builder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dir,
    Symlink(String),
    /// Bytes of this canonical image path.
    Image(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub content: Content,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub reason: String,
    /// Every reason the tracer found (empty for what the plan adds itself).
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: String,
    /// "image", "default" or "--user".
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct SetIdCleared {
    pub path: String,
    pub mode_before: u32,
    pub mode_after: u32,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Path (no leading slash) → entry; BTreeMap order puts parents before children.
    pub entries: BTreeMap<String, Entry>,
    pub user: Option<RunUser>,
    pub setid_cleared: Vec<SetIdCleared>,
    pub capabilities_dropped: Vec<String>,
    pub warnings: Vec<String>,
    /// Packages (index in the trace's database) that keep a file, with those files.
    pub packages: BTreeMap<usize, Vec<String>>,
}

impl Plan {
    pub fn user(&self) -> &RunUser {
        self.user.as_ref().expect("plan has a user")
    }

    /// Canonical image paths whose bytes the layer needs.
    pub fn image_files(&self) -> Vec<String> {
        self.entries
            .values()
            .filter_map(|e| match &e.content {
                Content::Image(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.content, Content::Image(_) | Content::Bytes(_)))
            .count()
    }
}

pub struct PlanInput<'a> {
    pub fs: &'a Rootfs,
    pub trace: &'a Trace,
    pub config: &'a serde_json::Value,
    pub user_flag: Option<(u32, u32)>,
}

/// Build the plan.
pub fn build<C: Contents>(input: PlanInput<'_>, contents: &mut C) -> Result<Plan> {
    let PlanInput {
        fs,
        trace,
        config,
        user_flag,
    } = input;
    let mut b = Builder {
        fs,
        contents,
        plan: Plan::default(),
    };
    b.plan.warnings.extend(trace.warnings.iter().cloned());
    b.keep_traced(trace)?;
    let run = RunConfig::from_config(config);
    let (user, passwd, groups) = b.run_user(config, user_flag)?;
    b.users_and_groups(&user, &passwd, &groups);
    b.scratch_dirs();
    b.user_dirs(&user);
    b.workdir(&run)?;
    b.ld_cache(trace);
    b.package_metadata(trace)?;
    b.parents();
    b.clear_setid();
    Ok(b.finish(user, &trace.entrypoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn setid_cleared_capabilities_dropped_and_essentials_added() {
        // A layer with a setuid file, a setgid directory and a file with a capability xattr.
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, mode: u32, dir: bool, cap: bool| {
            if cap {
                b.append_pax_extensions([(
                    "SCHILY.xattr.security.capability",
                    &b"\x01\0\0\x02"[..],
                )])
                .unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(mode);
            h.set_size(if dir { 0 } else { 1 });
            b.append_data(&mut h, path, if dir { &b""[..] } else { &b"x"[..] })
                .unwrap();
        };
        add("usr/bin/ping", 0o755, false, true);
        add("root", 0o700, true, false);
        add("root/.local/app", 0o755, false, false);
        add("etc/secret", 0o600, false, false);
        add("usr/bin/su", 0o4755, false, false);
        add("var/mail", 0o2775, true, false);
        let tar = b.into_inner().unwrap();
        let mut fs = Rootfs::merge(vec![], None).unwrap();
        fs.apply_layer(0, &tar[..]).unwrap();
        assert!(fs.get("usr/bin/ping").unwrap().capability);
        let mut trace = Trace::default();
        for p in [
            "usr/bin/ping",
            "usr/bin/su",
            "var/mail",
            "root/.local/app",
            "etc/secret",
        ] {
            trace.files.insert(
                p.into(),
                vec![crate::trace::Evidence::new(
                    crate::trace::Why::KeepFlag,
                    None,
                    "test",
                )],
            );
        }
        let config = serde_json::json!({"config": {"WorkingDir": "/work"}});
        let plan = build(
            PlanInput {
                fs: &fs,
                trace: &trace,
                config: &config,
                user_flag: None,
            },
            // No file is read.
            &mut OneText("\0", b""),
        )
        .unwrap();
        assert_eq!(plan.capabilities_dropped, vec!["/usr/bin/ping"]);
        let cleared: Vec<(&str, u32, u32)> = plan
            .setid_cleared
            .iter()
            .map(|s| (s.path.as_str(), s.mode_before, s.mode_after))
            .collect();
        assert_eq!(
            cleared,
            vec![("/usr/bin/su", 0o4755, 0o755), ("/var/mail", 0o2775, 0o775)]
        );
        assert!(plan.entries.values().all(|e| e.mode & 0o6000 == 0));
        assert_eq!(plan.entries["tmp"].mode, 0o1777);
        assert_eq!(plan.entries["work"].content, Content::Dir);
        assert_eq!(plan.entries["home/nonroot"].uid, 65532);
        assert!(plan.entries.contains_key("etc/passwd") && plan.entries.contains_key("usr/bin"));
        assert_eq!(plan.user().uid, NONROOT_UID);
        let w = plan.warnings.join("\n");
        assert!(
            w.contains("cannot enter /root (mode 0700, owner 0:0): 1 kept file under it"),
            "{w}"
        );
        assert!(
            w.contains(
                "1 kept file is not readable by the run user (65532:65532): /etc/secret (0600"
            ),
            "{w}"
        );
    }

    /// Contents with one text file.
    struct OneText(&'static str, &'static [u8]);
    impl Contents for OneText {
        fn prefetch(&mut self, _: &Rootfs, _: &[String]) -> Result<()> {
            Ok(())
        }
        fn read(&mut self, _: &Rootfs, p: &str, _: u64) -> Result<Vec<u8>> {
            if p == self.0 {
                Ok(self.1.to_vec())
            } else {
                Err(Error::Other(format!("unexpected read of {p}")))
            }
        }
        fn elf(
            &mut self,
            _: &Rootfs,
            _: &str,
        ) -> Result<Option<std::sync::Arc<crate::elf::ElfFacts>>> {
            Ok(None)
        }
    }

    #[test]
    fn directories_of_the_image_user_are_kept() {
        let mut b = tar::Builder::new(Vec::new());
        let passwd = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
        for (path, uid, dir) in [
            ("etc/passwd", 0, false),
            ("var/lib/app", 1000, true),
            ("var/lib/other", 0, true),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(0o755);
            h.set_uid(uid);
            let data: &[u8] = if dir { b"" } else { passwd };
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut fs = Rootfs::merge(vec![], None).unwrap();
        fs.apply_layer(0, &tar[..]).unwrap();
        let config = serde_json::json!({"config": {"User": "app"}});
        let plan = build(
            PlanInput {
                fs: &fs,
                trace: &Trace::default(),
                config: &config,
                user_flag: None,
            },
            &mut OneText("etc/passwd", passwd),
        )
        .unwrap();
        assert_eq!(plan.user().uid, 1000);
        assert_eq!(plan.entries["var/lib/app"].uid, 1000);
        assert!(!plan.entries.contains_key("var/lib/other"));
    }
}
