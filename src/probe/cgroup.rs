//! Memory and process bounds for a whole sandbox, where pare can make a cgroup: cgroup v2
//! (`memory.max`, `pids.max`, in a sibling of pare's own cgroup or at the hierarchy's root),
//! else cgroup v1's `memory` and `pids` controllers (a child of pare's own group in each).
//! The helper is moved in while it waits stopped, before it forks, so every process of the
//! sandbox and the pages of its tmpfs root are counted. Where none can be made, only the
//! per-process rlimits apply and the report says so.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MOUNT: &str = "/sys/fs/cgroup";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A cgroup (one directory under v2, one per controller under v1) pare made for a sandbox.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    v2: bool,
    /// What bounds it sets, for the report (`cgroup v2: memory.max …, pids.max …`).
    pub describe: String,
}

/// `/proc/self/cgroup` lines as (controllers, path).
fn own_groups() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctl.to_string(), path.trim_start_matches('/').to_string()))
        })
        .collect()
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|e| format!("{}: {e}", p.display()))
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

impl Cgroup {
    /// A new cgroup bounding memory (bytes) and processes, or why none could be made.
    pub fn create(memory: u64, pids: u64) -> Result<Cgroup, String> {
        let name = format!(
            "pare-probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let groups = own_groups();
        if Path::new(MOUNT).join("cgroup.controllers").is_file() {
            return Self::v2(&name, &groups, memory, pids);
        }
        Self::v1(&name, &groups, memory, pids)
    }

    fn v2(
        name: &str,
        groups: &[(String, String)],
        memory: u64,
        pids: u64,
    ) -> Result<Cgroup, String> {
        let own = groups
            .iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        // A sibling of pare's own group (its parent has the controllers on for its children),
        // else the root of the hierarchy (which may have processes and still hand controllers
        // down).
        let parent = Path::new(&own).parent().map(Path::to_path_buf);
        let mut why = Vec::new();
        for base in parent.into_iter().chain([PathBuf::new()]) {
            let base = Path::new(MOUNT).join(base);
            let on =
                std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
            let has = |c: &str| on.split_whitespace().any(|w| w == c);
            if !(has("memory") && has("pids"))
                && write(&base, "cgroup.subtree_control", "+memory +pids").is_err()
            {
                why.push(format!(
                    "{}: memory and pids controllers not enabled",
                    base.display()
                ));
                continue;
            }
            let dir = base.join(name);
            if let Err(e) = std::fs::create_dir(&dir) {
                why.push(format!("{}: {e}", dir.display()));
                continue;
            }
            let cg = Cgroup {
                dirs: vec![dir.clone()],
                v2: true,
                describe: format!("cgroup v2: memory.max {}, pids.max {pids}", mib(memory)),
            };
            let set = write(&dir, "memory.max", &memory.to_string())
                .and_then(|()| write(&dir, "pids.max", &pids.to_string()));
            if let Err(e) = set {
                cg.remove();
                why.push(e);
                continue;
            }
            let _ = write(&dir, "memory.swap.max", "0");
            return Ok(cg);
        }
        Err(why.join("; "))
    }

    fn v1(
        name: &str,
        groups: &[(String, String)],
        memory: u64,
        pids: u64,
    ) -> Result<Cgroup, String> {
        let mut cg = Cgroup {
            dirs: Vec::new(),
            v2: false,
            describe: String::new(),
        };
        let mut set = Vec::new();
        let mut why = Vec::new();
        for (ctl, file, value) in [
            ("memory", "memory.limit_in_bytes", memory),
            ("pids", "pids.max", pids),
        ] {
            let own = groups
                .iter()
                .find(|(c, _)| c.split(',').any(|c| c == ctl))
                .map(|(_, p)| p.clone());
            let Some(own) = own else {
                why.push(format!("no {ctl} controller"));
                continue;
            };
            let dir = Path::new(MOUNT).join(ctl).join(own).join(name);
            if let Err(e) = std::fs::create_dir(&dir) {
                why.push(format!("{}: {e}", dir.display()));
                continue;
            }
            cg.dirs.push(dir.clone());
            match write(&dir, file, &value.to_string()) {
                Ok(()) => set.push(match ctl {
                    "memory" => format!("memory.limit_in_bytes {}", mib(value)),
                    _ => format!("pids.max {value}"),
                }),
                Err(e) => why.push(e),
            }
        }
        if set.is_empty() {
            cg.remove();
            return Err(why.join("; "));
        }
        cg.describe = format!("cgroup v1: {}", set.join(", "));
        if !why.is_empty() {
            cg.describe
                .push_str(&format!(" (not bounded: {})", why.join("; ")));
        }
        Ok(cg)
    }

    /// Move `pid` (and so all it forks later) in.
    pub fn attach(&self, pid: u32) -> Result<(), String> {
        for d in &self.dirs {
            write(d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Kill whatever is still inside and remove the group (waiting up to 2 s for the last
    /// processes to be reaped).
    pub fn remove(self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for d in &self.dirs {
            loop {
                if self.v2 && d.join("cgroup.kill").exists() {
                    let _ = write(d, "cgroup.kill", "1");
                } else {
                    for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                if std::fs::remove_dir(d).is_ok() || !d.exists() || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
