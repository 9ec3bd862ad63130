//! What the maintainer scripts of the unpacked packages would have made.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

fn write_if_missing(root: &Path, image_path: &str, contents: &[u8], mode: u32) {
    let p = root.join(image_path.trim_start_matches('/'));
    if fs::symlink_metadata(&p).is_ok() {
        return;
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("mkdir parent");
    }
    fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn link_if_missing(root: &Path, image_path: &str, target: &str) {
    let p = root.join(image_path.trim_start_matches('/'));
    if fs::symlink_metadata(&p).is_ok() {
        return;
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("mkdir parent");
    }
    symlink(target, &p).unwrap_or_else(|e| panic!("ln -s {target} {}: {e}", p.display()));
}

fn mkdir_mode(root: &Path, image_path: &str, mode: u32) {
    let p = root.join(image_path.trim_start_matches('/'));
    fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod dir");
}

/// What the maintainer scripts of the packages newly unpacked into `root` would have made, as
/// far as the test workloads (and a scanner) can tell.
pub(super) fn emulate_maintainer_scripts(root: &Path, arch: &str, new: &BTreeSet<String>) {
    let has = |p: &str| new.contains(p);
    if has("base-files") {
        base_files_postinst(root);
    }
    if has("base-passwd") {
        base_passwd_postinst(root);
    }
    if has("libc-bin")
        && let Ok(b) = fs::read(root.join("usr/share/libc-bin/nsswitch.conf"))
    {
        write_if_missing(root, "/etc/nsswitch.conf", &b, 0o644);
    }
    if has("tzdata") {
        link_if_missing(root, "/etc/localtime", "/usr/share/zoneinfo/Etc/UTC");
        write_if_missing(root, "/etc/timezone", b"Etc/UTC\n", 0o644);
    }
    if has("debianutils") {
        add_shells(root);
    }
    if has("nginx-common") || has("nginx") {
        nginx_postinst(root);
    }
    // libnginx-mod-*.postinst: enable the module.
    if let Ok(rd) = fs::read_dir(root.join("usr/share/nginx/modules-available")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pkg = format!("libnginx-{}", name.trim_end_matches(".conf"));
            if name.ends_with(".conf") && has(&pkg) {
                link_if_missing(
                    root,
                    &format!("/etc/nginx/modules-enabled/50-{name}"),
                    &format!("/usr/share/nginx/modules-available/{name}"),
                );
            }
        }
    }
    // openjdk-*-jre-headless.postinst: update-alternatives for its tools, /etc/.java.
    for pkg in new.iter().filter(|p| {
        p.starts_with("openjdk-") && (p.ends_with("-jre-headless") || p.ends_with("-jdk-headless"))
    }) {
        openjdk_postinst(root, arch, pkg);
    }
    if has("ca-certificates") {
        update_ca_certificates(root);
    }
    if has("w3c-sgml-lib") {
        w3c_sgml_lib_postinst(root);
    }
}

/// base-files.postinst: directories, root's dot files, /etc/profile; a container runtime's
/// /etc/hosts (the image has one so that `localhost` resolves without it).
fn base_files_postinst(root: &Path) {
    for (d, mode) in [
        ("/tmp", 0o1777),
        ("/var/tmp", 0o1777),
        ("/run/lock", 0o1777),
        ("/mnt", 0o755),
        ("/srv", 0o755),
        ("/opt", 0o755),
        ("/media", 0o755),
        ("/etc/opt", 0o755),
        ("/var/opt", 0o755),
        ("/var/mail", 0o2775),
        ("/usr/local/bin", 0o755),
        ("/usr/local/sbin", 0o755),
        ("/usr/local/lib", 0o755),
        ("/usr/local/share", 0o755),
        ("/usr/local/include", 0o755),
        ("/usr/local/etc", 0o755),
        ("/usr/local/src", 0o755),
        ("/usr/local/games", 0o755),
        ("/root", 0o700),
        ("/home", 0o755),
    ] {
        mkdir_mode(root, d, mode);
    }
    for (from, to, mode) in [
        ("dot.profile", "/root/.profile", 0o644),
        ("dot.bashrc", "/root/.bashrc", 0o644),
        ("profile", "/etc/profile", 0o644),
        ("motd", "/etc/motd", 0o644),
    ] {
        if let Ok(b) = fs::read(root.join("usr/share/base-files").join(from)) {
            write_if_missing(root, to, &b, mode);
        }
    }
    link_if_missing(root, "/var/spool/mail", "../mail");
    link_if_missing(root, "/usr/local/man", "share/man");
    write_if_missing(
        root,
        "/etc/hosts",
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    );
}

/// update-passwd copies the masters; passwd.postinst (shadowconfig on: pwconv, grpconv) moves
/// the password fields into /etc/shadow and /etc/gshadow, leaving `x`.
fn base_passwd_postinst(root: &Path) {
    let passwd = fs::read_to_string(root.join("usr/share/base-passwd/passwd.master"))
        .expect("base-passwd passwd.master");
    let group = fs::read_to_string(root.join("usr/share/base-passwd/group.master"))
        .expect("base-passwd group.master");
    let shadowed = |text: &str| -> String {
        text.lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(':').collect();
                if f.len() > 2 {
                    f[1] = "x";
                }
                f.join(":") + "\n"
            })
            .collect()
    };
    write_if_missing(root, "/etc/passwd", shadowed(&passwd).as_bytes(), 0o644);
    write_if_missing(root, "/etc/group", shadowed(&group).as_bytes(), 0o644);
    let shadow: String = passwd
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|u| format!("{u}:*:19500:0:99999:7:::\n"))
        .collect();
    let gshadow: String = group
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|g| format!("{g}:*::\n"))
        .collect();
    write_if_missing(root, "/etc/shadow", shadow.as_bytes(), 0o640);
    write_if_missing(root, "/etc/gshadow", gshadow.as_bytes(), 0o640);
}

/// add-shell, from the postinsts of dash and bash.
fn add_shells(root: &Path) {
    let mut shells = String::from("# /etc/shells: valid login shells\n");
    for sh in ["sh", "dash", "bash", "rbash"] {
        if fs::symlink_metadata(root.join("usr/bin").join(sh)).is_ok() {
            shells.push_str(&format!("/bin/{sh}\n/usr/bin/{sh}\n"));
        }
    }
    write_if_missing(root, "/etc/shells", shells.as_bytes(), 0o644);
}

/// nginx's postinst: the default site, its page.
fn nginx_postinst(root: &Path) {
    link_if_missing(
        root,
        "/etc/nginx/sites-enabled/default",
        "/etc/nginx/sites-available/default",
    );
    if let Ok(b) = fs::read(root.join("usr/share/nginx/html/index.html")) {
        write_if_missing(root, "/var/www/html/index.nginx-debian.html", &b, 0o644);
    }
}

/// openjdk-*-jre-headless.postinst of `pkg`: update-alternatives for its tools, /etc/.java.
fn openjdk_postinst(root: &Path, arch: &str, pkg: &str) {
    let version = pkg
        .trim_start_matches("openjdk-")
        .split('-')
        .next()
        .unwrap_or_default();
    let base = format!("/usr/lib/jvm/java-{version}-openjdk-{arch}");
    let mut tools: Vec<(String, String)> = Vec::new();
    if let Ok(rd) = fs::read_dir(root.join(base.trim_start_matches('/')).join("bin")) {
        for e in rd.flatten() {
            let t = e.file_name().to_string_lossy().into_owned();
            tools.push((t.clone(), format!("{base}/bin/{t}")));
        }
    }
    if root
        .join(base.trim_start_matches('/'))
        .join("lib/jexec")
        .exists()
    {
        tools.push(("jexec".to_string(), format!("{base}/lib/jexec")));
    }
    tools.sort();
    for (tool, path) in tools {
        link_if_missing(root, &format!("/etc/alternatives/{tool}"), &path);
        link_if_missing(
            root,
            &format!("/usr/bin/{tool}"),
            &format!("/etc/alternatives/{tool}"),
        );
        write_if_missing(
            root,
            &format!("/var/lib/dpkg/alternatives/{tool}"),
            format!("auto\n/usr/bin/{tool}\n\n{path}\n1711\n\n").as_bytes(),
            0o644,
        );
    }
    mkdir_mode(root, "/etc/.java/.systemPrefs", 0o755);
    write_if_missing(root, "/etc/.java/.systemPrefs/.system.lock", b"", 0o644);
    write_if_missing(
        root,
        "/etc/.java/.systemPrefs/.systemRootModFile",
        b"",
        0o644,
    );
}

/// w3c-sgml-lib.postinst (update-xmlcatalog): the root catalog delegates the W3C identifiers
/// to the package's catalog, which delegates to its DTD catalog (whose entries are relative to
/// it). The postinst lists each identifier; a prefix does the same for the tests.
fn w3c_sgml_lib_postinst(root: &Path) {
    let dtd = "file:///usr/share/xml/w3c-sgml-lib/schema/dtd/catalog.xml";
    let entries = |to: &str| {
        format!(
            "<?xml version=\"1.0\"?>\n<catalog xmlns=\"urn:oasis:names:tc:entity:xmlns:xml:catalog\">\n\
             <delegatePublic publicIdStartString=\"-//W3C//\" catalog=\"{to}\"/>\n\
             <delegateSystem systemIdStartString=\"http://www.w3.org/\" catalog=\"{to}\"/>\n\
             </catalog>\n"
        )
    };
    write_if_missing(
        root,
        "/etc/xml/w3c-sgml-lib.xml",
        entries(dtd).as_bytes(),
        0o644,
    );
    write_if_missing(
        root,
        "/etc/xml/catalog",
        entries("file:///etc/xml/w3c-sgml-lib.xml").as_bytes(),
        0o644,
    );
}

/// ca-certificates.postinst (every Mozilla CA trusted) and `update-ca-certificates`: the
/// bundle `/etc/ssl/certs/ca-certificates.crt` (the Mozilla CAs, then the local ones from
/// `/usr/local/share/ca-certificates`), a `NAME.pem` link per CA and, for the local CAs, the
/// `HASH.0` link OpenSSL looks CAs up by (computed with the host's `openssl`; the Mozilla CAs'
/// hash links are left out, nothing here looks them up).
fn update_ca_certificates(root: &Path) {
    let share = root.join("usr/share/ca-certificates");
    let mut mozilla: Vec<String> = Vec::new();
    let mut stack = vec![share.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                mozilla.push(p.strip_prefix(&share).unwrap().display().to_string());
            }
        }
    }
    mozilla.sort();
    let mut conf =
        String::from("# Generated by the pare test harness, as ca-certificates.postinst does\n");
    let certs = root.join("etc/ssl/certs");
    fs::create_dir_all(&certs).expect("mkdir /etc/ssl/certs");
    let mut bundle = Vec::new();
    for m in &mozilla {
        conf.push_str(m);
        conf.push('\n');
        let body = fs::read(share.join(m)).expect("read CA");
        bundle.extend_from_slice(&body);
        if !body.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let name = Path::new(m)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        link_if_missing(
            root,
            &format!("/etc/ssl/certs/{name}.pem"),
            &format!("/usr/share/ca-certificates/{m}"),
        );
    }
    write_if_missing(root, "/etc/ca-certificates.conf", conf.as_bytes(), 0o644);
    let local = root.join("usr/local/share/ca-certificates");
    let mut locals: Vec<PathBuf> = fs::read_dir(&local)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    locals.sort();
    for l in locals {
        let body = fs::read(&l).expect("read local CA");
        bundle.extend_from_slice(&body);
        if !body.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let name = l.file_stem().unwrap().to_string_lossy().into_owned();
        let rel = l.strip_prefix(root).unwrap().display().to_string();
        link_if_missing(
            root,
            &format!("/etc/ssl/certs/{name}.pem"),
            &format!("/{rel}"),
        );
        let hash = Command::new("openssl")
            .args(["x509", "-hash", "-noout", "-in"])
            .arg(&l)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| panic!("openssl x509 -hash of {} failed", l.display()));
        link_if_missing(
            root,
            &format!("/etc/ssl/certs/{hash}.0"),
            &format!("{name}.pem"),
        );
    }
    let p = certs.join("ca-certificates.crt");
    fs::write(&p, bundle).expect("write ca-certificates.crt");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod bundle");
}
