//! Images made of real Debian packages, and workloads run in them with and without `strace`.
//!
//! - [`debs`]: the `.deb` files of some packages and their whole dependency closure, downloaded
//!   once by apt and cached under `target/test-debs/<arch>/<key>/`.
//! - [`DebianRoot`]: those packages unpacked with `dpkg-deb -x` into a root that looks like a
//!   Debian bookworm container: usr-merged, with what the maintainer scripts the workloads
//!   depend on would have made (users, `nsswitch.conf`, `/etc/localtime`, alternatives, nginx
//!   module links, the CA store), and a real dpkg database.
//! - [`bookworm_base`]: the packages of a Debian slim image as one layer, built once per test
//!   process; test images are that layer plus a layer with the app's packages and files.
//! - [`run_workload`]: an image's entrypoint run in an unpacked root as 65532:65532, in its own
//!   mount and pid namespaces (a `/proc`, a minimal `/dev`, the image's `Env` and `WorkingDir`),
//!   optionally under `strace`; foreign-architecture roots run through `qemu-user-static`
//!   registered in a private `binfmt_misc`.
//! - [`parse_strace`]: the regular files a traced workload touched, resolved inside the root.

use super::*;

mod apt;
mod fsroot;
mod image;
mod postinst;
mod report;
mod root;
mod run;
mod strace;
mod workload;

#[allow(unused_imports)]
pub use apt::*;
#[allow(unused_imports)]
pub use fsroot::*;
#[allow(unused_imports)]
pub use image::*;
#[allow(unused_imports)]
pub use report::*;
#[allow(unused_imports)]
pub use root::*;
#[allow(unused_imports)]
pub use run::*;
#[allow(unused_imports)]
pub use strace::*;
#[allow(unused_imports)]
pub use workload::*;

/// What debootstrap's `minbase` variant installs (the packages of Debian's slim image).
pub const BOOKWORM_MINBASE: &[&str] = &[
    "base-files",
    "base-passwd",
    "bash",
    "coreutils",
    "dash",
    "debianutils",
    "diffutils",
    "findutils",
    "grep",
    "gzip",
    "hostname",
    "libc-bin",
    "login",
    "mawk",
    "ncurses-base",
    "sed",
    "tar",
    "tzdata",
    "util-linux",
    "passwd",
];
