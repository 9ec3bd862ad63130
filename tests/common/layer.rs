//! Filesystem layers built entry by entry, and the stock layers the tests share.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// One tar entry of a [`Layer`]. Paths are normalised image paths without a leading slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. }
            | Entry::Dir { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Hardlink { path, .. } => path,
        }
    }
}

/// Layer blob compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
            Compression::None => MEDIA_TYPE_LAYER_TAR,
        }
    }
}

/// Normalise an image path: strip leading `/`, `.` and empty components; reject `..`.
pub fn image_rel(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    assert!(
        !parts.contains(&".."),
        "image path {path:?} must not contain `..`"
    );
    assert!(!parts.is_empty(), "image path {path:?} names the root");
    parts.join("/")
}

/// A filesystem layer, built up entry by entry.
///
/// When serialised, all entries are owned by 0:0 with mtime [`FIXED_MTIME`]; missing parent
/// directories are added with mode 0755; entries are sorted so parents precede children (hard
/// links come last so their targets already exist). Adding a path twice keeps the last one.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
    /// `created_by` of this layer's history entry.
    pub created_by: Option<String>,
    /// If set, used verbatim as the uncompressed layer tar instead of `entries`.
    pub raw_tar: Option<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    /// A layer whose uncompressed tar is exactly `tar` (escape hatch for odd archives).
    pub fn from_tar(tar: Vec<u8>) -> Layer {
        Layer {
            raw_tar: Some(tar),
            ..Layer::default()
        }
    }

    pub fn compression(mut self, compression: Compression) -> Layer {
        self.compression = compression;
        self
    }

    pub fn created_by(mut self, created_by: &str) -> Layer {
        self.created_by = Some(created_by.to_string());
        self
    }

    pub fn entry(mut self, entry: Entry) -> Layer {
        self.entries.push(entry);
        self
    }

    /// A regular file with the given bytes and permission bits (e.g. `0o4755`).
    pub fn file(self, image_path: &str, data: impl AsRef<[u8]>, mode: u32) -> Layer {
        self.entry(Entry::File {
            path: image_rel(image_path),
            data: data.as_ref().to_vec(),
            mode,
        })
    }

    /// A regular file with the contents of `host_path` (symlinks followed); `mode` defaults to
    /// the host file's permission bits.
    pub fn file_from_host(
        self,
        host_path: impl AsRef<Path>,
        image_path: &str,
        mode: Option<u32>,
    ) -> Layer {
        let host_path = host_path.as_ref();
        let data = fs::read(host_path)
            .unwrap_or_else(|e| panic!("read host file {}: {e}", host_path.display()));
        let mode = mode.unwrap_or_else(|| {
            fs::metadata(host_path)
                .unwrap_or_else(|e| panic!("stat host file {}: {e}", host_path.display()))
                .permissions()
                .mode()
                & 0o7777
        });
        self.file(image_path, data, mode)
    }

    pub fn dir(self, image_path: &str, mode: u32) -> Layer {
        self.entry(Entry::Dir {
            path: image_rel(image_path),
            mode,
        })
    }

    /// A symlink; `target` is stored verbatim (relative or absolute).
    pub fn symlink(self, image_path: &str, target: &str) -> Layer {
        self.entry(Entry::Symlink {
            path: image_rel(image_path),
            target: target.to_string(),
        })
    }

    /// A hard link to another path of the image (stored as an archive path).
    pub fn hardlink(self, image_path: &str, target: &str) -> Layer {
        self.entry(Entry::Hardlink {
            path: image_rel(image_path),
            target: image_rel(target),
        })
    }

    /// Delete `image_path` from lower layers (`dir/.wh.name`).
    pub fn whiteout(self, image_path: &str) -> Layer {
        let rel = image_rel(image_path);
        let (dir, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name.to_string()),
            None => (String::new(), rel.clone()),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// Hide everything lower layers put in `dir_path` (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir_path: &str) -> Layer {
        let rel = image_rel(dir_path);
        self.file(&format!("{rel}/.wh..wh..opq"), b"", 0o644)
    }

    /// Add a host path the way the host resolves it: every symlink met while resolving it
    /// (including symlinked directories such as `/lib -> usr/lib`) is added as a symlink with
    /// its literal target, and the final regular file at its canonical location.
    pub fn host_path_with_links(mut self, host_path: impl AsRef<Path>) -> Layer {
        for entry in host_path_chain(host_path.as_ref()) {
            self = self.closure_entry(entry);
        }
        self
    }

    /// Add `binary`, its `PT_INTERP` and all shared libraries `ldd` reports, each with its
    /// host symlink chain (see [`host_closure`]).
    pub fn host_closure(mut self, binary: impl AsRef<Path>) -> Layer {
        for entry in host_closure(binary.as_ref()) {
            self = self.closure_entry(entry);
        }
        self
    }

    fn closure_entry(self, entry: ClosureEntry) -> Layer {
        match entry {
            ClosureEntry::File {
                host,
                image_path,
                mode,
            } => self.file_from_host(host, &image_path, Some(mode)),
            ClosureEntry::Symlink { image_path, target } => self.symlink(&image_path, &target),
        }
    }

    /// The final, ordered entry list (deduplicated, parents added, hard links last).
    pub fn resolved_entries(&self) -> Vec<Entry> {
        let mut by_path: BTreeMap<PathBuf, Entry> = BTreeMap::new();
        for entry in &self.entries {
            by_path.insert(PathBuf::from(entry.path()), entry.clone());
        }
        let paths: Vec<PathBuf> = by_path.keys().cloned().collect();
        for path in paths {
            for ancestor in path.ancestors().skip(1) {
                if ancestor.as_os_str().is_empty() {
                    break;
                }
                by_path
                    .entry(ancestor.to_path_buf())
                    .or_insert_with(|| Entry::Dir {
                        path: ancestor.to_string_lossy().into_owned(),
                        mode: 0o755,
                    });
            }
        }
        let (hardlinks, mut others): (Vec<Entry>, Vec<Entry>) = by_path
            .into_values()
            .partition(|e| matches!(e, Entry::Hardlink { .. }));
        others.extend(hardlinks);
        others
    }

    /// The uncompressed layer tar.
    pub fn tar_bytes(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw_tar {
            return raw.clone();
        }
        let mut builder = tar::Builder::new(Vec::new());
        for entry in self.resolved_entries() {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(FIXED_MTIME);
            header.set_size(0);
            let result = match &entry {
                Entry::File { path, data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(mode & 0o7777);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())
                }
                Entry::Dir { path, mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(mode & 0o7777);
                    builder.append_data(&mut header, format!("{path}/"), io::empty())
                }
                Entry::Symlink { path, target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    builder.append_link(&mut header, path, target)
                }
                Entry::Hardlink { path, target } => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_mode(0o644);
                    builder.append_link(&mut header, path, target)
                }
            };
            result.unwrap_or_else(|e| panic!("write tar entry {entry:?}: {e}"));
        }
        builder.into_inner().expect("finish layer tar")
    }

    /// `(blob, media type, diff_id)` of this layer.
    pub fn blob(&self) -> (Vec<u8>, &'static str, String) {
        let tar = self.tar_bytes();
        let diff_id = sha256_digest(&tar);
        let blob = match self.compression {
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&tar).expect("gzip layer");
                enc.finish().expect("finish gzip layer")
            }
            Compression::Zstd => ruzstd::encoding::compress_to_vec(
                tar.as_slice(),
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            Compression::None => tar,
        };
        (blob, self.compression.media_type(), diff_id)
    }
}

/// The smallest image that runs jq: one layer with jq's real closure, entrypoint `/usr/bin/jq`.
pub fn jq_only_image() -> ImageSpec {
    ImageSpec::new(vec![Layer::new().host_closure(HOST_JQ)]).with_entrypoint(&["/usr/bin/jq"])
}

/// The acceptance app layer on top of [`usrmerge_base_layer`]: jq's real closure, a whiteout of
/// [`BASE_ONLY_FILE`], and [`BASE_OPAQUE_DIR`] made opaque with a new file `c.txt`.
pub fn jq_app_layer() -> Layer {
    Layer::new()
        .created_by("pare-test: jq app layer")
        .host_closure(HOST_JQ)
        .whiteout(BASE_ONLY_FILE)
        .opaque(BASE_OPAQUE_DIR)
        .file("/opt/data/c.txt", "c\n", 0o644)
}

/// A Debian-like usrmerged base layer; see the `BASE_*` and [`USRMERGE_LINKS`] constants for
/// what it contains.
pub fn usrmerge_base_layer() -> Layer {
    let mut layer = Layer::new().created_by("pare-test: debian-like usrmerge base");
    for dir in [
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/local",
        "/usr/local/bin",
        "/etc",
        "/etc/ld.so.conf.d",
        "/var",
        "/home",
        "/opt",
        "/opt/data",
    ] {
        layer = layer.dir(dir, 0o755);
    }
    layer = layer
        .dir("/root", 0o700)
        .dir("/tmp", 0o1777)
        .dir("/var/tmp", 0o1777);
    for (link, target) in USRMERGE_LINKS {
        layer = layer.symlink(link, target);
    }
    layer = layer.file_from_host(HOST_BUSYBOX, BASE_BUSYBOX, Some(0o755));
    for applet in BASE_BUSYBOX_APPLETS {
        layer = layer.symlink(&format!("/usr/bin/{applet}"), "busybox");
    }
    for (host, image) in [HOST_PASSWD, HOST_SU].into_iter().zip(BASE_SETUID_FILES) {
        let host = if Path::new(host).is_file() {
            host
        } else {
            HOST_BUSYBOX
        };
        layer = layer.file_from_host(host, image, Some(0o4755));
    }
    for image in BASE_SETGID_FILES {
        layer = layer.file_from_host(HOST_TRUE, image, Some(0o2755));
    }
    let nsswitch = fs::read("/etc/nsswitch.conf")
        .unwrap_or_else(|_| b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec());
    let os_release = fs::read("/usr/lib/os-release").unwrap_or_else(|_| {
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n".to_vec()
    });
    layer
        .file("/etc/passwd", BASE_ETC_PASSWD, 0o644)
        .file("/etc/group", BASE_ETC_GROUP, 0o644)
        .file("/etc/ld.so.conf", BASE_LD_SO_CONF, 0o644)
        .file(BASE_LD_SO_CONF_D_FILE, BASE_LD_SO_CONF_D_CONTENT, 0o644)
        .file("/etc/nsswitch.conf", nsswitch, 0o644)
        .file("/usr/lib/os-release", os_release, 0o644)
        .symlink(BASE_OS_RELEASE_LINK.0, BASE_OS_RELEASE_LINK.1)
        .file(BASE_ONLY_FILE, BASE_ONLY_CONTENT, 0o644)
        .file(BASE_OPAQUE_DIR_FILES[0], "a\n", 0o644)
        .file(BASE_OPAQUE_DIR_FILES[1], "b\n", 0o644)
}

/// The unhardened jq image most tests harden: [`usrmerge_base_layer`] (busybox sh, setuid and
/// setgid programs) and [`jq_app_layer`] (a whiteout, an opaque directory), `jq -n 1+1`.
pub fn jq_image() -> ImageSpec {
    ImageSpec::new(vec![usrmerge_base_layer(), jq_app_layer()])
        .with_entrypoint(&["/usr/bin/jq"])
        .with_cmd(&["-n", "1+1"])
}
