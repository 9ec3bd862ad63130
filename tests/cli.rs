//! The command line's finish: shell completions and man pages name every subcommand, every
//! subcommand's `--help` has examples, `pare --help` carries the exit-code table, and `just
//! image` (pare's own image, hardened by pare) gives a `pare --version` that runs as 65532.

mod common;

use common::*;

/// The user-facing subcommands (`__sandbox` is internal).
const SUBCOMMANDS: &[&str] = &[
    "harden",
    "trace",
    "check",
    "inspect",
    "batch",
    "probe",
    "keygen",
    "signature",
    "completions",
    "man",
];

#[test]
fn completions_and_man_pages_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = pare_ok(&["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(text.contains("--verify-key") && text.contains("--sign-key"));
        assert!(
            !text.contains("__sandbox"),
            "{shell}: the internal helper is listed"
        );
    }
    let out = pare_ok(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH pare"),
        "{page:.200}"
    );
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "pare(1) lacks {sub}");
    }
    assert!(page.contains("Exit codes"), "pare(1) lacks the exit codes");
    let dir = tempfile::tempdir().unwrap();
    pare_ok(&["man", "--dir", dir.path().to_str().unwrap()]);
    for sub in SUBCOMMANDS {
        let p = dir.path().join(format!("pare-{sub}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(text.contains(".TH"), "{}", p.display());
    }
    assert!(dir.path().join("pare-signature-verify.1").is_file());
    // `man` itself reads the page, where it is installed.
    if let Some(man) = find_tool("man") {
        let out = std::process::Command::new(man)
            .arg("-l")
            .arg(dir.path().join("pare-harden.1"))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("--sign-key"));
        }
    }
}

#[test]
fn help_has_examples_and_the_exit_codes() {
    let out = pare_ok(&["--help"]);
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(top.contains("Exit codes:"), "{top}");
    for line in ["check", "batch", "probe", "signature verify"] {
        assert!(top.contains(line), "exit codes of {line}: {top}");
    }
    for sub in SUBCOMMANDS
        .iter()
        .map(|s| vec![*s])
        .chain(std::iter::once(vec!["signature", "verify"]))
    {
        if sub == ["signature"] {
            continue;
        }
        let mut args = sub.clone();
        args.push("--help");
        let out = pare_ok(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{sub:?} --help has no examples");
        assert!(!text.contains('\u{1b}'), "colour in {sub:?} --help");
    }
    // NO_COLOR: no ANSI escapes in the logs either.
    let out = pare()
        .args(["-v", "trace", "oci:/nonexistent:x"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}

/// `just image`'s recipe, with the test build of pare (its debug info stripped): the hardened
/// image's `pare --version` runs under `chroot --userspec=65532:65532`.
#[test]
fn pares_own_image_runs_as_65532() {
    if !root_or_skip("chroot needs it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("pare");
    std::fs::copy(env!("CARGO_BIN_EXE_pare"), &bin).unwrap();
    let strip = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg(&bin)
        .output();
    if !strip.is_ok_and(|o| o.status.success()) {
        eprintln!("note: strip failed; the image carries the debug info");
    }
    let layout = dir.path().join("image");
    // The recipe itself (examples/image.rs, built by `cargo test --all-targets`), else the
    // same steps: the source layout from pare_image_spec, hardened by pare.
    let example = std::path::Path::new(env!("CARGO_BIN_EXE_pare"))
        .with_file_name("examples")
        .join("image");
    let src = format!("oci:{}:pare", layout.display());
    let dest = format!("oci:{}:pare-hardened", layout.display());
    if example.is_file() {
        let out = std::process::Command::new(&example)
            .arg(&bin)
            .arg(&layout)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe_output(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dest);
    } else {
        eprintln!(
            "note: {} is not built; running its steps",
            example.display()
        );
        write_oci_layout(&layout, "pare", &pare_image_spec(&bin));
        pare_ok(&["-q", "harden", &src, &dest]);
    }
    assert!(skopeo_inspect_exists(&src, None));
    let u = pull_and_unpack(&dest);
    let out = run_chroot(&u.rootfs(), &[PARE_IN_IMAGE, "--version"], &[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pare "),
        "{}",
        describe_output(&out)
    );
    assert_eq!(u.exec_config()["User"], "65532:65532");
    // It holds no shell, and keeps the CA bundle pare needs to talk TLS.
    assert!(!u.rootfs().join("bin/sh").exists() && !u.rootfs().join("usr/bin/busybox").exists());
    assert!(
        u.rootfs()
            .join("etc/ssl/certs/ca-certificates.crt")
            .exists()
    );
}
