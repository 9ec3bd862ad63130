#![allow(dead_code)]
//! Shared integration-test harness for `pare`.
//!
//! Everything here is deliberately independent of pare's own library code: images are built
//! with `tar`/`flate2` by hand, pushed and pulled with `skopeo`, unpacked with `umoci`, served by
//! the CNCF distribution registry (`docker-registry`), and shared-library closures are computed
//! with the host's `ldd`. That way the tests verify pare against third-party implementations
//! instead of against itself.
//!
//! Use it from a test file with `mod common;` and `use common::*;`.
//!
//! By concern: `process` (running commands), `skip` (tests that cannot run here), `registry`,
//! `layer` (building layers), `closure` (host binaries with what they load), `spec` and `layout`
//! (OCI images and layouts), `skopeo` (push, pull, unpack), `rootfs` (inspecting and chrooting
//! into unpacked roots), `images` (ready-made images); [`debian`] (images of real Debian
//! packages, workloads, strace), [`faults`] (a fault-injecting proxy), [`scan`] (what scanners
//! see).

pub mod debian;
pub mod faults;
pub mod scan;

mod closure;
mod images;
mod layer;
mod layout;
mod process;
mod registry;
mod rootfs;
mod skip;
mod skopeo;
mod spec;

// Not every test file uses every part.
#[allow(unused_imports)]
pub use closure::*;
#[allow(unused_imports)]
pub use images::*;
#[allow(unused_imports)]
pub use layer::*;
#[allow(unused_imports)]
pub use layout::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use registry::*;
#[allow(unused_imports)]
pub use rootfs::*;
#[allow(unused_imports)]
pub use skip::*;
#[allow(unused_imports)]
pub use skopeo::*;
#[allow(unused_imports)]
pub use spec::*;

// ------------------------------------------------------------------------------------------------
// Constants
// ------------------------------------------------------------------------------------------------

/// Default `PATH` put into image configs (same as Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Numeric uid/gid pare is expected to run images as (the distroless "nonroot" convention).
pub const NONROOT_UID: u32 = 65532;
/// Fixed mtime written into every generated tar entry (2023-11-14T22:13:20Z).
pub const FIXED_MTIME: u64 = 1_700_000_000;
/// `created` timestamp written into generated image configs.
pub const CREATED: &str = "2023-11-14T22:13:20Z";

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Annotation carrying the tag in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Host tools the harness drives.
pub const REGISTRY_BIN: &str = "docker-registry";
pub const SKOPEO_BIN: &str = "skopeo";
pub const UMOCI_BIN: &str = "umoci";
pub const HTPASSWD_BIN: &str = "htpasswd";

/// Host binaries used as image content.
pub const HOST_BUSYBOX: &str = "/bin/busybox";
pub const HOST_JQ: &str = "/usr/bin/jq";
pub const HOST_PASSWD: &str = "/usr/bin/passwd";
pub const HOST_SU: &str = "/usr/bin/su";
pub const HOST_TRUE: &str = "/usr/bin/true";

/// Contents of [`usrmerge_base_layer`] (image paths, absolute).
///
/// Top-level usrmerge symlinks `(link, target)`.
pub const USRMERGE_LINKS: [(&str, &str); 4] = [
    ("/bin", "usr/bin"),
    ("/sbin", "usr/sbin"),
    ("/lib", "usr/lib"),
    ("/lib64", "usr/lib64"),
];
/// Static busybox (copied from [`HOST_BUSYBOX`]).
pub const BASE_BUSYBOX: &str = "/usr/bin/busybox";
/// Applet symlinks `/usr/bin/<name> -> busybox`; `/bin/sh` therefore resolves to busybox.
pub const BASE_BUSYBOX_APPLETS: [&str; 4] = ["sh", "ls", "cat", "wget"];
/// Setuid-root programs (mode 0o4755; copies of the host's passwd and su).
pub const BASE_SETUID_FILES: [&str; 2] = ["/usr/bin/passwd", "/usr/bin/su"];
/// Setgid program (mode 0o2755; a copy of the host's `true`).
pub const BASE_SETGID_FILES: [&str; 1] = ["/usr/bin/chage"];
/// A file that only exists in the base layer; tests white it out in an upper layer.
pub const BASE_ONLY_FILE: &str = "/etc/base-only.txt";
pub const BASE_ONLY_CONTENT: &str = "only in the base layer\n";
/// A directory tests make opaque in an upper layer, and the files the base puts in it.
pub const BASE_OPAQUE_DIR: &str = "/opt/data";
pub const BASE_OPAQUE_DIR_FILES: [&str; 2] = ["/opt/data/a.txt", "/opt/data/b.txt"];
pub const BASE_ETC_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
pub const BASE_ETC_GROUP: &str = "root:x:0:\n";
pub const BASE_LD_SO_CONF: &str = "include /etc/ld.so.conf.d/*.conf\n";
pub const BASE_LD_SO_CONF_D_FILE: &str = "/etc/ld.so.conf.d/x86_64-linux-gnu.conf";
pub const BASE_LD_SO_CONF_D_CONTENT: &str = "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n";
/// `/etc/os-release -> ../usr/lib/os-release` (the file is copied from the host).
pub const BASE_OS_RELEASE_LINK: (&str, &str) = ("/etc/os-release", "../usr/lib/os-release");
