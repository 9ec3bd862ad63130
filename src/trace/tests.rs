//! The rules together, on small in-memory images.

use super::kit::{RunConfig, Why};
use super::testutil::{LIBC, imports, kept, lib, libc_exe, run, run_config, with_strings};
use crate::elf::ElfFacts;

#[test]
fn env_and_wrappers_run_their_command() {
    let e = vec![
        ("/usr/bin/env", "elf"),
        ("/usr/bin/tini", "elf"),
        ("/usr/bin/jq", "elf"),
        ("/usr/local/bin/app", "elf"),
    ];
    let f = || {
        vec![
            ("/usr/bin/env", libc_exe(&[])),
            ("/usr/bin/tini", libc_exe(&[])),
            ("/usr/bin/jq", libc_exe(&[])),
            ("/usr/local/bin/app", libc_exe(&[])),
        ]
    };
    let t = run(
        e.clone(),
        f(),
        &["/usr/bin/env", "-i", "A=1", "jq", "-n", "1"],
        &[],
    )
    .unwrap();
    assert!(kept(&t, "/usr/bin/jq"), "{:?}", t.files.keys());
    assert_eq!(t.evidence("usr/bin/jq")[0].kind, Why::Command);
    // The PATH given on the env line is the one used.
    let t = run(e.clone(), f(), &["env", "PATH=/usr/local/bin", "app"], &[]).unwrap();
    assert!(kept(&t, "/usr/local/bin/app"));
    let err = run(e.clone(), f(), &["env", "PATH=/nowhere", "app"], &[]).unwrap_err();
    assert!(err.to_string().contains("/nowhere"), "{err}");
    let t = run(e.clone(), f(), &["tini", "-g", "--", "app", "--flag"], &[]).unwrap();
    assert!(kept(&t, "/usr/local/bin/app"));
    assert!(t.programs.contains("usr/local/bin/app"));
    // The entrypoint's wrapped command missing is an error, as the container would not start.
    let err = run(e, f(), &["tini", "--", "nope"], &[]).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn shell_scripts_and_sh_c_run_their_commands() {
    let script = "x:#!/bin/sh\nset -e\n. /etc/app/env.sh\nexec /usr/bin/jq \"$@\"\n";
    let e = vec![
        ("/usr/bin/sh", "l:dash"),
        ("/usr/bin/dash", "elf"),
        ("/usr/bin/jq", "elf"),
        ("/usr/bin/base64", "elf"),
        ("/usr/local/bin/run.sh", script),
        (
            "/etc/app/env.sh",
            "t:export X=1\nbase64 --version >/dev/null\n",
        ),
    ];
    let f = || {
        vec![
            ("/usr/bin/dash", libc_exe(&[])),
            ("/usr/bin/jq", libc_exe(&[])),
            ("/usr/bin/base64", libc_exe(&[])),
        ]
    };
    let t = run(e.clone(), f(), &["/usr/local/bin/run.sh"], &[]).unwrap();
    for p in [
        "/usr/bin/dash",
        "/usr/bin/sh",
        "/usr/bin/jq",
        "/etc/app/env.sh",
        "/usr/bin/base64",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.files.keys());
    }
    assert_eq!(t.evidence("usr/bin/jq")[0].kind, Why::ScriptCommand);
    assert!(
        t.reason("usr/bin/jq").contains("run.sh:4"),
        "{}",
        t.reason("usr/bin/jq")
    );
    // sh -c
    let t = run(e.clone(), f(), &["sh", "-c", "jq . | base64"], &[]).unwrap();
    assert!(kept(&t, "/usr/bin/jq") && kept(&t, "/usr/bin/base64"));
    // A command the script runs that is not there: a warning, not an error.
    let t = run(e, f(), &["sh", "-c", "nope; $CMD"], &[]).unwrap();
    assert!(
        t.warnings.iter().any(|w| w.contains("nope")),
        "{:?}",
        t.warnings
    );
    assert!(
        t.questions.iter().any(|w| w.contains("computed")),
        "{:?}",
        t.questions
    );
}

#[test]
fn path_references_from_programs_and_configs() {
    let nginx = with_strings(
        libc_exe(&[]),
        &[
            "/etc/nginx/nginx.conf",
            "/usr/share/nginx",
            "/etc/shadow",
            "/bin/sh",
            "/etc",
            "/var/log/nginx/error.log",
        ],
    );
    let conf = "t:load_module modules/ngx_x.so;\ninclude /etc/nginx/modules-enabled/*.conf;\nhttp { include mime.types; root /srv/www; }\n# include /etc/nginx/unused.conf;\n";
    let e = vec![
        ("/usr/sbin/nginx", "elf"),
        ("/etc/nginx/nginx.conf", conf),
        ("/etc/nginx/mime.types", "t:types { text/html html; }\n"),
        ("/etc/nginx/unused.conf", "t:x\n"),
        (
            "/etc/nginx/modules-enabled/50-x.conf",
            "l:/usr/share/nginx/modules-available/x.conf",
        ),
        (
            "/usr/share/nginx/modules-available/x.conf",
            "t:load_module modules/ngx_y.so;\n",
        ),
        ("/usr/share/nginx/modules", "l:../../lib/nginx/modules"),
        ("/usr/lib/nginx/modules/ngx_x.so", "elf"),
        ("/usr/lib/nginx/modules/ngx_y.so", "elf"),
        ("/usr/lib/nginx/modules/ngx_z.so", "elf"),
        ("/srv/www/index.html", "t:hi"),
        ("/etc/shadow", "t:root:x"),
        ("/usr/bin/sh", "elf"),
        ("/var/log/nginx", "d"),
        ("/etc/big/file", "5000000"),
    ];
    let f = vec![
        ("/usr/sbin/nginx", nginx),
        ("/usr/lib/nginx/modules/ngx_x.so", lib("ngx_x.so")),
        ("/usr/lib/nginx/modules/ngx_y.so", lib("ngx_y.so")),
        ("/usr/lib/nginx/modules/ngx_z.so", lib("ngx_z.so")),
        ("/usr/bin/sh", libc_exe(&[])),
    ];
    let t = run(e, f, &["/usr/sbin/nginx"], &[]).unwrap();
    for p in [
        "/etc/nginx/nginx.conf",
        "/etc/nginx/mime.types",
        "/etc/nginx/modules-enabled/50-x.conf",
        "/usr/share/nginx/modules-available/x.conf",
        "/usr/lib/nginx/modules/ngx_x.so",
        "/usr/lib/nginx/modules/ngx_y.so",
        "/srv/www/index.html",
        "/var/log/nginx",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.files.keys());
    }
    // The modules are loaded (traced as objects), the unused one is not kept by the config,
    // but it is inside /usr/share/nginx/modules → /usr/lib/nginx/modules, which the binary
    // does not name: not kept.
    assert!(!kept(&t, "/usr/lib/nginx/modules/ngx_z.so"));
    assert!(
        t.objects
            .iter()
            .any(|o| o.path == "usr/lib/nginx/modules/ngx_y.so")
    );
    assert!(!kept(&t, "/etc/nginx/unused.conf"), "a commented include");
    assert!(
        !kept(&t, "/etc/shadow"),
        "secrets are never kept for a string"
    );
    assert!(t.dropped.contains_key("etc/shadow"));
    assert!(
        !kept(&t, "/usr/bin/sh"),
        "a shell only when something runs it"
    );
    assert!(!kept(&t, "/etc/big/file"), "/etc is a system directory");
    assert_eq!(
        t.evidence("etc/nginx/mime.types")[0].kind,
        Why::ConfigInclude
    );
    let why = t.why(&super::testutil::image(&[], vec![]).0, "/etc/shadow");
    assert!(why[0].contains("not"), "{why:?}");
}

#[test]
fn directories_larger_than_the_bound_are_an_open_question() {
    let app = with_strings(libc_exe(&[]), &["/opt/data"]);
    let e = vec![("/usr/bin/app", "elf"), ("/opt/data/a", "3000000")];
    let t = run(e, vec![("/usr/bin/app", app)], &["/usr/bin/app"], &[]).unwrap();
    assert!(!kept(&t, "/opt/data/a"));
    assert!(
        t.questions.iter().any(|w| w.contains("/opt/data")),
        "{:?}",
        t.questions
    );
}

#[test]
fn libc_features_follow_the_imported_symbols() {
    let zone = vec![
        ("/usr/share/zoneinfo/UTC", "100"),
        ("/usr/share/zoneinfo/America/New_York", "100"),
        ("/usr/share/zoneinfo/right/UTC", "100"),
        ("/etc/localtime", "l:/usr/share/zoneinfo/UTC"),
        (
            "/etc/nsswitch.conf",
            "t:passwd: files\nhosts: files dns myhostname\n",
        ),
        ("/etc/hosts", "t:127.0.0.1 localhost\n"),
        ("/etc/services", "t:http 80/tcp\n"),
        ("/usr/lib/x86_64-linux-gnu/libnss_myhostname.so.2", "elf"),
        ("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1", "elf"),
    ];
    let libs = || {
        vec![
            (
                "/usr/lib/x86_64-linux-gnu/libnss_myhostname.so.2",
                lib("libnss_myhostname.so.2"),
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
                lib("libgcc_s.so.1"),
            ),
        ]
    };
    // No time functions, no name service: neither zoneinfo nor NSS.
    let mut e = zone.clone();
    e.push(("/usr/bin/app", "elf"));
    let mut f = libs();
    f.push(("/usr/bin/app", imports(libc_exe(&[]), &["printf"])));
    let t = run(e.clone(), f, &["/usr/bin/app"], &[]).unwrap();
    assert!(!kept(&t, "/usr/share/zoneinfo/UTC"));
    assert!(!kept(&t, "/etc/nsswitch.conf"));
    assert!(!kept(
        &t,
        "/usr/lib/x86_64-linux-gnu/libnss_myhostname.so.2"
    ));
    assert!(!kept(&t, "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"));
    // localtime and getaddrinfo.
    let mut f = libs();
    f.push((
        "/usr/bin/app",
        imports(
            libc_exe(&[]),
            &["getaddrinfo", "localtime", "pthread_cancel"],
        ),
    ));
    let t = run(e.clone(), f, &["/usr/bin/app"], &[]).unwrap();
    for p in [
        "/usr/share/zoneinfo/UTC",
        "/usr/share/zoneinfo/America/New_York",
        "/etc/localtime",
        "/etc/nsswitch.conf",
        "/etc/hosts",
        "/etc/services",
        "/usr/lib/x86_64-linux-gnu/libnss_myhostname.so.2",
        "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.files.keys());
    }
    assert!(!kept(&t, "/usr/share/zoneinfo/right/UTC"));
    assert_eq!(t.evidence("etc/hosts")[0].kind, Why::LibcFeature);
    assert!(
        t.features
            .iter()
            .any(|h| h.feature == "time zones" && h.trigger == "localtime")
    );
    // A static program that names the zoneinfo tree gets it; one that does not, does not.
    let mut e2 = zone.clone();
    e2.push(("/app", "elf"));
    let stat = |s: &[&str]| {
        with_strings(
            ElfFacts {
                is_64: true,
                little_endian: true,
                machine: crate::elf::EM_X86_64,
                ..Default::default()
            },
            s,
        )
    };
    let t = run(
        e2.clone(),
        vec![("/app", stat(&["/usr/share/zoneinfo/"]))],
        &["/app"],
        &[],
    )
    .unwrap();
    assert!(kept(&t, "/usr/share/zoneinfo/UTC"));
    let t = run(e2, vec![("/app", stat(&["/etc/app.conf"]))], &["/app"], &[]).unwrap();
    assert!(!kept(&t, "/usr/share/zoneinfo/UTC"));
    let _ = LIBC;
}

#[test]
fn iconv_keeps_the_modules_for_named_charsets() {
    let gconv = "/usr/lib/x86_64-linux-gnu/gconv";
    let mods = "t:alias UTF16// UTF-16//\nmodule UTF-16// INTERNAL UTF-16 1\nmodule INTERNAL UTF-16// UTF-16 1\nmodule ISO-8859-2// INTERNAL ISO8859-2 1\nmodule EBCDIC-US// INTERNAL EBCDIC-US 1\n";
    let e = vec![
        ("/usr/bin/iconv", "elf"),
        ("/usr/lib/x86_64-linux-gnu/gconv/gconv-modules", mods),
        ("/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache", "100"),
        ("/usr/lib/x86_64-linux-gnu/gconv/UTF-16.so", "elf"),
        ("/usr/lib/x86_64-linux-gnu/gconv/ISO8859-2.so", "elf"),
        ("/usr/lib/x86_64-linux-gnu/gconv/EBCDIC-US.so", "elf"),
    ];
    let mut iconv = imports(libc_exe(&[]), &["iconv_open"]);
    iconv.words = vec!["ISO-8859-2".into()];
    let mut libc = lib("libc.so.6");
    libc.strings = vec![gconv.into()];
    let f = vec![
        ("/usr/bin/iconv", iconv),
        (LIBC, libc),
        (
            "/usr/lib/x86_64-linux-gnu/gconv/UTF-16.so",
            lib("UTF-16.so"),
        ),
        (
            "/usr/lib/x86_64-linux-gnu/gconv/ISO8859-2.so",
            lib("ISO8859-2.so"),
        ),
        (
            "/usr/lib/x86_64-linux-gnu/gconv/EBCDIC-US.so",
            lib("EBCDIC-US.so"),
        ),
    ];
    let t = run_config(
        e,
        f,
        RunConfig {
            entrypoint: vec!["/usr/bin/iconv".into(), "-f".into(), "UTF-8".into()],
            ..Default::default()
        },
    )
    .unwrap();
    for p in [
        "gconv-modules",
        "gconv-modules.cache",
        "UTF-16.so",
        "ISO8859-2.so",
    ] {
        assert!(
            kept(&t, &format!("{gconv}/{p}")),
            "{p}: {:?}",
            t.files.keys()
        );
    }
    assert!(!kept(&t, &format!("{gconv}/EBCDIC-US.so")));
    assert!(
        t.dropped
            .contains_key(&format!("{}/EBCDIC-US.so", &gconv[1..]))
    );
}

#[test]
fn node_resolves_relative_bare_and_builtin_requires() {
    let e = vec![
        ("/usr/bin/node", "elf"),
        (
            "/nodeapp/index.js",
            "t:const fs = require('fs');\nconst e = require('express');\nimport u from './lib/util.js';\n",
        ),
        ("/nodeapp/lib/util.js", "t:module.exports = 1;\n"),
        (
            "/nodeapp/node_modules/express/package.json",
            "t:{\"main\": \"lib/express.js\"}",
        ),
        (
            "/nodeapp/node_modules/express/lib/express.js",
            "t:module.exports = require('debug');\n",
        ),
        ("/nodeapp/node_modules/express/README.md", "t:docs"),
        (
            "/nodeapp/node_modules/debug/index.js",
            "t:module.exports = 2;\n",
        ),
        ("/nodeapp/node_modules/unused/index.js", "t:x"),
    ];
    let t = run(
        e,
        vec![("/usr/bin/node", libc_exe(&[]))],
        &["node", "/nodeapp/index.js"],
        &[],
    )
    .unwrap();
    for p in [
        "/nodeapp/index.js",
        "/nodeapp/lib/util.js",
        "/nodeapp/node_modules/express/lib/express.js",
        "/nodeapp/node_modules/express/README.md",
        "/nodeapp/node_modules/debug/index.js",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.files.keys());
    }
    assert!(!kept(&t, "/nodeapp/node_modules/unused/index.js"));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

#[test]
fn perl_follows_use_through_inc() {
    let perl = with_strings(
        libc_exe(&[]),
        &["/usr/share/perl5", "/usr/lib/x86_64-linux-gnu/perl5/5.36"],
    );
    let e = vec![
        ("/usr/bin/perl", "elf"),
        (
            "/usr/local/bin/tool",
            "x:#!/usr/bin/perl\nuse strict;\nuse Foo::Bar;\nsub f { require Lazy; }\n",
        ),
        ("/usr/share/perl5/strict.pm", "t:1;\n"),
        (
            "/usr/share/perl5/Foo/Bar.pm",
            "t:package Foo::Bar;\nuse parent 'Baz';\nsub t { my $x = do \"tables/To/$n.pl\"; }\nuse if defined &X::y, Extra => qw(x);\nsub u { my $l = do \"deep/$table\"; }\n1;\n",
        ),
        ("/usr/share/perl5/tables/To/Bc.pl", "t:1;\n"),
        ("/usr/share/perl5/Extra.pm", "t:1;\n"),
        ("/usr/share/perl5/if.pm", "t:1;\n"),
        ("/usr/share/perl5/deep/To/Gc.pl", "t:1;\n"),
        // A runtime library naming a build tool and a data file: the data is kept, the
        // program only when something runs it.
        (
            "/usr/share/perl5/Baz.pm",
            "t:my $grep = '/usr/bin/grep';\nmy $types = '/etc/mime.types';\n1;\n",
        ),
        ("/usr/bin/grep", "elf"),
        ("/etc/mime.types", "t:text/plain txt\n"),
        ("/usr/share/perl5/Lazy.pm", "t:1;\n"),
        ("/usr/share/perl5/Unused.pm", "t:1;\n"),
        (
            "/usr/lib/x86_64-linux-gnu/perl5/5.36/auto/Foo/Bar/Bar.so",
            "elf",
        ),
    ];
    let f = vec![
        ("/usr/bin/perl", perl),
        ("/usr/bin/grep", libc_exe(&[])),
        (
            "/usr/lib/x86_64-linux-gnu/perl5/5.36/auto/Foo/Bar/Bar.so",
            lib("Bar.so"),
        ),
    ];
    let t = run(e, f, &["/usr/local/bin/tool"], &[]).unwrap();
    for p in [
        "/usr/share/perl5/strict.pm",
        "/usr/share/perl5/Foo/Bar.pm",
        "/usr/share/perl5/Baz.pm",
        "/usr/share/perl5/Lazy.pm",
        "/usr/share/perl5/tables/To/Bc.pl",
        "/usr/share/perl5/Extra.pm",
        "/usr/share/perl5/if.pm",
        "/usr/share/perl5/deep/To/Gc.pl",
        "/usr/lib/x86_64-linux-gnu/perl5/5.36/auto/Foo/Bar/Bar.so",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.files.keys());
    }
    assert!(!kept(&t, "/usr/share/perl5/Unused.pm"));
    assert_eq!(t.evidence("usr/share/perl5/Baz.pm")[0].kind, Why::Runtime);
    assert!(kept(&t, "/etc/mime.types"));
    assert!(
        !kept(&t, "/usr/bin/grep"),
        "{:?}",
        t.evidence("usr/bin/grep")
    );
}

#[test]
fn the_application_directory_is_kept_without_vcs_and_secrets() {
    let e = vec![
        ("/app/bin/server", "elf"),
        ("/app/templates/index.html", "t:<html>"),
        ("/app/.git/config", "t:[core]"),
        ("/app/certs/server.key", "t:secret"),
        ("/opt/other/file", "t:x"),
    ];
    let t = run_config(
        e,
        vec![("/app/bin/server", libc_exe(&[]))],
        RunConfig {
            entrypoint: vec!["/app/bin/server".into()],
            workdir: "/app".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(kept(&t, "/app/templates/index.html"));
    assert_eq!(t.evidence("app/templates/index.html")[0].kind, Why::AppDir);
    assert!(!kept(&t, "/app/.git/config"));
    assert!(!kept(&t, "/app/certs/server.key"));
    assert!(!kept(&t, "/opt/other/file"));
}

#[test]
fn dpkg_ownership_through_usr_merge_and_diversions() {
    // /lib is /usr/lib; libfoo lists /lib/x/libfoo.so.1 and /bin/tool (diverted by
    // tool-wrapper to /bin/tool.real, where the real file now is); tool-wrapper ships /bin/tool.
    let (fs, mut c) = crate::trace::testutil::image(
        &[
            ("/lib", "l:usr/lib"),
            ("/bin", "l:usr/bin"),
            ("/usr/lib/x/libfoo.so.1", "elf"),
            ("/usr/bin/tool", "x:#!/bin/sh\n"),
            ("/usr/bin/tool.real", "elf"),
            (
                "/var/lib/dpkg/status",
                "t:Package: libfoo\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\nDepends: libc6 (>= 2.34)\n\nPackage: tool-wrapper\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 3\nArchitecture: all\n",
            ),
            (
                "/var/lib/dpkg/info/libfoo:amd64.list",
                "t:/.\n/lib\n/lib/x\n/lib/x/libfoo.so.1\n/bin\n/bin/tool\n",
            ),
            (
                "/var/lib/dpkg/info/tool-wrapper.list",
                "t:/bin\n/bin/tool\n",
            ),
            (
                "/var/lib/dpkg/diversions",
                "t:/bin/tool\n/bin/tool.real\ntool-wrapper\n",
            ),
        ],
        vec![],
    );
    let db = crate::packages::read(&fs, &mut c)
        .unwrap()
        .expect("a dpkg database");
    let names: Vec<&str> = db.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["libfoo", "tool-wrapper"],
        "deinstalled packages are not listed"
    );
    let owner = |p: &str| -> Vec<&str> {
        db.owners(p)
            .iter()
            .map(|&i| db.packages[i].name.as_str())
            .collect()
    };
    assert_eq!(owner("usr/lib/x/libfoo.so.1"), vec!["libfoo"]);
    assert_eq!(owner("usr/bin/tool.real"), vec!["libfoo"], "diverted");
    assert_eq!(owner("usr/bin/tool"), vec!["tool-wrapper"]);
    // Directories (and links to them) are nobody's file.
    assert!(owner("lib").is_empty() && owner("usr/lib/x").is_empty());
    assert_eq!(db.packages[0].depends, vec![vec!["libc6".to_string()]]);
}

/// A program that runs others through PATH gets the helpers of its own package that it names
/// (in its words) or that its package's kept data names on a `KEY PROGRAM` line, and those of
/// an add-on package's data; never another package's program, nor a name in prose or code.
#[test]
fn helper_programs_a_package_runs_by_name() {
    use crate::trace::testutil::{exe, imports, kept, run};
    let mut drv = imports(exe(&["libc.so.6"]), &["execvp"]);
    drv.words = vec!["tr".into(), "cat".into(), "couldn't".into()];
    // Its own data directory, where the add-on drv-extra puts a device of its own.
    drv.strings = vec!["/usr/share/drv".into()];
    let status = "t:Package: drv\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n\
                  Package: drv-extra\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nDepends: drv\n\n\
                  Package: coreutils\nStatus: install ok installed\nVersion: 9\nArchitecture: amd64\n";
    let t = run(
        vec![
            ("/usr/bin/drv", "elf"),
            ("/usr/bin/tr", "elf"),
            ("/usr/bin/post1", "elf"),
            ("/usr/bin/post2", "elf"),
            ("/usr/bin/other", "elf"),
            ("/usr/bin/pre2", "elf"),
            ("/usr/bin/cat", "elf"),
            ("/usr/share/drv/dev1/DESC", "t:res 7200\npostpro post1\n"),
            ("/usr/share/drv/notes.txt", "t:see post2 for details\n"),
            ("/usr/share/drv/tool.pl", "t:run other\n"),
            ("/usr/share/drv/dev2/DESC", "t:prepro pre2\n"),
            ("/var/lib/dpkg/status", status),
            (
                "/var/lib/dpkg/info/drv.list",
                "t:/usr/bin/drv\n/usr/bin/tr\n/usr/bin/post1\n/usr/bin/post2\n/usr/bin/other\n/usr/share/drv/dev1/DESC\n/usr/share/drv/notes.txt\n/usr/share/drv/tool.pl\n",
            ),
            (
                "/var/lib/dpkg/info/drv-extra.list",
                "t:/usr/bin/pre2\n/usr/share/drv/dev2/DESC\n",
            ),
            ("/var/lib/dpkg/info/coreutils.list", "t:/usr/bin/cat\n"),
        ],
        vec![
            ("/usr/bin/drv", drv),
            ("/usr/bin/tr", exe(&["libc.so.6"])),
            ("/usr/bin/post1", exe(&["libc.so.6"])),
            ("/usr/bin/post2", exe(&["libc.so.6"])),
            ("/usr/bin/other", exe(&["libc.so.6"])),
            ("/usr/bin/pre2", exe(&["libc.so.6"])),
            ("/usr/bin/cat", exe(&["libc.so.6"])),
        ],
        &["/usr/bin/drv"],
        &[],
    )
    .unwrap();
    assert!(kept(&t, "/usr/bin/tr"), "named in the program");
    assert!(kept(&t, "/usr/bin/post1"), "named by the package's data");
    assert!(
        kept(&t, "/usr/bin/pre2"),
        "named by an add-on package's data"
    );
    assert!(!kept(&t, "/usr/bin/post2"), "a word in prose");
    assert!(!kept(&t, "/usr/bin/other"), "a word in code");
    assert!(!kept(&t, "/usr/bin/cat"), "another package's program");
    assert!(t.programs.contains("usr/bin/tr") && t.programs.contains("usr/bin/post1"));
}

/// libfontconfig: fonts.conf, the `[0-9]*.conf` files of an included directory (through
/// their conf.avail links), the font directories and caches they list.
#[test]
fn fontconfig_keeps_its_configuration_fonts_and_caches() {
    use crate::trace::testutil::{exe, kept, lib, run};
    let fonts_conf = "t:<?xml version=\"1.0\"?>\n<fontconfig>\n<dir>/usr/share/fonts</dir>\n\
                      <dir prefix=\"xdg\">fonts</dir>\n<!-- <dir>/usr/share/nope</dir> -->\n\
                      <include ignore_missing=\"yes\">conf.d</include>\n\
                      <cachedir>/var/cache/fontconfig</cachedir>\n</fontconfig>\n";
    let t = run(
        vec![
            ("/usr/bin/render", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libfontconfig.so.1", "elf"),
            ("/etc/fonts/fonts.conf", fonts_conf),
            (
                "/etc/fonts/conf.d/10-extra.conf",
                "l:../../../usr/share/fontconfig/conf.avail/10-extra.conf",
            ),
            (
                "/usr/share/fontconfig/conf.avail/10-extra.conf",
                "t:<fontconfig><dir>/opt/fonts</dir></fontconfig>\n",
            ),
            ("/etc/fonts/conf.d/README", "t:see the docs\n"),
            ("/usr/share/fonts/truetype/a.ttf", "100"),
            ("/opt/fonts/b.ttf", "100"),
            ("/usr/share/other-fonts/c.ttf", "100"),
            ("/var/cache/fontconfig/x.cache-8", "100"),
        ],
        vec![
            ("/usr/bin/render", exe(&["libfontconfig.so.1", "libc.so.6"])),
            (
                "/usr/lib/x86_64-linux-gnu/libfontconfig.so.1",
                lib("libfontconfig.so.1"),
            ),
        ],
        &["/usr/bin/render"],
        &[],
    )
    .unwrap();
    for p in [
        "/etc/fonts/fonts.conf",
        "/etc/fonts/conf.d/10-extra.conf",
        "/usr/share/fontconfig/conf.avail/10-extra.conf",
        "/usr/share/fonts/truetype/a.ttf",
        "/opt/fonts/b.ttf",
        "/var/cache/fontconfig/x.cache-8",
    ] {
        assert!(kept(&t, p), "{p} not kept");
    }
    assert!(
        !kept(&t, "/usr/share/other-fonts/c.ttf"),
        "a directory nothing lists"
    );
    assert!(!kept(&t, "/etc/fonts/conf.d/README"));
    assert!(t.features.iter().any(|f| f.feature == "fontconfig"));
}

/// libsystemd names the unit trees; units do not run in a container, so neither they nor the
/// programs their ExecStart lines name are kept.
#[test]
fn unit_trees_named_by_libsystemd_are_not_kept() {
    use crate::trace::testutil::{exe, kept, lib, run};
    let mut sd = lib("libsystemd.so.0");
    sd.strings = vec![
        "/usr/lib/systemd/system".into(),
        "/etc/systemd/system".into(),
    ];
    let t = run(
        vec![
            ("/usr/sbin/daemon", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libsystemd.so.0", "elf"),
            (
                "/usr/lib/systemd/system/scrub.service",
                "t:[Service]\nExecStart=/usr/sbin/scrub_all\n",
            ),
            (
                "/etc/systemd/system/timers.target.wants/scrub.timer",
                "l:/usr/lib/systemd/system/scrub.service",
            ),
            ("/usr/sbin/scrub_all", "x:#!/bin/sh\nfsck\n"),
        ],
        vec![
            ("/usr/sbin/daemon", exe(&["libsystemd.so.0", "libc.so.6"])),
            ("/usr/lib/x86_64-linux-gnu/libsystemd.so.0", sd),
        ],
        &["/usr/sbin/daemon"],
        &[],
    )
    .unwrap();
    assert!(kept(&t, "/usr/lib/x86_64-linux-gnu/libsystemd.so.0"));
    assert!(!kept(&t, "/usr/lib/systemd/system/scrub.service"));
    assert!(!kept(&t, "/usr/sbin/scrub_all"));
}

/// An XML catalog named by libxml2 keeps the catalogs it delegates to and the DTDs their
/// relative `uri` entries point at.
#[test]
fn xml_catalogs_keep_what_their_entries_point_at() {
    use crate::trace::testutil::{exe, kept, lib, run};
    let mut xml2 = lib("libxml2.so.2");
    xml2.strings = vec!["file:///etc/xml/catalog".into(), "/etc/xml/catalog".into()];
    let ns = "xmlns=\"urn:oasis:names:tc:entity:xmlns:xml:catalog\"";
    let root = format!(
        "t:<catalog {ns}>\n<delegatePublic publicIdStartString=\"-//W3C//DTD XHTML\" catalog=\"file:///etc/xml/w3c.xml\"/>\n</catalog>\n"
    );
    let w3c = format!(
        "t:<catalog {ns}>\n<delegatePublic publicIdStartString=\"-//W3C//DTD XHTML\" catalog=\"file:///usr/share/xml/w3c/catalog.xml\"/>\n</catalog>\n"
    );
    let leaf = format!(
        "t:<catalog {ns}>\n<public publicId=\"-//W3C//DTD XHTML 1.0 Strict//EN\" uri=\"REC/xhtml1-strict.dtd\"/>\n<system systemId=\"http://www.w3.org/x.ent\" uri=\"REC/../ent/x.ent\"/>\n</catalog>\n"
    );
    let t = run(
        vec![
            ("/usr/bin/xsltproc", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libxml2.so.2", "elf"),
            ("/etc/xml/catalog", &root),
            ("/etc/xml/w3c.xml", &w3c),
            ("/usr/share/xml/w3c/catalog.xml", &leaf),
            (
                "/usr/share/xml/w3c/REC/xhtml1-strict.dtd",
                "t:<!ENTITY x 'y'>\n",
            ),
            ("/usr/share/xml/w3c/ent/x.ent", "t:<!ENTITY z 'y'>\n"),
            ("/usr/share/xml/w3c/REC/unlisted.dtd", "t:<!ENTITY u 'v'>\n"),
        ],
        vec![
            ("/usr/bin/xsltproc", exe(&["libxml2.so.2", "libc.so.6"])),
            ("/usr/lib/x86_64-linux-gnu/libxml2.so.2", xml2),
        ],
        &["/usr/bin/xsltproc"],
        &[],
    )
    .unwrap();
    for p in [
        "/etc/xml/catalog",
        "/etc/xml/w3c.xml",
        "/usr/share/xml/w3c/catalog.xml",
        "/usr/share/xml/w3c/REC/xhtml1-strict.dtd",
        "/usr/share/xml/w3c/ent/x.ent",
    ] {
        assert!(kept(&t, p), "{p} not kept");
    }
    assert!(!kept(&t, "/usr/share/xml/w3c/REC/unlisted.dtd"));
}

/// A library's data comes from its package (and its data-only dependency) when the library is
/// loaded, not when it is only installed; a program that imports `popen` gets no shell.
#[test]
fn loaded_libraries_bring_their_package_data_and_popen_no_shell() {
    use crate::trace::testutil::{exe, imports, kept, lib, run};
    let status = "t:Package: app\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nDepends: libmagic1, libother1, app-words\n\n\
                  Package: libmagic1\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nDepends: libmagic-mgc\n\n\
                  Package: libmagic-mgc\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n\
                  Package: libother1\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n\
                  Package: app-words\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n\
                  Package: dash\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n";
    let t = run(
        vec![
            ("/usr/bin/app", "elf"),
            ("/usr/bin/dash", "elf"),
            ("/usr/bin/sh", "l:dash"),
            ("/usr/lib/x86_64-linux-gnu/libmagic.so.1", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libother.so.1", "elf"),
            ("/usr/share/libmagic/formats.txt", "t:formats\n"),
            ("/usr/lib/file/magic.mgc", "t:compiled magic\n"),
            ("/usr/share/misc/magic.mgc", "l:../../lib/file/magic.mgc"),
            ("/usr/share/other/table.dat", "t:not loaded\n"),
            ("/usr/share/words/en.dict", "t:words\n"),
            ("/var/lib/dpkg/status", status),
            ("/var/lib/dpkg/info/app.list", "t:/usr/bin/app\n"),
            (
                "/var/lib/dpkg/info/dash.list",
                "t:/usr/bin/dash\n/usr/bin/sh\n",
            ),
            (
                "/var/lib/dpkg/info/libmagic1.list",
                "t:/usr/lib/x86_64-linux-gnu/libmagic.so.1\n/usr/share/libmagic/formats.txt\n",
            ),
            (
                "/var/lib/dpkg/info/libmagic-mgc.list",
                "t:/usr/lib/file/magic.mgc\n/usr/share/misc/magic.mgc\n",
            ),
            (
                "/var/lib/dpkg/info/libother1.list",
                "t:/usr/lib/x86_64-linux-gnu/libother.so.1\n/usr/share/other/table.dat\n",
            ),
            (
                "/var/lib/dpkg/info/app-words.list",
                "t:/usr/share/words/en.dict\n",
            ),
        ],
        vec![
            (
                "/usr/bin/app",
                imports(exe(&["libc.so.6", "libmagic.so.1"]), &["popen"]),
            ),
            ("/usr/bin/dash", exe(&["libc.so.6"])),
            (
                "/usr/lib/x86_64-linux-gnu/libmagic.so.1",
                lib("libmagic.so.1"),
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libother.so.1",
                lib("libother.so.1"),
            ),
        ],
        &["/usr/bin/app"],
        &[],
    )
    .unwrap();
    assert!(
        kept(&t, "/usr/share/libmagic/formats.txt"),
        "the loaded library's own data"
    );
    assert!(
        kept(&t, "/usr/lib/file/magic.mgc"),
        "its data-only dependency"
    );
    assert!(kept(&t, "/usr/share/misc/magic.mgc"));
    assert!(
        kept(&t, "/usr/share/words/en.dict"),
        "the program's data package"
    );
    assert!(
        !kept(&t, "/usr/share/other/table.dat"),
        "a library that is installed but not loaded"
    );
    assert!(
        !kept(&t, "/usr/bin/dash") && !kept(&t, "/usr/bin/sh"),
        "popen is no cause"
    );
    let w = t
        .withheld
        .get("usr/bin/sh")
        .or_else(|| t.withheld.get("bin/sh"));
    assert!(
        w.is_some_and(|w| w.contains("--keep /bin/sh")),
        "{:?}",
        t.withheld
    );
}

/// A program that runs others by a computed path (`execv`) and names a program of its own
/// package runs it; an interpreter of a dependency and a script of its own are withheld.
#[test]
fn helpers_by_computed_path_and_what_is_withheld() {
    use crate::trace::testutil::{exe, imports, kept, run};
    let mut drv = imports(exe(&["libc.so.6"]), &["execv"]);
    drv.words = vec![
        "cc1".into(),
        "python3".into(),
        "drv-bug".into(),
        "cat".into(),
    ];
    drv.strings = vec!["/usr/libexec/drv/pass2".into()];
    let status = "t:Package: drv\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nDepends: python3\n\n\
                  Package: python3\nStatus: install ok installed\nVersion: 3\nArchitecture: amd64\n\n\
                  Package: coreutils\nStatus: install ok installed\nVersion: 9\nArchitecture: amd64\n";
    let t = run(
        vec![
            ("/usr/bin/drv", "elf"),
            ("/usr/lib/drv/cc1", "elf"),
            ("/usr/libexec/drv/pass2", "elf"),
            ("/usr/bin/drv-bug", "x:#!/bin/sh\necho report\n"),
            ("/usr/bin/python3", "elf"),
            ("/usr/bin/cat", "elf"),
            ("/var/lib/dpkg/status", status),
            (
                "/var/lib/dpkg/info/drv.list",
                "t:/usr/bin/drv\n/usr/lib/drv/cc1\n/usr/libexec/drv/pass2\n/usr/bin/drv-bug\n",
            ),
            ("/var/lib/dpkg/info/python3.list", "t:/usr/bin/python3\n"),
            ("/var/lib/dpkg/info/coreutils.list", "t:/usr/bin/cat\n"),
        ],
        vec![
            ("/usr/bin/drv", drv),
            ("/usr/lib/drv/cc1", exe(&["libc.so.6"])),
            ("/usr/libexec/drv/pass2", exe(&["libc.so.6"])),
            ("/usr/bin/python3", exe(&["libc.so.6"])),
            ("/usr/bin/cat", exe(&["libc.so.6"])),
        ],
        &["/usr/bin/drv"],
        &[],
    )
    .unwrap();
    assert!(kept(&t, "/usr/lib/drv/cc1") && t.programs.contains("usr/lib/drv/cc1"));
    assert!(
        t.programs.contains("usr/libexec/drv/pass2"),
        "named by path: run, not only kept: {:?} {:?}",
        t.evidence("usr/libexec/drv/pass2"),
        t.withheld
    );
    assert!(
        !kept(&t, "/usr/bin/python3"),
        "an interpreter needs strong evidence"
    );
    assert!(
        t.withheld.contains_key("usr/bin/python3"),
        "{:?}",
        t.withheld
    );
    assert!(
        !kept(&t, "/usr/bin/drv-bug"),
        "a script brings its interpreter"
    );
    assert!(
        t.withheld.contains_key("usr/bin/drv-bug"),
        "{:?}",
        t.withheld
    );
    assert!(!kept(&t, "/usr/bin/cat"), "an unrelated package's program");
}

/// A plugin that embeds Python (it links libpython) starts the interpreter: its start-up set
/// is kept, with `sitecustomize`.
#[test]
fn a_plugin_embedding_python_keeps_the_start_up_set() {
    use crate::trace::testutil::{exe, kept, lib, run};
    let mut plugin =
        crate::trace::testutil::imports(lib("python3_plugin.so"), &["PyImport_ImportModule"]);
    plugin.needed = vec!["libc.so.6".into(), "libpython3.11.so.1.0".into()];
    plugin.words = vec!["threading".into(), "not_a_module".into(), "bin".into()];
    let t = run(
        vec![
            ("/usr/bin/host", "elf"),
            ("/usr/lib/host/python3_plugin.so", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0", "elf"),
            ("/usr/lib/python3.11/os.py", "t:import abc\n"),
            ("/usr/lib/python3.11/abc.py", "t:\n"),
            ("/usr/lib/python3.11/site.py", "t:import os\n"),
            ("/usr/lib/python3.11/sitecustomize.py", "t:\n"),
            ("/usr/lib/python3.11/json/__init__.py", "t:\n"),
            ("/usr/lib/python3.11/threading.py", "t:\n"),
            // `bin` from the working directory `/` is a namespace package to Python: a word
            // is no import of it (unbound's "bin" kept all of /usr/bin).
            ("/usr/bin/tool", "100"),
        ],
        vec![
            (
                "/usr/bin/host",
                exe(&["libc.so.6", "/usr/lib/host/python3_plugin.so"]),
            ),
            ("/usr/lib/host/python3_plugin.so", plugin),
            (
                "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
                lib("libpython3.11.so.1.0"),
            ),
        ],
        &["/usr/bin/host"],
        &[],
    )
    .unwrap();
    for p in [
        "/usr/lib/python3.11/os.py",
        "/usr/lib/python3.11/site.py",
        "/usr/lib/python3.11/sitecustomize.py",
        "/usr/lib/python3.11/threading.py",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.files.keys());
    }
    assert!(!kept(&t, "/usr/lib/python3.11/json/__init__.py"));
    assert!(!kept(&t, "/usr/bin/tool"));
}
