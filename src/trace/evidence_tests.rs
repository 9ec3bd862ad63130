//! Evidence strength on small in-memory images: which configuration is active, weak evidence
//! that never keeps a program, plugins a configuration chooses, locales and time zones the
//! C library reads.

use super::testutil::{imports, kept, lib, libc_exe, run, with_strings};

#[test]
fn only_an_active_configuration_runs_commands_and_names_programs() {
    let lighttpd = with_strings(
        libc_exe(&[]),
        &["/etc/lighttpd/lighttpd.conf", "/usr/bin/other-tool"],
    );
    let e = || {
        vec![
            ("/usr/sbin/lighttpd", "elf"),
            (
                "/etc/lighttpd/lighttpd.conf",
                "t:include_shell \"/usr/share/lighttpd/gen.pl\"\nserver.helper = \"/usr/sbin/enable-mod\"\n",
            ),
            ("/etc/lighttpd/sweep.conf", "t:server.port = 8080\n"),
            (
                "/usr/share/lighttpd/gen.pl",
                "x:#!/usr/bin/perl\nprint 1;\n",
            ),
            ("/usr/sbin/enable-mod", "x:#!/usr/bin/perl\nprint 2;\n"),
            ("/usr/bin/perl", "elf"),
            ("/usr/bin/sh", "elf"),
            ("/usr/bin/other-tool", "elf"),
        ]
    };
    let f = || {
        vec![
            ("/usr/sbin/lighttpd", lighttpd.clone()),
            ("/usr/bin/perl", libc_exe(&[])),
            ("/usr/bin/sh", libc_exe(&[])),
            ("/usr/bin/other-tool", libc_exe(&[])),
        ]
    };
    // Told to load another file: the compiled-in default is data, its commands do not run, the
    // script it names is not kept.
    let argv = ["/usr/sbin/lighttpd", "-D", "-f", "/etc/lighttpd/sweep.conf"];
    let t = run(e(), f(), &argv, &[]).unwrap();
    assert!(kept(&t, "/etc/lighttpd/sweep.conf") && kept(&t, "/etc/lighttpd/lighttpd.conf"));
    for p in ["/usr/bin/sh", "/usr/bin/perl", "/usr/sbin/enable-mod"] {
        assert!(
            !kept(&t, p),
            "{p}: {:?}",
            t.files.get(p.trim_start_matches('/'))
        );
    }
    assert!(t.withheld.contains_key("usr/bin/sh"), "{:?}", t.withheld);
    assert!(
        t.withheld.contains_key("usr/sbin/enable-mod"),
        "{:?}",
        t.withheld
    );
    // A program named only by a string in a binary (no package ties it): withheld.
    assert!(!kept(&t, "/usr/bin/other-tool"));
    assert!(
        t.withheld.contains_key("usr/bin/other-tool"),
        "{:?}",
        t.withheld
    );
    // Not told otherwise: the default is active, its include_shell runs (a shell, the script,
    // its interpreter), the script it names is run.
    let t = run(e(), f(), &["/usr/sbin/lighttpd", "-D"], &[]).unwrap();
    for p in [
        "/usr/bin/sh",
        "/usr/share/lighttpd/gen.pl",
        "/usr/bin/perl",
        "/usr/sbin/enable-mod",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.withheld);
    }
    assert!(!kept(&t, "/usr/bin/other-tool"));
}

#[test]
fn a_plugin_directory_keeps_the_plugins_its_configuration_names() {
    let libpam = with_strings(lib("libpam.so.0"), &["/usr/lib/security", "/etc/pam.d"]);
    let e = |conf: &'static str| {
        vec![
            ("/usr/sbin/daemon", "elf"),
            ("/usr/lib/x86_64-linux-gnu/libpam.so.0", "elf"),
            ("/usr/lib/security/pam_a.so", "elf"),
            ("/usr/lib/security/pam_b.so", "elf"),
            ("/etc/pam.d/other", conf),
        ]
    };
    let f = || {
        vec![
            ("/usr/sbin/daemon", libc_exe(&["libpam.so.0"])),
            ("/usr/lib/x86_64-linux-gnu/libpam.so.0", libpam.clone()),
            ("/usr/lib/security/pam_a.so", lib("pam_a.so")),
            ("/usr/lib/security/pam_b.so", lib("pam_b.so")),
        ]
    };
    let t = run(
        e("t:auth required pam_a.so # not pam_b.so\n"),
        f(),
        &["/usr/sbin/daemon"],
        &[],
    )
    .unwrap();
    assert!(
        kept(&t, "/usr/lib/security/pam_a.so"),
        "{:?}",
        t.files.keys()
    );
    assert!(!kept(&t, "/usr/lib/security/pam_b.so"));
    // A configuration that names none of them: the directory whole, as before.
    let t = run(e("t:nothing here\n"), f(), &["/usr/sbin/daemon"], &[]).unwrap();
    assert!(kept(&t, "/usr/lib/security/pam_a.so") && kept(&t, "/usr/lib/security/pam_b.so"));
}

#[test]
fn the_c_utf8_locale_comes_when_the_env_or_a_program_names_it() {
    let e = || {
        vec![
            ("/usr/bin/app", "elf"),
            ("/usr/lib/locale/C.utf8/LC_CTYPE", "100"),
        ]
    };
    let app = |words: &[&str]| {
        let mut f = imports(libc_exe(&[]), &["setlocale"]);
        f.words = words.iter().map(|w| w.to_string()).collect();
        vec![("/usr/bin/app", f)]
    };
    let t = run(e(), app(&[]), &["/usr/bin/app"], &[]).unwrap();
    assert!(!kept(&t, "/usr/lib/locale/C.utf8/LC_CTYPE"));
    assert!(
        t.dropped.contains_key("usr/lib/locale/C.utf8"),
        "{:?}",
        t.dropped
    );
    let t = run(e(), app(&[]), &["/usr/bin/app"], &["LANG=C.UTF-8"]).unwrap();
    assert!(kept(&t, "/usr/lib/locale/C.utf8/LC_CTYPE"));
    let t = run(e(), app(&["C.UTF-8"]), &["/usr/bin/app"], &[]).unwrap();
    assert!(kept(&t, "/usr/lib/locale/C.utf8/LC_CTYPE"));
}

#[test]
fn libstdcxx_time_formatting_reads_the_time_zone() {
    // libstdc++ formats time through glibc's __strftime_l (std::put_time, locale facets):
    // troff and grops read /etc/localtime that way.
    let e = vec![
        ("/usr/bin/app", "elf"),
        ("/usr/share/zoneinfo/UTC", "100"),
        ("/etc/localtime", "l:/usr/share/zoneinfo/UTC"),
    ];
    let f = vec![("/usr/bin/app", imports(libc_exe(&[]), &["__strftime_l"]))];
    let t = run(e, f, &["/usr/bin/app"], &[]).unwrap();
    assert!(kept(&t, "/etc/localtime") && kept(&t, "/usr/share/zoneinfo/UTC"));
}

/// An extension module importing by name from C (Cython's `import gzip` in `lxml.etree`): the
/// module is kept.
#[test]
fn python_extension_modules_import_by_name() {
    use crate::trace::testutil::{exe, imports, kept, lib, run};
    let mut etree = imports(lib("etree.so"), &["PyImport_ImportModuleLevelObject"]);
    etree.words = vec!["gzip".into(), "etree".into(), "data".into()];
    let t = run(
        vec![
            ("/usr/bin/python3.11", "elf"),
            ("/usr/lib/python3.11/os.py", "t:\n"),
            ("/usr/lib/python3.11/site.py", "t:# dist-packages\n"),
            ("/usr/lib/python3.11/gzip.py", "t:\n"),
            ("/usr/lib/python3.11/tarfile.py", "t:\n"),
            ("/usr/lib/python3/dist-packages/lxml/__init__.py", "t:\n"),
            (
                "/usr/lib/python3/dist-packages/lxml/etree.cpython-311-x86_64-linux-gnu.so",
                "elf",
            ),
            ("/app/main.py", "t:from lxml import etree\n"),
            // A directory without __init__ (a namespace package to Python): a word is no
            // evidence for it.
            ("/usr/lib/python3/dist-packages/data/big.bin", "100"),
        ],
        vec![
            ("/usr/bin/python3.11", exe(&["libc.so.6"])),
            (
                "/usr/lib/python3/dist-packages/lxml/etree.cpython-311-x86_64-linux-gnu.so",
                etree,
            ),
        ],
        &["/usr/bin/python3.11", "/app/main.py"],
        &[],
    )
    .unwrap();
    assert!(
        kept(&t, "/usr/lib/python3.11/gzip.py"),
        "{:?}",
        t.files.keys()
    );
    assert!(!kept(&t, "/usr/lib/python3.11/tarfile.py"));
    assert!(!kept(&t, "/usr/lib/python3/dist-packages/data/big.bin"));
}

/// A CPAN distribution loads its own modules by computed names: requiring one module of a
/// package brings the package's other modules, their XS parts and their requires (lazy ones
/// too: Template requires Encode and Storable lazily).
#[test]
fn a_perl_distribution_comes_whole_with_its_module_level_requires() {
    let perl = with_strings(libc_exe(&[]), &["/usr/share/perl5"]);
    let status = "t:Package: libplack-perl\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n\
                  Package: libssl-perl\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n";
    let e = vec![
        ("/usr/bin/perl", "elf"),
        ("/usr/bin/app", "x:#!/usr/bin/perl\nuse Plack::Runner;\n"),
        (
            "/usr/share/perl5/Plack/Runner.pm",
            "t:package Plack::Runner;\nsub l { my $c = \"Plack::Loader::$n\"; eval \"require $c\"; }\n1;\n",
        ),
        (
            "/usr/share/perl5/Plack/Loader/Delayed.pm",
            "t:package Plack::Loader::Delayed;\nuse Plack::Util;\nsub s {\n    require Secure::Socket;\n}\n1;\n",
        ),
        ("/usr/share/perl5/Plack/Util.pm", "t:1;\n"),
        (
            "/usr/share/perl5/Plack/Fast.pm",
            "t:package Plack::Fast;\n1;\n",
        ),
        ("/usr/share/perl5/auto/Plack/Fast/Fast.so", "elf"),
        ("/usr/share/perl5/Secure/Socket.pm", "t:1;\n"),
        ("/var/lib/dpkg/status", status),
        (
            "/var/lib/dpkg/info/libplack-perl.list",
            "t:/usr/share/perl5/Plack/Runner.pm\n/usr/share/perl5/Plack/Loader/Delayed.pm\n/usr/share/perl5/Plack/Util.pm\n/usr/share/perl5/Plack/Fast.pm\n/usr/share/perl5/auto/Plack/Fast/Fast.so\n",
        ),
        (
            "/var/lib/dpkg/info/libssl-perl.list",
            "t:/usr/share/perl5/Secure/Socket.pm\n",
        ),
    ];
    let t = run(e, vec![("/usr/bin/perl", perl)], &["/usr/bin/app"], &[]).unwrap();
    for p in [
        "/usr/share/perl5/Plack/Runner.pm",
        "/usr/share/perl5/Plack/Loader/Delayed.pm",
        "/usr/share/perl5/Plack/Util.pm",
        "/usr/share/perl5/auto/Plack/Fast/Fast.so",
    ] {
        assert!(kept(&t, p), "{p}: {:?}", t.files.keys());
    }
    assert!(kept(&t, "/usr/share/perl5/Secure/Socket.pm"));
}

/// Python's codecs are chosen by name at run time: those a kept source or the config names
/// (through the alias table) are kept, the others dropped with a reason and an open question;
/// the codecs' own alias table names no codec. A standard module's function-level import
/// waits for a use of the function's name.
#[test]
fn python_codecs_and_lazy_functions_come_when_named() {
    use crate::trace::testutil::{exe, kept, run};
    let enc = "/usr/lib/python3.11/encodings";
    // The interpreter's C code names "idna" (socket.getaddrinfo encodes host names with it).
    let mut python = exe(&["libc.so.6"]);
    python.words = vec!["idna".into(), "strict".into()];
    let t = run(
        vec![
            ("/usr/bin/python3.11", "elf"),
            ("/usr/lib/python3.11/os.py", "t:\n"),
            ("/usr/lib/python3.11/site.py", "t:# dist-packages\n"),
            (
                "/usr/lib/python3.11/encodings/__init__.py",
                "t:def search_function(encoding):\n    mod = __import__('encodings.' + encoding, fromlist=['*'])\n",
            ),
            (
                "/usr/lib/python3.11/encodings/aliases.py",
                "t:aliases = {\n    'latin1'   : 'latin_1',\n    'windows_1252' : 'cp1252',\n    'koi8'   : 'koi8_r',\n}\n",
            ),
            ("/usr/lib/python3.11/encodings/utf_8.py", "t:\n"),
            ("/usr/lib/python3.11/encodings/latin_1.py", "t:\n"),
            ("/usr/lib/python3.11/encodings/cp1252.py", "t:\n"),
            ("/usr/lib/python3.11/encodings/koi8_r.py", "t:\n"),
            ("/usr/lib/python3.11/encodings/idna.py", "t:\n"),
            ("/usr/lib/python3.11/encodings/euc_jp.py", "t:import _codecs_jp\n"),
            ("/usr/lib/python3.11/_codecs_jp.py", "t:\n"),
            (
                "/usr/lib/python3.11/multiprocessing/__init__.py",
                "t:from .context import BaseContext\n",
            ),
            (
                "/usr/lib/python3.11/multiprocessing/context.py",
                "t:class BaseContext:\n    def Manager(self):\n        from .managers import SyncManager\n    def Pool(self):\n        from .pool import Pool\n",
            ),
            ("/usr/lib/python3.11/multiprocessing/managers.py", "t:import hmac\n"),
            ("/usr/lib/python3.11/multiprocessing/pool.py", "t:\n"),
            ("/usr/lib/python3.11/hmac.py", "t:\n"),
            (
                "/app/main.py",
                "t:import multiprocessing\nmultiprocessing.get_context().Pool()\nprint(b'x'.decode('Windows-1252'))\n",
            ),
        ],
        vec![("/usr/bin/python3.11", python)],
        &["/usr/bin/python3.11", "/app/main.py"],
        &["PYTHONIOENCODING=latin1"],
    )
    .unwrap();
    let keys = || t.files.keys().cloned().collect::<Vec<_>>();
    for p in ["utf_8.py", "latin_1.py", "cp1252.py", "idna.py"] {
        assert!(kept(&t, &format!("{enc}/{p}")), "{p}: {:?}", keys());
    }
    for p in ["koi8_r.py", "euc_jp.py"] {
        let k = format!("{}/{p}", &enc[1..]);
        assert!(!kept(&t, &format!("{enc}/{p}")), "{p}: {:?}", keys());
        assert!(t.dropped.contains_key(&k), "{p}: {:?}", t.dropped);
    }
    assert!(!kept(&t, "/usr/lib/python3.11/_codecs_jp.py"));
    assert!(
        t.questions.iter().any(|q| q.contains("Python codecs")),
        "{:?}",
        t.questions
    );
    assert!(kept(&t, "/usr/lib/python3.11/multiprocessing/pool.py"));
    assert!(
        !kept(&t, "/usr/lib/python3.11/multiprocessing/managers.py"),
        "{:?}",
        keys()
    );
    assert!(!kept(&t, "/usr/lib/python3.11/hmac.py"));
}

/// `python -m MOD` runs MOD as `__main__`: its `if __name__ == "__main__":` block and the
/// functions that block calls run, though MOD is a standard module (whose main block never
/// runs when another module imports it).
#[test]
fn python_dash_m_runs_the_modules_main_block() {
    use crate::trace::testutil::{exe, kept, run};
    let go = |argv: &[&str]| {
        run(
            vec![
                ("/usr/bin/python3.11", "elf"),
                ("/usr/lib/python3.11/os.py", "t:\n"),
                ("/usr/lib/python3.11/site.py", "t:\n"),
                (
                    "/usr/lib/python3.11/calendar.py",
                    "t:import sys\ndef main(args):\n    import argparse\n\nif __name__ == \"__main__\":\n    import gettext\n    main(sys.argv)\n",
                ),
                ("/usr/lib/python3.11/argparse.py", "t:\n"),
                ("/usr/lib/python3.11/gettext.py", "t:\n"),
                ("/usr/lib/python3.11/cal_user.py", "t:import calendar\n"),
            ],
            vec![("/usr/bin/python3.11", exe(&["libc.so.6"]))],
            argv,
            &[],
        )
        .unwrap()
    };
    let t = go(&["/usr/bin/python3.11", "-m", "calendar", "2024"]);
    for m in ["calendar", "argparse", "gettext"] {
        let p = format!("/usr/lib/python3.11/{m}.py");
        assert!(kept(&t, &p), "{m}: {:?}", t.files.keys());
    }
    // Imported by another module: the main block and what only it calls do not run.
    let t = go(&["/usr/bin/python3.11", "-m", "cal_user"]);
    assert!(kept(&t, "/usr/lib/python3.11/calendar.py"));
    for m in ["argparse", "gettext"] {
        let p = format!("/usr/lib/python3.11/{m}.py");
        assert!(!kept(&t, &p), "{m}: {:?}", t.files.keys());
    }
}

/// Ruby's `autoload :Const, "file"` loads the file when the constant is first used: it is
/// followed once a source read (or a file the entrypoint is given: a `config.ru`, whose own
/// requires are followed) uses the constant, not for a constant nobody names (rack's
/// `Session::Cookie` brought OpenSSL).
#[test]
fn a_ruby_autoload_waits_for_its_constant() {
    let ruby = with_strings(libc_exe(&[]), &["/usr/lib/ruby/3.1.0"]);
    let lib = "/usr/lib/ruby/3.1.0";
    let t = run(
        vec![
            ("/usr/bin/ruby3.1", "elf"),
            (
                "/usr/lib/ruby/3.1.0/rack.rb",
                "t:module Rack\n  autoload :Builder, \"rack/builder\"\n  autoload :Deflater, \"rack/deflater\"\n  module Session\n    autoload :Cookie, \"rack/session/cookie\"\n  end\n  # Lobster is for the demo\n  autoload :Lobster, \"rack/lobster\"\nend\n",
            ),
            ("/usr/lib/ruby/3.1.0/rack/builder.rb", "t:require 'uri'\n"),
            ("/usr/lib/ruby/3.1.0/rack/deflater.rb", "t:require 'zlib'\n"),
            (
                "/usr/lib/ruby/3.1.0/rack/session/cookie.rb",
                "t:require 'openssl'\nmodule Rack\n  module Session\n    class Cookie\n    end\n  end\nend\n",
            ),
            ("/usr/lib/ruby/3.1.0/rack/lobster.rb", "t:\n"),
            ("/usr/lib/ruby/3.1.0/uri.rb", "t:\n"),
            ("/usr/lib/ruby/3.1.0/zlib.rb", "t:\n"),
            ("/usr/lib/ruby/3.1.0/openssl.rb", "t:\n"),
            (
                "/app/server.rb",
                "t:require 'rack'\napp = Rack::Builder.parse_file(ARGV[0])\nputs \"Set-Cookie: x\" # Cookie\n",
            ),
            (
                "/app/config.ru",
                "t:require 'extra'\nuse Rack::Deflater\nrun lambda { |env| [200, {}, ['ok']] }\n",
            ),
            ("/usr/lib/ruby/3.1.0/extra.rb", "t:\n"),
        ],
        vec![("/usr/bin/ruby3.1", ruby)],
        &[
            "/usr/bin/ruby3.1",
            "--disable-gems",
            "/app/server.rb",
            "/app/config.ru",
        ],
        &[],
    )
    .unwrap();
    let keys = || t.files.keys().cloned().collect::<Vec<_>>();
    // config.ru is Ruby code the program evaluates: its requires are followed.
    for p in [
        "rack/builder.rb",
        "uri.rb",
        "rack/deflater.rb",
        "zlib.rb",
        "extra.rb",
    ] {
        assert!(kept(&t, &format!("{lib}/{p}")), "{p}: {:?}", keys());
    }
    for p in ["rack/session/cookie.rb", "openssl.rb", "rack/lobster.rb"] {
        assert!(!kept(&t, &format!("{lib}/{p}")), "{p}: {:?}", keys());
    }
}

/// Tcl's `package require`: every pkgIndex.tcl of the auto_path is kept (Tcl reads them all),
/// an index that appends its directory to auto_path has its subdirectories read, and the
/// package's files (and what they `source` beside themselves) are kept; another package's
/// files are not.
#[test]
fn tcl_package_require_follows_the_index_files() {
    let tclsh = with_strings(
        libc_exe(&[]),
        &["/usr/share/tcltk/tcl8.6", "/usr/share/tcltk"],
    );
    let lib = "/usr/share/tcltk/tcllib1.21";
    let t = run(
        vec![
            ("/usr/bin/tclsh8.6", "elf"),
            ("/usr/share/tcltk/tcl8.6/init.tcl", "t:\n"),
            (
                "/usr/share/tcltk/tcllib1.21/pkgIndex.tcl",
                "t:if {[lsearch -exact $::auto_path $dir] == -1} {\n    lappend ::auto_path $dir\n}\n",
            ),
            (
                "/usr/share/tcltk/tcllib1.21/json/pkgIndex.tcl",
                "t:package ifneeded json 1.3.4 [list source [file join $dir json.tcl]]\n",
            ),
            (
                "/usr/share/tcltk/tcllib1.21/json/json.tcl",
                "t:package require Tcl 8.4\nif {[catch {package require tcllibc}]} {return 0}\nsource [file join $selfdir json_tcl.tcl]\n",
            ),
            ("/usr/share/tcltk/tcllib1.21/json/json_tcl.tcl", "t:\n"),
            (
                "/usr/share/tcltk/tcllib1.21/md5/pkgIndex.tcl",
                "t:package ifneeded md5 2.0.8 [list source [file join $dir md5x.tcl]]\n",
            ),
            ("/usr/share/tcltk/tcllib1.21/md5/md5x.tcl", "t:\n"),
            ("/app/main.tcl", "t:package require json\nputs [json::json2dict {{}}]\n"),
        ],
        vec![("/usr/bin/tclsh8.6", tclsh)],
        &["/usr/bin/tclsh8.6", "/app/main.tcl"],
        &[],
    )
    .unwrap();
    let keys = || t.files.keys().cloned().collect::<Vec<_>>();
    for p in [
        "pkgIndex.tcl",
        "json/pkgIndex.tcl",
        "md5/pkgIndex.tcl",
        "json/json.tcl",
        "json/json_tcl.tcl",
    ] {
        assert!(kept(&t, &format!("{lib}/{p}")), "{p}: {:?}", keys());
    }
    assert!(
        !kept(&t, &format!("{lib}/md5/md5x.tcl")),
        "{:?}",
        t.files.get("usr/share/tcltk/tcllib1.21/md5/md5x.tcl")
    );
}

/// Without an alias table to read (a byte-code-only standard library), the codecs cannot be
/// chosen by name: all of them are kept, as before the codec rule.
#[test]
fn python_codecs_without_an_alias_table_are_all_kept() {
    use crate::trace::testutil::{exe, kept, run};
    let t = run(
        vec![
            ("/usr/bin/python3.11", "elf"),
            ("/usr/lib/python3.11/os.py", "t:\n"),
            ("/usr/lib/python3.11/site.py", "t:# dist-packages\n"),
            ("/usr/lib/python3.11/encodings/__init__.py", "t:\n"),
            ("/usr/lib/python3.11/encodings/utf_8.py", "t:\n"),
            ("/usr/lib/python3.11/encodings/koi8_r.py", "t:\n"),
            ("/app/main.py", "t:print(1)\n"),
        ],
        vec![("/usr/bin/python3.11", exe(&["libc.so.6"]))],
        &["/usr/bin/python3.11", "/app/main.py"],
        &[],
    )
    .unwrap();
    assert!(
        kept(&t, "/usr/lib/python3.11/encodings/koi8_r.py"),
        "{:?}",
        t.files.keys()
    );
}
