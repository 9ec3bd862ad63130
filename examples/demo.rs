//! `cargo run --release --example demo`: builds a Debian-like image from this machine's own
//! programs as an OCI layout (a base layer with a shell, coreutils and setuid programs, and an
//! app layer), hardens it with pare into the same layout, and shows what came out. No registry
//! and no Docker needed.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};

use common::{ImageSpec, Layer, write_oci_layout};
use pare::harden::{HardenOptions, harden};
use pare::progress::Progress;
use pare::reference::ImageRef;

/// Programs most Debian/Ubuntu machines have; the demo uses those that exist here.
const BASE_PROGRAMS: &[&str] = &[
    "/usr/bin/bash",
    "/usr/bin/dash",
    "/usr/bin/ls",
    "/usr/bin/cat",
    "/usr/bin/cp",
    "/usr/bin/mv",
    "/usr/bin/rm",
    "/usr/bin/chmod",
    "/usr/bin/grep",
    "/usr/bin/sed",
    "/usr/bin/tar",
    "/usr/bin/gzip",
    "/usr/bin/find",
    "/usr/bin/id",
    "/usr/bin/env",
];
const SETUID: &[&str] = &[
    "/usr/bin/passwd",
    "/usr/bin/su",
    "/usr/bin/mount",
    "/usr/bin/umount",
    "/usr/bin/newgrp",
];
const SETGID: &[&str] = &["/usr/bin/chage", "/usr/bin/expiry"];

fn main() -> anyhow::Result<()> {
    // pare's probe sandbox re-executes the running program as its helper.
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "__sandbox" {
        pare::probe::sandbox::helper_main(Path::new(&args[2]));
    }
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/demo".into()),
    );
    let layout = out.join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(&out)?;

    let mut base = Layer::new().created_by("demo: debian-like base");
    for (l, t) in [
        ("/bin", "usr/bin"),
        ("/sbin", "usr/sbin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
    ] {
        base = base.symlink(l, t);
    }
    base = base.dir("/tmp", 0o1777).dir("/root", 0o700);
    for p in BASE_PROGRAMS.iter().filter(|p| Path::new(p).exists()) {
        base = base.host_closure(p);
    }
    if Path::new("/usr/bin/dash").exists() {
        base = base.symlink("/usr/bin/sh", "dash");
    }
    for (list, mode) in [(SETUID, 0o4755), (SETGID, 0o2755)] {
        for p in list.iter().filter(|p| Path::new(p).exists()) {
            base = base.host_closure(p).file_from_host(p, p, Some(mode));
        }
    }
    for f in [
        "/etc/nsswitch.conf",
        "/etc/ld.so.conf",
        "/usr/lib/os-release",
    ] {
        if Path::new(f).exists() {
            base = base.file_from_host(f, f, Some(0o644));
        }
    }
    base = base
        .symlink("/etc/os-release", "../usr/lib/os-release")
        .file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644)
        .file("/etc/group", "root:x:0:\n", 0o644);

    // The "application": the machine's `ls`, listing the image root when it runs.
    let app = Layer::new()
        .created_by("demo: app")
        .host_closure("/usr/bin/ls")
        .dir("/srv/app", 0o755)
        .file("/srv/app/README", "the demo application\n", 0o644);
    let spec = ImageSpec::new(vec![base, app])
        .with_entrypoint(&["/usr/bin/ls"])
        .with_cmd(&["-l", "/"])
        .with_workdir("/srv/app")
        .with_label("org.opencontainers.image.title", "pare demo");
    write_oci_layout(&layout, "app", &spec);
    println!(
        "built oci:{}:app from this machine's programs",
        layout.display()
    );

    let src: ImageRef = format!("oci:{}:app", layout.display()).parse()?;
    let rt = tokio::runtime::Runtime::new()?;
    let done = rt.block_on(harden(
        &src,
        None,
        &HardenOptions::default(),
        &Progress::stderr(false),
    ))?;
    let report = done
        .single()
        .expect("the demo image is single-platform")
        .clone();
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;

    println!("\n{}\n", report.summary());
    println!(
        "entrypoint {:?}, user {}:{}",
        report.argv, report.user.uid, report.user.gid
    );
    println!(
        "\nsetuid/setgid in the source: {}",
        SETUID
            .iter()
            .chain(SETGID)
            .filter(|p| Path::new(p).exists())
            .count()
    );
    println!("\nkept in {} (why):", report.destination.reference);
    for f in report.files.iter().filter(|f| f.kind != "dir") {
        println!("  {:<58} {}", f.path, f.reason);
    }
    // Prove it works: the hardened entrypoint, run in pare's rootless sandbox.
    let dest: ImageRef = report.destination.reference.parse()?;
    let probed = rt.block_on(pare::harden::probe_image(
        &dest,
        None,
        &[],
        None,
        &pare::probe::Limits::default(),
        &Default::default(),
        &Progress::stderr(true),
    ));
    match probed {
        Ok(p) => {
            println!("\npare probe {} (its own Cmd, in a sandbox):", dest);
            for r in &p.probes {
                for l in String::from_utf8_lossy(&r.outcome.stdout).lines().take(8) {
                    println!("  | {l}");
                }
            }
            print!(
                "{}",
                p.text()
                    .lines()
                    .last()
                    .map(|l| format!("{l}\n"))
                    .unwrap_or_default()
            );
        }
        Err(e) => println!("\npare probe could not run here: {e}"),
    }
    println!("\nfull report: {}", out.join("report.json").display());
    println!(
        "inspect it: skopeo inspect oci:{}:app-hardened",
        layout.display()
    );
    Ok(())
}
