//! `pare inspect`: what each layer adds, changes, removes and wastes (the job people use dive
//! for), the totals with dive's efficiency score, how the image runs, and its setuid/setgid
//! files; as text, JSON, or a tree of the merged filesystem with sizes.

use serde::Serialize;

use crate::progress::human_bytes;
use crate::rootfs::{Kind, Rootfs, display};
use crate::trace::RunConfig;
use crate::transport::source::PulledImage;

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub index: usize,
    pub digest: String,
    pub media_type: String,
    /// Size of the blob as stored (compressed).
    pub compressed_size: u64,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Sum of the entries' sizes (dive's layer size).
    pub size: u64,
    /// The history entry that made it (`created_by`), when the config has one.
    pub created_by: Option<String>,
    pub entries: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    /// Bytes of lower-layer files this layer replaced or deleted.
    pub wasted_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Regular files in the merged filesystem, and their bytes.
    pub files: u64,
    pub file_bytes: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// dive's efficiency score (1.0 = nothing wasted).
    pub efficiency: f64,
    pub wasted_bytes: u64,
    /// Wasted bytes / sizes of all layers but the first (dive's "user wasted percent").
    pub user_wasted_fraction: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetIdFile {
    pub path: String,
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Waste {
    pub path: String,
    pub bytes: u64,
    pub layers: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub image: String,
    pub digest: String,
    pub manifest_digest: String,
    pub platform: String,
    /// The config's User ("" means root).
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub exposed_ports: Vec<String>,
    pub layers: Vec<LayerInfo>,
    pub totals: Totals,
    pub setid_files: Vec<SetIdFile>,
    /// The paths that waste the most, largest first (at most 20).
    pub inefficiencies: Vec<Waste>,
    /// The image's package database: each package and how many of its files are present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<InspectPackages>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectPackages {
    pub format: &'static str,
    pub packages: Vec<InspectPackage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Files (and symlinks) the package lists that the image has.
    pub files_present: usize,
    /// Files it lists that the image does not have (removed by a later layer, or never there).
    pub files_missing: Vec<String>,
}

impl InspectPackages {
    pub fn new(db: &crate::packages::Db, fs: &Rootfs) -> Self {
        let packages = db
            .packages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let missing = p
                    .files
                    .iter()
                    .filter(|f| fs.resolve(f, false).is_err())
                    .cloned()
                    .collect();
                InspectPackage {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    arch: p.arch.clone(),
                    files_present: db.files_of(fs, i).len(),
                    files_missing: missing,
                }
            })
            .collect();
        InspectPackages {
            format: db.format.name(),
            packages,
        }
    }
}

impl InspectReport {
    pub fn new(image: &str, pulled: &PulledImage, fs: &Rootfs) -> Self {
        let c = pulled.config.get("config").cloned().unwrap_or_default();
        let run = RunConfig::from_config(&pulled.config);
        // History entries with content, in order, belong to the layers in order (as dive maps them).
        let history: Vec<Option<String>> = pulled
            .config
            .get("history")
            .and_then(|h| h.as_array())
            .map(|h| {
                h.iter()
                    .filter(|e| {
                        !e.get("empty_layer")
                            .and_then(|v| v.as_bool())
                            .unwrap_or(false)
                    })
                    .map(|e| {
                        e.get("created_by")
                            .and_then(|v| v.as_str())
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let layers: Vec<LayerInfo> = pulled
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let st = fs.stats.get(i).cloned().unwrap_or_default();
                LayerInfo {
                    index: i + 1,
                    digest: l.descriptor.digest.clone(),
                    media_type: l.descriptor.media_type.clone(),
                    compressed_size: l.descriptor.size,
                    uncompressed_size: fs.layer_sizes.get(i).copied().unwrap_or(0),
                    size: st.size,
                    created_by: history.get(i).cloned().flatten(),
                    entries: st.entries,
                    added: st.added,
                    changed: st.changed,
                    removed: st.removed,
                    wasted_bytes: st.wasted,
                }
            })
            .collect();
        let (mut files, mut file_bytes, mut dirs, mut links) = (0, 0, 0, 0);
        let mut setid = Vec::new();
        for (p, n) in fs.nodes.iter().filter(|(p, _)| !p.is_empty()) {
            match n.kind {
                Kind::File { size, .. } => {
                    files += 1;
                    file_bytes += size;
                    if n.mode & 0o6000 != 0 {
                        setid.push(SetIdFile {
                            path: display(p),
                            mode: format!("{:04o}", n.mode),
                            uid: n.uid,
                            gid: n.gid,
                        });
                    }
                }
                Kind::Dir => dirs += 1,
                Kind::Symlink(_) => links += 1,
                _ => {}
            }
        }
        let e = fs.efficiency();
        let user_size: u64 = fs.stats.iter().skip(1).map(|s| s.size).sum();
        InspectReport {
            image: image.to_string(),
            digest: pulled.digest.clone(),
            manifest_digest: pulled.manifest_digest.clone(),
            platform: pulled.platform.to_string(),
            user: c
                .get("User")
                .and_then(|u| u.as_str())
                .unwrap_or("")
                .to_string(),
            entrypoint: run.entrypoint.clone(),
            cmd: run.cmd.clone(),
            working_dir: run.workdir.clone(),
            exposed_ports: c
                .get("ExposedPorts")
                .and_then(|p| p.as_object())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            totals: Totals {
                compressed_size: pulled.compressed_size(),
                uncompressed_size: fs.uncompressed_size(),
                files,
                file_bytes,
                directories: dirs,
                symlinks: links,
                efficiency: e.score,
                wasted_bytes: e.wasted_bytes,
                user_wasted_fraction: if user_size == 0 {
                    0.0
                } else {
                    e.wasted_bytes as f64 / user_size as f64
                },
            },
            layers,
            setid_files: setid,
            inefficiencies: e
                .inefficiencies
                .iter()
                .take(20)
                .map(|(p, b, n)| Waste {
                    path: display(p),
                    bytes: *b,
                    layers: *n,
                })
                .collect(),
            packages: None,
        }
    }

    pub fn text(&self) -> String {
        let mut o = String::new();
        o.push_str(&format!("Image       {}\n", self.image));
        o.push_str(&format!(
            "Digest      {} ({})\n",
            self.digest, self.platform
        ));
        o.push_str(&format!(
            "User        {}\n",
            if self.user.is_empty() {
                "(none: root)".to_string()
            } else {
                self.user.clone()
            }
        ));
        o.push_str(&format!(
            "Entrypoint  {:?}  Cmd {:?}\n",
            self.entrypoint, self.cmd
        ));
        if !self.working_dir.is_empty() {
            o.push_str(&format!("WorkingDir  {}\n", self.working_dir));
        }
        if !self.exposed_ports.is_empty() {
            o.push_str(&format!("Ports       {}\n", self.exposed_ports.join(", ")));
        }
        o.push_str("\nLayer  Digest               Compressed  Uncompressed  Added  Changed  Removed  Wasted      Command\n");
        for l in &self.layers {
            let cmd = l.created_by.as_deref().unwrap_or("(no history)");
            let cmd: String = cmd.chars().take(60).collect();
            o.push_str(&format!(
                "{:>5}  {:<19}  {:>10}  {:>12}  {:>5}  {:>7}  {:>7}  {:>10}  {}\n",
                l.index,
                crate::transport::registry::short_digest(&l.digest),
                human_bytes(l.compressed_size),
                human_bytes(l.uncompressed_size),
                l.added,
                l.changed,
                l.removed,
                human_bytes(l.wasted_bytes),
                cmd
            ));
        }
        let t = &self.totals;
        o.push_str(&format!(
            "\nTotal       {} compressed, {} uncompressed; {} files ({}), {} directories, {} symlinks\n",
            human_bytes(t.compressed_size),
            human_bytes(t.uncompressed_size),
            t.files,
            human_bytes(t.file_bytes),
            t.directories,
            t.symlinks
        ));
        o.push_str(&format!(
            "Efficiency  {:.2}%  wasted {} ({:.1}% of the layers above the base)\n",
            t.efficiency * 100.0,
            human_bytes(t.wasted_bytes),
            t.user_wasted_fraction * 100.0
        ));
        if let Some(p) = &self.packages {
            let partial = p
                .packages
                .iter()
                .filter(|x| !x.files_missing.is_empty())
                .count();
            o.push_str(&format!(
                "Packages    {} ({}), {} with files missing\n",
                p.packages.len(),
                p.format,
                partial
            ));
            for x in &p.packages {
                o.push_str(&format!(
                    "            {} {} {}: {} files{}\n",
                    x.name,
                    x.version,
                    x.arch,
                    x.files_present,
                    if x.files_missing.is_empty() {
                        String::new()
                    } else {
                        format!(", {} missing", x.files_missing.len())
                    }
                ));
            }
        }
        if !self.inefficiencies.is_empty() {
            o.push_str("Wasted by   ");
            let top: Vec<String> = self
                .inefficiencies
                .iter()
                .take(5)
                .map(|w| {
                    format!(
                        "{} ({} in {} layers)",
                        w.path,
                        human_bytes(w.bytes),
                        w.layers
                    )
                })
                .collect();
            o.push_str(&top.join(", "));
            o.push('\n');
        }
        if self.setid_files.is_empty() {
            o.push_str("setuid/setgid files: none\n");
        } else {
            o.push_str(&format!(
                "setuid/setgid files: {}\n",
                self.setid_files.len()
            ));
            for s in &self.setid_files {
                o.push_str(&format!("  {}  {} {}:{}\n", s.path, s.mode, s.uid, s.gid));
            }
        }
        o
    }
}

/// The merged filesystem as a tree, each directory with the bytes under it.
pub fn tree(fs: &Rootfs) -> String {
    let mut sizes: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for (p, n) in &fs.nodes {
        let s = n.size();
        if s == 0 {
            continue;
        }
        let mut cur = p.as_str();
        while let Some(i) = cur.rfind('/') {
            cur = &cur[..i];
            *sizes.entry(cur).or_default() += s;
        }
        *sizes.entry("").or_default() += s;
    }
    let mut o = format!(
        "{:>10}  /\n",
        human_bytes(sizes.get("").copied().unwrap_or(0))
    );
    for (p, n) in fs.nodes.iter().filter(|(p, _)| !p.is_empty()) {
        let depth = p.matches('/').count() + 1;
        let name = p.rsplit('/').next().unwrap_or(p);
        let (size, suffix) = match &n.kind {
            Kind::Dir => (sizes.get(p.as_str()).copied().unwrap_or(0), "/".to_string()),
            Kind::Symlink(t) => (0, format!(" -> {t}")),
            _ => (n.size(), String::new()),
        };
        o.push_str(&format!(
            "{:>10}  {:04o} {:>5}:{:<5} {}{name}{suffix}\n",
            human_bytes(size),
            n.mode,
            n.uid,
            n.gid,
            "  ".repeat(depth.min(40))
        ));
    }
    o
}
