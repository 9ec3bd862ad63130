//! What the C library loads or reads at run time, driven by what the kept objects import: a
//! table of features, each fired by imported symbols (or by a library in the closure, or a
//! string in a program), for glibc and musl. A feature keeps its files when present and may
//! run an action (load NSS modules, pick gconv modules, …). Every hit is recorded (`pare trace`
//! lists them) and every kept file says which symbol of which object caused it.
//!
//! | feature | fired by | keeps |
//! |---|---|---|
//! | users and groups | `getpwnam`, `getgrgid`, `initgroups`, … | nsswitch.conf and its NSS modules (glibc) |
//! | hosts | `getaddrinfo`, `gethostbyname`, `res_query`, … | nsswitch.conf, hosts, host.conf, resolv.conf, gai.conf, services, NSS modules |
//! | services, protocols, networks | `getservbyname`, `getprotobyname`, `getnetbyname` | services, protocols, networks |
//! | iconv | `iconv_open` | gconv-modules(.cache, .d) and the modules for the charsets named by the programs, the image config, and the Unicode family |
//! | locales | `setlocale`, `newlocale` | the locale the Env selects, C.utf8 when the Env or a kept object names it (Python), locale-archive, locale.alias |
//! | time zones | `tzset`, `localtime`, `mktime`, `strftime`, …, or a zoneinfo path in a program | /etc/localtime, /etc/timezone, zoneinfo without `right/` |
//! | OpenSSL | libssl / libcrypto | openssl.cnf (both paths), providers, engines, CA bundle, certs/ |
//! | GnuTLS | libgnutls | CA bundle |
//! | SASL | libsasl2 | its plugin directory |
//! | fontconfig | libfontconfig | fonts.conf, what it includes, the font and cache directories it lists ([`super::fontconfig`]) |
//! | unwinding | `pthread_cancel`, `pthread_exit`, `backtrace`, libstdc++ | libgcc_s.so.1 (glibc) |

use std::collections::{BTreeSet, HashMap, HashSet};

use super::kit::{Cx, Evidence, FeatureHit, Libc, Rule, Why, dir_of, join};
use crate::error::Result;
use crate::rootfs::display;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Action {
    None,
    Nss,
    Iconv,
    Locale,
    TimeZones,
    OpenSsl,
    Sasl,
    Fontconfig,
    LibgccS,
    Shell,
}

struct Feature {
    name: &'static str,
    glibc: bool,
    musl: bool,
    symbols: &'static [&'static str],
    /// Library sonames (prefixes) whose presence fires it.
    libraries: &'static [&'static str],
    /// Files kept when present: (glibc, musl).
    files: (&'static [&'static str], &'static [&'static str]),
    action: Action,
}

const NSS_USERS: &[&str] = &[
    "getpwnam",
    "getpwnam_r",
    "getpwuid",
    "getpwuid_r",
    "getpwent",
    "getpwent_r",
    "setpwent",
    "getgrnam",
    "getgrnam_r",
    "getgrgid",
    "getgrgid_r",
    "getgrent",
    "getgrent_r",
    "setgrent",
    "initgroups",
    "getgrouplist",
    "getlogin",
    "getlogin_r",
    "cuserid",
    "getspnam",
];
const NSS_HOSTS: &[&str] = &[
    "getaddrinfo",
    "getnameinfo",
    "gethostbyname",
    "gethostbyname2",
    "gethostbyname_r",
    "gethostbyname2_r",
    "gethostbyaddr",
    "gethostbyaddr_r",
    "gethostent",
    "sethostent",
    "res_init",
    "res_query",
    "res_search",
    "res_nquery",
    "res_nsearch",
    "res_ninit",
    "__res_init",
    "__res_query",
    "__res_search",
    "__res_ninit",
    "__res_nquery",
    "__res_nsearch",
    "getnetgrent",
    "innetgr",
];
const HOST_FILES_GLIBC: &[&str] = &[
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
];
const HOST_FILES_MUSL: &[&str] = &["/etc/hosts", "/etc/resolv.conf", "/etc/services"];
const TZ: &[&str] = &[
    "tzset",
    "localtime",
    "localtime_r",
    "localtime64",
    "localtime64_r",
    "mktime",
    "mktime64",
    "timelocal",
    "strftime",
    "strftime_l",
    "__strftime_l",
    "wcsftime",
    "wcsftime_l",
    "__wcsftime_l",
    "ctime",
    "ctime_r",
    "ctime64",
    "tzname",
    "timezone",
    "daylight",
    "__tzname",
    "__timezone",
    "__daylight",
    "__tzset",
];
/// CA bundles of the distributions (Debian/Ubuntu/Alpine, Fedora/RHEL, SUSE).
pub(crate) const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

const FEATURES: &[Feature] = &[
    Feature {
        name: "users and groups",
        glibc: true,
        musl: false,
        symbols: NSS_USERS,
        libraries: &[],
        files: (&["/etc/nsswitch.conf"], &[]),
        action: Action::Nss,
    },
    Feature {
        name: "hosts",
        glibc: true,
        musl: true,
        symbols: NSS_HOSTS,
        libraries: &[],
        files: (HOST_FILES_GLIBC, HOST_FILES_MUSL),
        action: Action::Nss,
    },
    Feature {
        name: "services",
        glibc: true,
        musl: true,
        symbols: &[
            "getservbyname",
            "getservbyname_r",
            "getservbyport",
            "getservbyport_r",
            "getservent",
        ],
        libraries: &[],
        files: (&["/etc/nsswitch.conf", "/etc/services"], &["/etc/services"]),
        action: Action::Nss,
    },
    Feature {
        name: "protocols",
        glibc: true,
        musl: true,
        symbols: &[
            "getprotobyname",
            "getprotobyname_r",
            "getprotobynumber",
            "getprotobynumber_r",
            "getprotoent",
        ],
        libraries: &[],
        files: (
            &["/etc/nsswitch.conf", "/etc/protocols"],
            &["/etc/protocols"],
        ),
        action: Action::Nss,
    },
    Feature {
        name: "networks",
        glibc: true,
        musl: false,
        symbols: &[
            "getnetbyname",
            "getnetbyname_r",
            "getnetbyaddr",
            "getnetbyaddr_r",
            "getnetent",
        ],
        libraries: &[],
        files: (&["/etc/nsswitch.conf", "/etc/networks"], &[]),
        action: Action::Nss,
    },
    Feature {
        name: "iconv",
        glibc: true,
        musl: false,
        symbols: &["iconv_open"],
        libraries: &[],
        files: (&[], &[]),
        action: Action::Iconv,
    },
    Feature {
        name: "locales",
        glibc: true,
        musl: false,
        symbols: &["setlocale", "newlocale"],
        libraries: &[],
        files: (&["/usr/share/locale/locale.alias"], &[]),
        action: Action::Locale,
    },
    Feature {
        name: "time zones",
        glibc: true,
        musl: true,
        symbols: TZ,
        libraries: &[],
        files: (
            &["/etc/localtime", "/etc/timezone"],
            &["/etc/localtime", "/etc/timezone"],
        ),
        action: Action::TimeZones,
    },
    Feature {
        name: "OpenSSL",
        glibc: true,
        musl: true,
        symbols: &[],
        libraries: &["libssl.so", "libcrypto.so"],
        files: (CA_BUNDLES, CA_BUNDLES),
        action: Action::OpenSsl,
    },
    Feature {
        name: "GnuTLS",
        glibc: true,
        musl: true,
        symbols: &[],
        libraries: &["libgnutls.so"],
        files: (CA_BUNDLES, CA_BUNDLES),
        action: Action::None,
    },
    Feature {
        name: "SASL",
        glibc: true,
        musl: true,
        symbols: &[],
        libraries: &["libsasl2.so"],
        files: (&[], &[]),
        action: Action::Sasl,
    },
    Feature {
        name: "fontconfig",
        glibc: true,
        musl: true,
        symbols: &[],
        libraries: &["libfontconfig.so"],
        files: (&[], &[]),
        action: Action::Fontconfig,
    },
    Feature {
        name: "a shell (popen, system)",
        glibc: true,
        musl: true,
        symbols: &["popen", "system", "wordexp"],
        libraries: &[],
        files: (&[], &[]),
        action: Action::Shell,
    },
    Feature {
        name: "unwinding",
        glibc: true,
        musl: false,
        symbols: &["pthread_cancel", "pthread_exit", "backtrace"],
        libraries: &["libstdc++.so"],
        files: (&[], &[]),
        action: Action::LibgccS,
    },
];

/// Charsets kept for iconv without being named: the Unicode family.
const ICONV_DEFAULT: &[&str] = &["UTF-16", "UTF-32", "UTF-7", "UNICODE"];

#[derive(Default)]
pub(crate) struct Features {
    pending: Vec<usize>,
    seen: HashSet<usize>,
    done: HashSet<(Action, bool)>,
    files_done: HashSet<(&'static str, bool)>,
}

impl Rule for Features {
    fn start(&mut self, cx: &mut Cx) -> Result<()> {
        // The time zone trees are this rule's: a reference to them keeps nothing by itself.
        for z in [
            "/usr/share/zoneinfo",
            "/share/zoneinfo",
            "/etc/zoneinfo",
            "/usr/lib/locale",
        ] {
            if let Ok(r) = cx.fs.resolve(z, true) {
                cx.claim(&r.path);
            }
        }
        Ok(())
    }

    fn object(&mut self, _cx: &mut Cx, idx: usize) -> Result<()> {
        if self.seen.insert(idx) {
            self.pending.push(idx);
        }
        Ok(())
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        for idx in pending {
            let o = cx.out.objects[idx].clone();
            if is_libc_itself(cx, &o.path, o.facts.soname.as_deref()) {
                continue;
            }
            let musl = process_is_musl(cx, idx);
            let interpreter = is_language_runtime(&o.path, o.facts.soname.as_deref());
            for f in FEATURES {
                if !(if musl { f.musl } else { f.glibc }) {
                    continue;
                }
                // An interpreter offers `system` to its scripts; whether a script uses it is
                // the runtime rules' business, not the interpreter's imports.
                if f.action == Action::Shell && interpreter {
                    continue;
                }
                let trigger =
                    f.symbols
                        .iter()
                        .find_map(|s| o.facts.import(s).map(|i| i.to_string()))
                        .or_else(|| {
                            let name = o.facts.soname.clone().unwrap_or_else(|| {
                                o.path.rsplit('/').next().unwrap_or("").to_string()
                            });
                            f.libraries
                                .iter()
                                .any(|l| name.starts_with(l))
                                .then_some(name)
                        })
                        .or_else(|| {
                            // A static program, or one that names the zoneinfo tree itself.
                            (f.action == Action::TimeZones)
                                .then(|| {
                                    o.facts
                                        .strings
                                        .iter()
                                        .find(|s| s.contains("/zoneinfo"))
                                        .cloned()
                                })
                                .flatten()
                        });
                let Some(trigger) = trigger else { continue };
                let hit = FeatureHit {
                    feature: f.name.to_string(),
                    trigger: trigger.clone(),
                    object: display(&o.path),
                };
                if cx.out.features.len() < 1000 && !cx.out.features.contains(&hit) {
                    cx.out.features.push(hit);
                }
                let why = format!("{} (libc), for {trigger} in {}", f.name, display(&o.path));
                if self.files_done.insert((f.name, musl)) {
                    let files = if musl { f.files.1 } else { f.files.0 };
                    for p in files {
                        cx.keep_if_file(
                            p,
                            Evidence::new(Why::LibcFeature, Some(&o.path), why.clone()),
                        );
                    }
                }
                if self.done.insert((f.action, musl)) {
                    self.act(cx, f.action, idx, &why, musl)?;
                }
            }
        }
        Ok(())
    }
}

/// Language interpreters and their libraries (the runtimes' descriptions): they import
/// `system` for their scripts.
fn is_language_runtime(path: &str, soname: Option<&str>) -> bool {
    let base = soname.unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path));
    super::runtime::is_interpreter_name(base)
}

fn is_libc_itself(cx: &Cx, path: &str, soname: Option<&str>) -> bool {
    match &cx.out.libc {
        Some(Libc::Glibc { path: p, .. }) if p == path => return true,
        Some(Libc::Musl { interpreter }) if interpreter == path => return true,
        _ => {}
    }
    soname.is_some_and(|s| {
        s.starts_with("ld-linux") || s.starts_with("libc.so") || s.starts_with("ld64.so")
    })
}

/// Whether the process object `idx` belongs to runs on musl.
fn process_is_musl(cx: &Cx, idx: usize) -> bool {
    let main = &cx.out.objects[cx.out.objects[idx].main];
    match main.facts.interpreter.as_deref() {
        Some(i) => i.contains("ld-musl-"),
        None => matches!(cx.out.libc, Some(Libc::Musl { .. })),
    }
}

impl Features {
    fn act(
        &mut self,
        cx: &mut Cx,
        action: Action,
        idx: usize,
        why: &str,
        musl: bool,
    ) -> Result<()> {
        let from = cx.out.objects[idx].path.clone();
        let ev = |d: &str| Evidence::new(Why::LibcFeature, Some(&from), d.to_string());
        match action {
            Action::None => {}
            Action::Nss if !musl => nss(cx, why)?,
            Action::Nss => {}
            Action::Iconv => iconv(cx, idx, why)?,
            Action::Locale => locale(cx, idx, &from, why)?,
            Action::TimeZones => time_zones(cx, &from, why),
            Action::OpenSsl => openssl(cx, &from, why),
            Action::Sasl => {
                let lib = cx.out.objects[idx].path.clone();
                let d = format!("{}/sasl2", dir_of(&lib));
                if let Ok(r) = cx.fs.resolve(&d, true)
                    && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
                {
                    cx.keep_tree(&r.path, &ev(&format!("SASL plugins, {why}")));
                }
            }
            Action::Fontconfig => super::fontconfig::keep(cx, &from, why)?,
            Action::Shell => {
                // popen and system run `/bin/sh -c`, but importing them is no cause to keep a
                // shell: distroless images have none and these programs run there. A shell
                // comes back when the entrypoint, a kept script or the active configuration
                // runs one.
                cx.withhold(
                    "/bin/sh",
                    format!(
                        "{} can run shell commands ({why}); no shell is kept without a cause (--keep /bin/sh restores it)",
                        display(&from)
                    ),
                );
            }
            Action::LibgccS => {
                if let Some(Libc::Glibc { path, .. }) = cx.out.libc.clone()
                    && let Some(libc_idx) = cx.ld.object_at(&path)
                {
                    cx.dlopen(
                        libc_idx,
                        "libgcc_s.so.1",
                        &format!("loaded by libc for {why}"),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// `Action::Locale`: the locales the image config selects (or C.UTF-8 when a kept object
/// names it), the archive, message catalogs, and the gconv set-up a locale's charset needs.
fn locale(cx: &mut Cx, idx: usize, from: &str, why: &str) -> Result<()> {
    let ev = |d: &str| Evidence::new(Why::LibcFeature, Some(from), d.to_string());
    let mut names: BTreeSet<String> = BTreeSet::new();
    for k in [
        "LC_ALL",
        "LANG",
        "LC_CTYPE",
        "LC_MESSAGES",
        "LC_COLLATE",
        "LC_NUMERIC",
        "LC_TIME",
        "LC_MONETARY",
    ] {
        if let Some(v) = cx.run.env_var(k)
            && !v.is_empty()
            && v != "C"
            && v != "POSIX"
        {
            names.insert(v.to_string());
        }
    }
    // C.UTF-8 when the Env selects it (above) or a kept object names it itself
    // (Python coerces the C locale to C.UTF-8): a locale chosen at run time
    // (`docker run -e LANG=…`) is not guessed.
    let named = cx.out.objects.iter().any(|o| {
        o.facts
            .words
            .iter()
            .any(|w| w.eq_ignore_ascii_case("C.UTF-8") || w.eq_ignore_ascii_case("C.utf8"))
    });
    if named {
        names.insert("C.UTF-8".into());
    } else if !names
        .iter()
        .any(|n| n.to_ascii_lowercase().starts_with("c.utf"))
        && cx.fs.get("usr/lib/locale/C.utf8").is_some()
    {
        cx.drop_path(
            "usr/lib/locale/C.utf8",
            "the C.UTF-8 locale: neither the image config nor a kept program selects it (a locale set only at run time, docker run -e LANG=C.UTF-8, falls back to C; --keep /usr/lib/locale/C.utf8 or set LANG in the image)",
        );
    }
    let mut archive = false;
    for n in names {
        let (lang, codeset) = match n.split_once('.') {
            Some((l, c)) => (l.to_string(), Some(c.to_string())),
            None => (n.clone(), None),
        };
        let norm = codeset.as_ref().map(|c| {
            c.chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase()
        });
        let mut cands = vec![n.clone()];
        if let Some(c) = &norm {
            cands.push(format!("{lang}.{c}"));
        }
        let mut found = false;
        for c in cands {
            if let Ok(r) = cx.fs.resolve(&format!("/usr/lib/locale/{c}"), true)
                && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
            {
                cx.keep_tree(&r.path, &ev(&format!("locale {n}, {why}")));
                found = true;
                break;
            }
        }
        archive |= !found && lang != "C";
    }
    if archive {
        cx.keep_if_file(
            "/usr/lib/locale/locale-archive",
            ev(&format!("locale archive, {why}")),
        );
    }
    message_catalogs(cx, from, why);
    // Loading a locale sets up its charset's conversion through the gconv cache.
    gconv_config(cx, idx, &format!("the charset of a locale, {why}"))?;
    Ok(())
}

/// `Action::TimeZones`: the zoneinfo tree, symlinks and all, but the leap-second `right/`.
fn time_zones(cx: &mut Cx, from: &str, why: &str) {
    let ev = |d: &str| Evidence::new(Why::LibcFeature, Some(from), d.to_string());
    for z in ["/usr/share/zoneinfo", "/share/zoneinfo", "/etc/zoneinfo"] {
        let Ok(r) = cx.fs.resolve(z, true) else {
            continue;
        };
        if !cx.fs.get(&r.path).is_some_and(|n| n.is_dir()) {
            continue;
        }
        let right = format!("{}/right", r.path);
        let e = ev(&format!("time zone data, {why}"));
        cx.keep_links(&r.symlinks, &r.path);
        cx.keep(&r.path, e.clone());
        let entries: Vec<String> = cx
            .fs
            .subtree(&r.path)
            .map(|(k, _)| k.clone())
            .filter(|k| !super::kit::under(k, &right))
            .collect();
        for k in entries {
            match cx.fs.get(&k).map(|n| n.kind.clone()) {
                Some(crate::rootfs::Kind::Symlink(_)) => {
                    cx.out.symlinks.entry(k).or_default().push(e.clone());
                }
                Some(_) => {
                    cx.keep(&k, e.clone());
                }
                None => {}
            }
        }
        cx.drop_path(
            &right,
            "leap-second time zones (`right/`), a duplicate tree",
        );
    }
}

/// `Action::OpenSsl`: the config, CA bundle and certificates of each OpenSSL directory, and
/// the engines and providers compiled into libcrypto.
fn openssl(cx: &mut Cx, from: &str, why: &str) {
    let ev = |d: &str| Evidence::new(Why::LibcFeature, Some(from), d.to_string());
    let mut dirs: Vec<String> = vec![
        "/usr/lib/ssl".into(),
        "/etc/ssl".into(),
        "/etc/pki/tls".into(),
    ];
    // OPENSSLDIR, ENGINESDIR and MODULESDIR as compiled into libcrypto.
    let libcrypto: Vec<String> = cx
        .objects_with_soname(|s| s.starts_with("libcrypto.so"))
        .into_iter()
        .flat_map(|o| o.facts.strings.iter().cloned())
        .collect();
    for s in libcrypto {
        let base = s.rsplit('/').next().unwrap_or("");
        if base == "ssl" || base.starts_with("engines") || base == "ossl-modules" {
            dirs.push(s);
        }
    }
    dirs.dedup();
    for d in dirs {
        let base = d.rsplit('/').next().unwrap_or("").to_string();
        if base.starts_with("engines") || base == "ossl-modules" {
            if let Ok(r) = cx.fs.resolve(&d, true)
                && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
            {
                cx.keep_tree(&r.path, &ev(&format!("OpenSSL modules, {why}")));
            }
            continue;
        }
        cx.keep_if_file(
            &join(&d, "openssl.cnf"),
            ev(&format!("OpenSSL config, {why}")),
        );
        cx.keep_if_file(&join(&d, "cert.pem"), ev(&format!("CA bundle, {why}")));
        if let Ok(r) = cx.fs.resolve(&join(&d, "certs"), true)
            && cx.fs.get(&r.path).is_some_and(|n| n.is_dir())
        {
            cx.keep_links(&r.symlinks, &r.path);
            cx.keep_tree(&r.path, &ev(&format!("CA certificates, {why}")));
        }
    }
}

/// Most bytes of one language's message catalogs kept whole.
const MAX_CATALOG_BYTES: u64 = 16 << 20;

/// The image config selects a language for messages (`LC_ALL`, `LC_MESSAGES`, `LANG`,
/// `LANGUAGE`, not C/POSIX): its message catalogs (`/usr/share/locale/LANG/LC_MESSAGES`, and
/// the bare language's) are read by gettext under a domain named at run time; kept whole.
fn message_catalogs(cx: &mut Cx, from: &str, why: &str) {
    let mut langs: BTreeSet<String> = BTreeSet::new();
    for k in ["LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"] {
        let Some(v) = cx.run.env_var(k) else { continue };
        for n in v.split(':') {
            let l = n.split(['.', '@']).next().unwrap_or("");
            if l.is_empty() || l == "C" || l == "POSIX" || l.contains('/') || l.contains("..") {
                continue;
            }
            langs.insert(l.to_string());
            if let Some((base, _)) = l.split_once('_') {
                langs.insert(base.to_string());
            }
        }
    }
    for l in langs {
        let dir = format!("/usr/share/locale/{l}/LC_MESSAGES");
        let Ok(r) = cx.fs.resolve(&dir, true) else {
            continue;
        };
        if !cx.fs.get(&r.path).is_some_and(|n| n.is_dir()) {
            continue;
        }
        let ev = Evidence::new(
            Why::LibcFeature,
            Some(from),
            format!("message catalogs of the language {l} the image config selects, {why}"),
        );
        if cx.tree_bytes(&r.path, MAX_CATALOG_BYTES) > MAX_CATALOG_BYTES {
            cx.question(format!(
                "{dir} holds more than {} MiB of message catalogs: not kept (keep the program's with --keep)",
                MAX_CATALOG_BYTES >> 20
            ));
            continue;
        }
        cx.keep_links(&r.symlinks, &r.path);
        cx.keep_tree(&r.path, &ev);
    }
}

/// glibc's NSS: nsswitch.conf and the modules it names (`files` and `dns` are built into
/// glibc ≥ 2.34).
fn nss(cx: &mut Cx, why: &str) -> Result<()> {
    let Some(Libc::Glibc {
        path,
        builtin_files_dns,
    }) = cx.out.libc.clone()
    else {
        return Ok(());
    };
    let Some(libc_idx) = cx.ld.object_at(&path) else {
        return Ok(());
    };
    let mut services: Vec<String> = Vec::new();
    match cx.resolve_file("/etc/nsswitch.conf")? {
        None => services = vec!["files".into(), "dns".into()],
        Some((canon, links)) => {
            cx.keep_links(&links, &canon);
            let text = cx.text(&canon)?.unwrap_or_default();
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("");
                let Some((_, rest)) = line.split_once(':') else {
                    continue;
                };
                for w in rest.split_whitespace() {
                    if w.starts_with('[') || w.ends_with(']') || w.contains('=') {
                        continue;
                    }
                    if !services.iter().any(|s| s == w) {
                        services.push(w.to_string());
                    }
                }
            }
        }
    }
    let services: Vec<String> = services
        .into_iter()
        .filter(|s| !(builtin_files_dns && (s == "files" || s == "dns")))
        .collect();
    let mut wanted = Vec::new();
    for s in &services {
        for (cand, _) in cx.candidates(libc_idx, &format!("libnss_{s}.so.2"))? {
            if let Ok(r) = cx.fs.resolve(&cand, true) {
                wanted.push(r.path);
            }
        }
    }
    cx.contents.prefetch(cx.fs, &wanted)?;
    for s in services {
        let module = format!("libnss_{s}.so.2");
        let w = format!("NSS module for '{s}' in /etc/nsswitch.conf, {why}");
        // A module the image lacks fails the same way in the original: nothing to say.
        cx.dlopen(libc_idx, &module, &w)?;
    }
    Ok(())
}

/// Normalise a charset name as glibc does for lookups: upper case, no `//` suffix.
fn charset(s: &str) -> String {
    s.split("//")
        .next()
        .unwrap_or(s)
        .trim()
        .to_ascii_uppercase()
}

/// The gconv directory (GCONV_PATH's default compiled into libc, else next to it) and its
/// configuration files, kept: what glibc reads to convert charsets.
fn gconv_config(cx: &mut Cx, idx: usize, why: &str) -> Result<Option<(String, Vec<String>)>> {
    let from = cx.out.objects[idx].path.clone();
    let libc = match &cx.out.libc {
        Some(Libc::Glibc { path, .. }) => path.clone(),
        _ => return Ok(None),
    };
    let libc_strings: Vec<String> = cx
        .ld
        .object_at(&libc)
        .map(|i| cx.out.objects[i].facts.strings.clone())
        .unwrap_or_default();
    let mut dirs: Vec<String> = libc_strings
        .into_iter()
        .filter(|s| s.trim_end_matches('/').ends_with("/gconv"))
        .collect();
    dirs.push(format!("{}/gconv", dir_of(&libc)));
    if let Some(p) = cx.run.env_var("GCONV_PATH") {
        dirs.extend(p.split(':').map(str::to_string));
    }
    let Some(dir) = dirs.into_iter().find_map(|d| {
        cx.fs
            .resolve(&d, true)
            .ok()
            .filter(|r| cx.fs.get(&r.path).is_some_and(|n| n.is_dir()))
    }) else {
        return Ok(None);
    };
    let gdir = display(&dir.path);
    let ev = || {
        Evidence::new(
            Why::LibcFeature,
            Some(&from),
            format!("gconv configuration, {why}"),
        )
    };
    let mut confs = Vec::new();
    for f in ["gconv-modules", "gconv-modules.cache"] {
        if let Some(c) = cx.keep_if_file(&join(&gdir, f), ev()) {
            confs.push(c);
        }
    }
    for f in cx.glob(&format!("{gdir}/gconv-modules.d/*.conf")) {
        if let Some(c) = cx.keep_if_file(&f, ev()) {
            confs.push(c);
        }
    }
    Ok(Some((gdir, confs)))
}

/// iconv: the gconv configuration and the modules for the charsets the programs name.
fn iconv(cx: &mut Cx, idx: usize, why: &str) -> Result<()> {
    let from = cx.out.objects[idx].path.clone();
    let Some((gdir, confs)) = gconv_config(cx, idx, why)? else {
        return Ok(());
    };
    let Ok(dir) = cx.fs.resolve(&gdir, true) else {
        return Ok(());
    };
    let ev = |d: String| Evidence::new(Why::LibcFeature, Some(&from), d);
    // alias → name; name → module files.
    let mut alias: HashMap<String, String> = HashMap::new();
    let mut modules: HashMap<String, BTreeSet<String>> = HashMap::new();
    for c in confs.iter().filter(|c| !c.ends_with(".cache")) {
        let Some(text) = cx.text(c)? else { continue };
        for line in text.lines() {
            let w: Vec<&str> = line
                .split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            match w.as_slice() {
                ["alias", a, t, ..] => {
                    alias.insert(charset(a), charset(t));
                }
                ["module", f, t, file, ..] => {
                    let file = if file.contains('/') {
                        file.to_string()
                    } else {
                        join(&gdir, &format!("{file}.so"))
                    };
                    for n in [f, t] {
                        if charset(n) != "INTERNAL" {
                            modules.entry(charset(n)).or_default().insert(file.clone());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // Names: the words of the objects that convert charsets by name (iconv_open, libunistring,
    // GLib), the image config, and the default.
    let mut names: Vec<(String, String)> = Vec::new();
    for o in cx.out.objects.iter().filter(|o| {
        crate::elf::CHARSET_CALLS
            .iter()
            .any(|c| o.facts.import(c).is_some())
    }) {
        for w in &o.facts.words {
            names.push((w.clone(), format!("named in {}", display(&o.path))));
        }
    }
    for a in cx.run.argv().iter().chain(cx.run.env.iter()) {
        for w in a.split(|c: char| c.is_whitespace() || matches!(c, '=' | ',' | ':')) {
            names.push((w.to_string(), "named by the image config".into()));
        }
    }
    for d in ICONV_DEFAULT {
        names.push((d.to_string(), "the Unicode family, kept by default".into()));
    }
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for (n, said) in names {
        let c = charset(&n);
        if c.len() < 2 {
            continue;
        }
        let key = alias.get(&c).cloned().unwrap_or(c.clone());
        let Some(files) = modules.get(&key) else {
            continue;
        };
        for f in files.clone() {
            if kept.insert(f.clone()) {
                cx.keep_if_file(&f, ev(format!("gconv module for {c} ({said}), {why}")));
            }
        }
    }
    // The rest: listed as dropped.
    let all: Vec<String> = cx
        .fs
        .subtree(&dir.path)
        .filter(|(k, _)| k.ends_with(".so"))
        .map(|(k, _)| k.clone())
        .collect();
    let left = cx.drop_unkept(
        all,
        "gconv module for a charset no kept program names; keep it with --keep if iconv needs it",
    );
    if left > 0 {
        cx.question(format!(
            "charsets are converted by a name chosen at run time (iconv): the gconv modules of the charsets the kept objects and the image config name are kept, not the others of {}",
            display(&dir.path)
        ));
    }
    Ok(())
}
