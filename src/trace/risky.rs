//! What an executable is, for rules whose evidence is not enough to bring back attack surface:
//! a shell, an interpreter, a network tool, a package manager or a setuid carrier is kept only
//! on strong evidence (the entrypoint, a traced script line, the active configuration); a
//! script helper brings its interpreter, so it needs the same.

use crate::rootfs::Rootfs;

/// Interpreters by the name they run as (a version suffix allowed: `python3.11`, `tclsh8.6`).
const INTERPRETERS: &[&str] = &[
    "python",
    "perl",
    "ruby",
    "node",
    "nodejs",
    "php",
    "lua",
    "luajit",
    "tclsh",
    "wish",
    "guile",
    "java",
    "Rscript",
    "R",
    "gawk",
    "mawk",
    "awk",
    "expect",
    "pwsh",
    "osascript",
    "sbcl",
    "ocaml",
];

/// Network tools (clients that move data or open shells across the network).
const NETWORK_TOOLS: &[&str] = &[
    "nc",
    "ncat",
    "netcat",
    "nc.openbsd",
    "nc.traditional",
    "socat",
    "curl",
    "wget",
    "telnet",
    "ssh",
    "scp",
    "sftp",
    "ftp",
    "tftp",
    "rsync",
    "ip",
    "ping",
    "ss",
    "netstat",
    "ifconfig",
    "route",
    "arp",
    "tcpdump",
    "nmap",
    "ssh-agent",
];

/// Package managers and their plumbing.
const PACKAGE_MANAGERS: &[&str] = &[
    "apt",
    "apt-get",
    "apt-cache",
    "dpkg",
    "dpkg-deb",
    "dpkg-query",
    "apk",
    "yum",
    "dnf",
    "rpm",
    "microdnf",
    "pip",
    "pip3",
    "gem",
    "npm",
    "npx",
    "yarn",
    "cargo",
    "easy_install",
];

/// Why `path` (canonical) needs strong evidence to be kept, `None` for an ordinary program.
pub(crate) fn risky(fs: &Rootfs, path: &str) -> Option<&'static str> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let node = fs.get(path)?;
    if node.mode & 0o6000 != 0 {
        return Some("a setuid/setgid carrier");
    }
    if super::shell::SHELLS.contains(&base) || base == "busybox" {
        return Some("a shell");
    }
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if INTERPRETERS.contains(&base) || INTERPRETERS.contains(&stem) {
        return Some("an interpreter");
    }
    if NETWORK_TOOLS.contains(&base) {
        return Some("a network tool");
    }
    if PACKAGE_MANAGERS.contains(&base) || PACKAGE_MANAGERS.contains(&stem) {
        return Some("a package manager");
    }
    None
}

/// Why an executable needs strong evidence: [`risky`], or a script (it brings its interpreter).
/// `None` for an ordinary ELF program.
pub(crate) fn withheld_unless_strong(
    cx: &mut super::kit::Cx,
    path: &str,
) -> crate::error::Result<Option<&'static str>> {
    if let Some(what) = risky(cx.fs, path) {
        return Ok(Some(what));
    }
    cx.contents.prefetch(cx.fs, &[path.to_string()])?;
    Ok(cx
        .elf(path)?
        .is_none()
        .then_some("a script, which would bring its interpreter"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::testutil::image;

    #[test]
    fn classes() {
        let (fs, _) = image(
            &[
                ("usr/bin/dash", "elf"),
                ("usr/bin/python3.11", "elf"),
                ("usr/bin/curl", "elf"),
                ("usr/bin/cc1", "elf"),
                ("usr/bin/pip3", "elf"),
            ],
            vec![],
        );
        assert_eq!(risky(&fs, "usr/bin/dash"), Some("a shell"));
        assert_eq!(risky(&fs, "usr/bin/python3.11"), Some("an interpreter"));
        assert_eq!(risky(&fs, "usr/bin/curl"), Some("a network tool"));
        assert_eq!(risky(&fs, "usr/bin/pip3"), Some("a package manager"));
        assert_eq!(risky(&fs, "usr/bin/cc1"), None);
    }
}
