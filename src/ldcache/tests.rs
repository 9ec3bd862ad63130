//! Round trips, glibc's own ldconfig and ld.so against the caches pare writes, and
//! malformed input.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const LDCONFIG: &str = "/sbin/ldconfig";

fn entry(soname: &str, path: &str) -> CacheEntry {
    CacheEntry {
        soname: soname.into(),
        path: path.into(),
    }
}

fn sample() -> Vec<CacheEntry> {
    vec![
        entry("libpx.so.1", "/opt/pare-x/lib/libpx.so.1"),
        entry("libfoo.so.10", "/usr/local/lib/libfoo.so.10"),
        entry("libfoo.so.2", "/usr/local/lib/libfoo.so.2"),
        entry("libfoo.so.1", "/usr/local/lib/libfoo.so.1"),
        entry("libz.so.1", "/opt/z/lib/libz.so.1.3"),
        entry("libstdc++.so.6", "/opt/gcc/lib64/libstdc++.so.6.0.33"),
        entry("libpython3.11.so.1.0", "/opt/py/lib/libpython3.11.so.1.0"),
        entry("libA.so", "/opt/x/lib/libA.so"),
    ]
}

fn have_ldconfig() -> bool {
    if Path::new(LDCONFIG).exists() {
        true
    } else {
        eprintln!("skipping: {LDCONFIG} not found");
        false
    }
}

/// `ldconfig -p -C FILE` as (soname, tag, path), e.g.
/// ("libc.so.6", "libc6,x86-64", "/lib/x86_64-linux-gnu/libc.so.6").
fn ldconfig_print(cache: &Path) -> Result<Vec<(String, String, String)>, String> {
    let out = Command::new(LDCONFIG)
        .arg("-p")
        .arg("-C")
        .arg(cache)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.contains("libs found in cache"), "{text}");
    Ok(lines
        .filter_map(|l| l.strip_prefix('\t'))
        .map(|l| {
            let (left, path) = l.rsplit_once(" => ").expect(l);
            let (soname, tag) = left.split_once(" (").expect(l);
            let tag = tag.strip_suffix(')').expect(l);
            (soname.to_string(), tag.to_string(), path.to_string())
        })
        .collect())
}

fn pairs(v: &[ParsedEntry]) -> Vec<(String, String)> {
    v.iter()
        .map(|e| (e.soname.clone(), e.path.clone()))
        .collect()
}

#[test]
fn libcmp_matches_glibc_semantics() {
    use Ordering::*;
    let c = |a: &str, b: &str| dl_cache_libcmp(a.as_bytes(), b.as_bytes(), true);
    assert_eq!(c("libfoo.so.10", "libfoo.so.2"), Greater);
    assert_eq!(c("libfoo.so.2", "libfoo.so.10"), Less);
    assert_eq!(c("libfoo.so.1", "libfoo.so.01"), Equal);
    assert_eq!(c("libfoo.so", "libfoo.so.1"), Less);
    assert_eq!(c("libfoo2.so", "libfoo.so"), Greater); // digit > any char
    assert_eq!(c("libfoo.so", "libfoo2.so"), Less);
    assert_eq!(c("libA.so", "liba.so"), Less);
    assert_eq!(c("lib9", "lib"), Greater);
    assert_eq!(c("", ""), Equal);
    // Byte >= 0x80: below NUL with signed char, above with unsigned.
    assert_eq!(dl_cache_libcmp(b"a\xc3", b"a", true), Less);
    assert_eq!(dl_cache_libcmp(b"a\xc3", b"a", false), Greater);
    // Absurd digit runs wrap but never break the total order.
    let mut v = ["l99999999999", "l1", "l4294967296", "l2147483648", "l0"];
    v.sort_by(|a, b| c(a, b));
    // 2^31 wraps to i32::MIN, 2^32 to 0, 99999999999 to 1215752191.
    assert_eq!(
        v,
        ["l2147483648", "l4294967296", "l0", "l1", "l99999999999"]
    );
}

/// (1) Our cache, read by the independent `ldconfig -p`.
#[test]
fn ldconfig_lists_built_cache() {
    if !have_ldconfig() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (arch, tag) in [
        (CacheArch::X86_64, "libc6,x86-64"),
        (CacheArch::Aarch64, "libc6,AArch64"),
        (CacheArch::I386, "libc6"),
        (CacheArch::Ppc64le, "libc6,64bit"),
        (CacheArch::Riscv64, "libc6,double-float"),
        (CacheArch::Other { flags: 0x803 }, "libc6,x32"),
    ] {
        let file = dir.path().join("ld.so.cache");
        let entries = sample();
        fs::write(&file, build_cache(&entries, arch)).unwrap();
        let listed = ldconfig_print(&file).unwrap();
        assert_eq!(listed.len(), entries.len(), "{listed:?}");
        for e in &entries {
            assert!(
                listed.contains(&(e.soname.clone(), tag.to_string(), e.path.clone())),
                "{arch:?}: {e:?} missing from {listed:?}"
            );
        }
    }
    // s390x caches are big-endian; an x86 ldconfig must refuse them for
    // exactly that reason.
    if cfg!(target_endian = "little") {
        let file = dir.path().join("s390x.cache");
        fs::write(&file, build_cache(&sample(), CacheArch::S390x)).unwrap();
        let err = ldconfig_print(&file).unwrap_err();
        assert!(err.contains("wrong endianness"), "{err}");
    }
}

/// (2) build → parse round trip, determinism, dedupe, order.
#[test]
fn round_trip() {
    let mut entries = sample();
    entries.push(entry("libfoo.so.2", "/elsewhere/libfoo.so.2")); // dup: dropped
    entries.push(entry("", "/x")); // unrepresentable: skipped
    entries.push(entry("libnul.so", "/a\0b")); // unrepresentable: skipped
    for arch in [CacheArch::X86_64, CacheArch::S390x, CacheArch::Aarch64] {
        let bytes = build_cache(&entries, arch);
        assert_eq!(bytes, build_cache(&entries, arch), "deterministic");
        let parsed = parse_cache(&bytes).unwrap();
        assert_eq!(parsed.len(), sample().len());
        for e in &sample() {
            let p = parsed.iter().find(|p| p.soname == e.soname).unwrap();
            assert_eq!(p.path, e.path);
            assert_eq!(p.flags, arch.flags());
            assert_eq!(p.hwcap, 0);
        }
        // Sorted in reverse libcmp order, as ld.so's bsearch expects.
        for w in parsed.windows(2) {
            let ord = dl_cache_libcmp(
                w[0].soname.as_bytes(),
                w[1].soname.as_bytes(),
                arch.char_is_signed(),
            );
            assert_ne!(
                ord,
                Ordering::Less,
                "{} before {}",
                w[0].soname,
                w[1].soname
            );
        }
    }
    // Input order doesn't matter (absent duplicate sonames).
    let mut rev = sample();
    rev.reverse();
    assert_eq!(
        build_cache(&rev, CacheArch::X86_64),
        build_cache(&sample(), CacheArch::X86_64)
    );
    // Empty cache is still well-formed.
    assert_eq!(
        parse_cache(&build_cache(&[], CacheArch::X86_64)).unwrap(),
        vec![]
    );
}

/// (3) The host's real cache, cross-checked against `ldconfig -p`.
#[test]
fn parses_host_cache() {
    let host = Path::new("/etc/ld.so.cache");
    let Ok(bytes) = fs::read(host) else {
        eprintln!("skipping: no /etc/ld.so.cache on this host");
        return;
    };
    let parsed = parse_cache(&bytes).unwrap();
    assert!(parsed.iter().any(|e| e.soname == "libc.so.6"), "{parsed:?}");
    if have_ldconfig() {
        let listed = ldconfig_print(host).unwrap();
        let listed: Vec<_> = listed.into_iter().map(|(s, _, p)| (s, p)).collect();
        assert_eq!(pairs(&parsed), listed);
    }
}

fn have_gcc() -> bool {
    let ok = Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: gcc not available");
    }
    ok
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Real ldconfig on a directory of oddly named libraries: its caches (all
/// three formats) parse to what it prints, and our sort order equals its.
#[test]
fn matches_real_ldconfig_order_and_formats() {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) || !have_ldconfig() || !have_gcc() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let libdir = root.join("opt/x/lib");
    fs::create_dir_all(&libdir).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("var/cache/ldconfig")).unwrap();
    fs::write(root.join("etc/ld.so.conf"), "/opt/x/lib\n").unwrap();
    let src = root.join("t.c");
    fs::write(&src, "int t(void) { return 1; }\n").unwrap();
    let obj = root.join("t.o");
    run(Command::new("gcc")
        .args(["-fPIC", "-c", "-o"])
        .arg(&obj)
        .arg(&src));
    let names = [
        "libfoo.so.1",
        "libfoo.so.2",
        "libfoo.so.10",
        "libfoo.so.1.2",
        "libfoo-1.2.so.3",
        "libFoo.so.1",
        "libfoo2.so.1",
        "libfoo10.so.1",
        "liba.so.1",
        "libz.so.1",
        "libz9.so.0",
        "libz10.so.0",
        "lib_x.so.0",
        "libstdc++.so.6",
        "libpython3.11.so.1.0",
        "libpython3.9.so.1.0",
        "libx.so.007",
        "libbar.so",
    ];
    for n in names {
        run(Command::new("gcc")
            .arg("-shared")
            .arg(format!("-Wl,-soname,{n}"))
            .arg("-o")
            .arg(libdir.join(n))
            .arg(&obj));
    }
    let cache = root.join("etc/ld.so.cache");
    for format in ["new", "compat", "old"] {
        let _ = fs::remove_file(&cache);
        run(Command::new(LDCONFIG)
            .args(["-X", "-c", format, "-r"])
            .arg(root));
        let bytes = fs::read(&cache).unwrap();
        let theirs = parse_cache(&bytes).unwrap_or_else(|e| panic!("{format}: {e}"));
        let listed: Vec<_> = ldconfig_print(&cache)
            .unwrap()
            .into_iter()
            .map(|(s, _, p)| (s, p))
            .collect();
        assert_eq!(pairs(&theirs), listed, "format {format}");
        assert!(theirs.len() >= names.len(), "{format}: {theirs:?}");
        assert!(theirs.iter().all(|e| e.flags == 0x303));

        // Feed ldconfig's entries to build_cache in a scrambled order:
        // the result must be in exactly ldconfig's order.
        let mut input: Vec<CacheEntry> = theirs.iter().map(|e| entry(&e.soname, &e.path)).collect();
        input.reverse();
        input.rotate_left(5);
        let ours = parse_cache(&build_cache(&input, CacheArch::X86_64)).unwrap();
        assert_eq!(pairs(&ours), pairs(&theirs), "format {format}");
    }
}

/// (4) Hostile input never panics.
#[test]
fn garbage_never_panics() {
    let good = build_cache(&sample(), CacheArch::X86_64);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for n in 0..good.len() {
        inputs.push(good[..n].to_vec());
    }
    // Old-format wrapper around the new cache, truncated too.
    let mut compat = Vec::new();
    compat.extend_from_slice(OLD_MAGIC);
    compat.push(0);
    compat.extend_from_slice(&0u32.to_le_bytes());
    compat.extend_from_slice(&good);
    assert_eq!(parse_cache(&compat).unwrap(), parse_cache(&good).unwrap());
    for n in 0..compat.len() {
        inputs.push(compat[..n].to_vec());
    }
    // Deterministic pseudo-random corruption (xorshift).
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for base in [&good, &compat] {
        for _ in 0..4000 {
            let mut v = base.clone();
            for _ in 0..(1 + rnd() % 4) {
                let i = (rnd() as usize) % v.len();
                v[i] = match rnd() % 3 {
                    0 => 0xff,
                    1 => 0,
                    _ => rnd() as u8,
                };
            }
            inputs.push(v);
        }
    }
    // Huge counts and offsets in every header/entry field.
    for off in (20..good.len().min(NEW_HEADER_LEN + 3 * NEW_ENTRY_LEN)).step_by(4) {
        for val in [
            u32::MAX,
            0x8000_0000,
            good.len() as u32,
            good.len() as u32 - 1,
        ] {
            let mut v = good.clone();
            v[off..off + 4].copy_from_slice(&val.to_le_bytes());
            inputs.push(v);
        }
    }
    for val in [u32::MAX, 0x4000_0000] {
        let mut v = compat.clone();
        v[12..16].copy_from_slice(&val.to_le_bytes());
        inputs.push(v);
    }
    inputs.push(b"ld.so-1.7.0".to_vec());
    inputs.push(vec![0; 100]);
    let mut ok = 0;
    for input in &inputs {
        if parse_cache(input).is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 0 && ok < inputs.len());
    assert!(matches!(
        parse_cache(&good[..NEW_HEADER_LEN - 1]),
        Err(LdCacheError::TooShort(_))
    ));
    assert!(matches!(
        parse_cache(b"\x7fELF\x02\x01\x01\0\0\0\0\0"),
        Err(LdCacheError::BadMagic)
    ));
    let mut bad = good.clone();
    bad[NEW_FLAGS_OFFSET] = ENDIAN_INVALID;
    assert_eq!(parse_cache(&bad), Err(LdCacheError::InvalidEndianness));
    let mut unset = good.clone();
    unset[NEW_FLAGS_OFFSET] = ENDIAN_UNSET;
    assert_eq!(parse_cache(&unset).unwrap(), parse_cache(&good).unwrap());
}

fn copy_into_root(root: &Path, host: &str, canonical: &str) {
    let dest = root.join(canonical.trim_start_matches('/'));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::copy(host, &dest).unwrap_or_else(|e| panic!("copy {host}: {e}"));
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// (5) The real proof: glibc's ld.so, in a chroot, finds a library in a
/// non-default directory only through our cache.
#[test]
fn real_ld_so_uses_cache_in_chroot() {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        eprintln!("skipping: chroot test needs an x86_64 Linux host");
        return;
    }
    if !is_root() {
        eprintln!("skipping: chroot test needs root");
        return;
    }
    if !have_gcc() {
        return;
    }
    let (libc, ldso) = (
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    );
    if !Path::new(libc).exists() || !Path::new(ldso).exists() {
        eprintln!("skipping: host glibc not at {libc} / {ldso}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root: PathBuf = tmp.path().join("root");
    let libdir = root.join("opt/pare-x/lib");
    fs::create_dir_all(&libdir).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    copy_into_root(&root, libc, libc);
    copy_into_root(&root, ldso, ldso);

    let lib_c = tmp.path().join("px.c");
    fs::write(&lib_c, "int px(void) { return 42; }\n").unwrap();
    let lib = libdir.join("libpx.so.1");
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libpx.so.1", "-o"])
        .arg(&lib)
        .arg(&lib_c));
    let main_c = tmp.path().join("main.c");
    fs::write(
        &main_c,
        "#include <stdio.h>\nint px(void);\nint main(void) { printf(\"px=%d\\n\", px()); return px() == 42 ? 0 : 1; }\n",
    )
    .unwrap();
    // Linking against the file records DT_NEEDED libpx.so.1, no rpath.
    run(Command::new("gcc")
        .arg("-o")
        .arg(root.join("exe"))
        .arg(&main_c)
        .arg(&lib));

    let Some(chroot) = ["/usr/sbin/chroot", "/sbin/chroot", "/usr/bin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipping: no chroot(8) binary");
        return;
    };
    // A clean environment: no LD_LIBRARY_PATH from cargo leaks in.
    let chroot_exe = || {
        Command::new(chroot)
            .arg(&root)
            .arg("/exe")
            .env_clear()
            .output()
            .expect("spawn chroot")
    };

    // Without a cache ld.so cannot find /opt/pare-x/lib.
    let out = chroot_exe();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("cannot change root directory") {
        eprintln!("skipping: chroot not permitted here: {stderr}");
        return;
    }
    assert!(!out.status.success(), "ran without a cache?");
    assert!(
        stderr.contains("libpx.so.1"),
        "unexpected failure: {stderr}"
    );

    // With our cache it runs.
    // Decoys around the real entry so ld.so's binary search has to rely
    // on the sort order to land on it.
    let mut entries: Vec<CacheEntry> = (0..40)
        .flat_map(|i| {
            [
                entry(
                    &format!("libpx.so.{}", i + 2),
                    &format!("/nonexistent/a{i}"),
                ),
                entry(&format!("libp{i}.so.1"), &format!("/nonexistent/b{i}")),
                entry(&format!("libpy.so.{i}"), &format!("/nonexistent/c{i}")),
            ]
        })
        .collect();
    entries.insert(17, entry("libpx.so.1", "/opt/pare-x/lib/libpx.so.1"));
    let cache = build_cache(&entries, CacheArch::X86_64);
    fs::write(root.join("etc/ld.so.cache"), cache).unwrap();
    let out = chroot_exe();
    assert!(
        out.status.success(),
        "exe failed with our cache: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "px=42\n");
}
