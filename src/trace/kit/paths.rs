//! Classes of paths every rule agrees on: system directories a reference never keeps whole,
//! files that may hold secrets, the size bound of a directory kept whole, and the path
//! arithmetic the rules share (`abs_in`, `join`, `dir_of`, `under`).

use super::Cx;
use crate::rootfs::display;

/// A directory named by a reference is kept whole only up to this many bytes.
pub const MAX_DIR_BYTES: u64 = 2 << 20;
/// Most strings of one object read as path references.
pub(crate) const MAX_REFS_PER_FILE: usize = 10_000;

/// Directories a reference never keeps whole.
pub(crate) fn is_system_dir(p: &str) -> bool {
    let p = p.trim_start_matches('/').trim_end_matches('/');
    const TOP: &[&str] = &[
        "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
        "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var", "nix", "snap",
    ];
    if p.is_empty() || TOP.contains(&p) {
        return true;
    }
    const SYSTEM: &[&str] = &[
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib32",
        "usr/lib64",
        "usr/libx32",
        "usr/libexec",
        "usr/include",
        "usr/share",
        "usr/src",
        "usr/local",
        "usr/local/bin",
        "usr/local/sbin",
        "usr/local/lib",
        "usr/local/share",
        "usr/local/include",
        "usr/local/etc",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/i18n",
        "usr/share/zoneinfo",
        "usr/lib/locale",
        "var/lib",
        "var/cache",
        "var/log",
        "var/tmp",
        "var/run",
        "var/spool",
        "var/mail",
        "var/opt",
        "var/local",
        "var/backups",
        "etc/default",
        "etc/init.d",
        "etc/alternatives",
        "etc/ssl",
        "etc/pki",
        "etc/security",
        "etc/pam.d",
        "etc/cron.d",
        "etc/systemd",
        // Unit trees (libsystemd names them): units do not run in a container, and their
        // ExecStart lines would bring the services' programs.
        "etc/systemd/system",
        "etc/systemd/user",
        "usr/lib/systemd",
        "usr/lib/systemd/system",
        "usr/lib/systemd/user",
        "lib/systemd",
        "lib/systemd/system",
        "run/systemd",
        "run/systemd/system",
        "etc/profile.d",
        "etc/ld.so.conf.d",
        "etc/apt",
        "etc/dpkg",
        "lib/x86_64-linux-gnu",
        "lib/aarch64-linux-gnu",
        "usr/local/lib/python3",
    ];
    if SYSTEM.contains(&p) {
        return true;
    }
    // The C library's own trees (its gconv modules, named in every static glibc program) are
    // the libc rule's: it keeps the modules a program's character sets need.
    if p.ends_with("/gconv") || p.contains("/gconv/") || p == "usr/lib/getconf" {
        return true;
    }
    // /usr/lib/<triplet> and /lib/<triplet>
    let mut parts = p.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("usr"), Some("lib"), Some(t), None) | (Some("lib"), Some(t), None, None) if t.contains("-linux-")
    )
}

/// Files that may hold secrets: never kept because a string names them.
pub(crate) fn is_secret(p: &str) -> bool {
    let p = p.trim_end_matches('/');
    let base = p.rsplit('/').next().unwrap_or(p);
    matches!(
        p,
        "/etc/shadow"
            | "/etc/shadow-"
            | "/etc/gshadow"
            | "/etc/gshadow-"
            | "/etc/sudoers"
            | "/etc/master.passwd"
            | "/etc/security/opasswd"
            | "/etc/ssl/private"
            | "/etc/pki/tls/private"
    ) || p.starts_with("/etc/ssl/private/")
        || p.starts_with("/etc/pki/tls/private/")
        || p.starts_with("/etc/sudoers.d")
        || p.contains("/.ssh/")
        || p.ends_with("/.ssh")
        || p.contains("/.gnupg")
        || p.contains("/.aws/")
        || p.contains("/.docker/")
        || p.contains("/.kube/")
        || matches!(
            base,
            ".netrc"
                | "_netrc"
                | ".pgpass"
                | ".git-credentials"
                | ".my.cnf"
                | ".htpasswd"
                | "id_rsa"
                | "id_dsa"
                | "id_ecdsa"
                | "id_ed25519"
                | "secrets"
        )
        || base.ends_with(".key")
        || (base.starts_with("ssh_host_") && base.ends_with("_key"))
        || (p.contains("/private/") && (base.ends_with(".pem") || base.ends_with(".crt")))
}

/// The directories among a kept program's strings, for configuration files that name paths
/// relative to the program's compiled-in prefix.
pub(crate) fn program_dirs(cx: &Cx) -> Vec<String> {
    let mut out = Vec::new();
    for o in &cx.out.objects {
        if o.loader.is_some() || !cx.out.programs.contains(&o.path) {
            continue;
        }
        out.push(dir_of(&o.path));
        for s in o.facts.strings.iter().take(MAX_REFS_PER_FILE) {
            if let Ok(r) = cx.fs.resolve(s, true)
                && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
                && !out.contains(s)
            {
                out.push(s.clone());
            }
        }
    }
    out
}

/// `p` made absolute against directory `cwd`.
pub(crate) fn abs_in(cwd: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        join(cwd, p)
    }
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// The directory of a canonical path, displayed (`usr/bin/jq` → `/usr/bin`).
pub(crate) fn dir_of(canonical: &str) -> String {
    display(canonical.rfind('/').map_or("", |i| &canonical[..i]))
}

/// Whether `path` (canonical) is `tree` or inside it.
pub(crate) fn under(path: &str, tree: &str) -> bool {
    tree.is_empty()
        || path == tree
        || (path.starts_with(tree) && path.as_bytes().get(tree.len()) == Some(&b'/'))
}
