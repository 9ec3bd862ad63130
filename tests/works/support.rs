//! Building blocks of the cases: the base and an app layer over it, image configs, programs
//! compiled or packed on this host, a TLS server with its own CA.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::*;

/// Root and the base, or why the test cannot run (printed as SKIP; a failure in CI).
pub(crate) fn setup() -> Option<&'static BaseImage> {
    if !root_or_skip("the cases need chroot and namespaces") {
        return None;
    }
    if find_tool("strace").is_none() {
        skip("strace is not installed (scripts/test.sh installs it)");
        return None;
    }
    or_skip(bookworm_base())
}

/// An app layer: `packages` over the base, then `f` adds files.
pub(crate) fn app_layer(
    base: &BaseImage,
    packages: &[&str],
    f: impl FnOnce(DebianRootBuilder) -> DebianRootBuilder,
) -> Option<PreparedLayer> {
    let root = f(or_skip(app_root_builder(base, packages))?).build();
    Some(root.layer(&format!("apt-get install {}", packages.join(" "))))
}

pub(crate) fn spec(entrypoint: &[&str], cmd: &[&str]) -> ImageSpec {
    let mut s = ImageSpec::new(Vec::new()).with_entrypoint(entrypoint);
    if !cmd.is_empty() {
        s = s.with_cmd(cmd);
    }
    s
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Compile `source` (C) with `compiler` and `flags` into a temporary file.
pub(crate) fn compile_c(
    compiler: &str,
    source: &str,
    flags: &[&str],
) -> Result<(tempfile::TempDir, PathBuf), String> {
    let cc = find_tool(compiler).ok_or_else(|| format!("{compiler} is not installed"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = dir.path().join("prog.c");
    fs::write(&src, source).map_err(|e| e.to_string())?;
    let out = dir.path().join("prog");
    let o = run_capture(
        Command::new(cc)
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .args(flags),
    );
    if !o.status.success() {
        return Err(format!("{compiler} failed:\n{}", describe_output(&o)));
    }
    Ok((dir, out))
}

pub(crate) fn compiled(
    compiler: &str,
    source: &str,
    flags: &[&str],
) -> Option<(tempfile::TempDir, PathBuf)> {
    or_skip(compile_c(compiler, source, flags))
}

/// `App.java` compiled with the host's javac and packed with its jar into an executable jar.
pub(crate) fn build_jar() -> Result<(tempfile::TempDir, PathBuf), String> {
    let javac = find_tool("javac").ok_or("javac is not installed (default-jdk-headless)")?;
    let jar = find_tool("jar").ok_or("jar is not installed (default-jdk-headless)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    fs::write(
        dir.path().join("App.java"),
        r#"import java.util.List;
import java.util.stream.Collectors;

public class App {
    public static void main(String[] args) {
        String sorted = List.of(3, 1, 2).stream().sorted().map(String::valueOf)
            .collect(Collectors.joining(","));
        System.out.println("java ok " + sorted + " " + java.time.LocalDate.of(2024, 2, 29).plusDays(1));
    }
}
"#,
    )
    .map_err(|e| e.to_string())?;
    let o = run_capture(
        Command::new(javac)
            .args(["--release", "17", "-d", "classes", "App.java"])
            .current_dir(dir.path()),
    );
    if !o.status.success() {
        return Err(format!("javac failed:\n{}", describe_output(&o)));
    }
    let o = run_capture(
        Command::new(jar)
            .args([
                "--create",
                "--file",
                "app.jar",
                "--main-class",
                "App",
                "-C",
                "classes",
                ".",
            ])
            .current_dir(dir.path()),
    );
    if !o.status.success() {
        return Err(format!("jar failed:\n{}", describe_output(&o)));
    }
    let path = dir.path().join("app.jar");
    Ok((dir, path))
}

/// `openssl s_server -WWW` on 127.0.0.1, serving `index.html`, with a server certificate signed
/// by a CA made here; killed on drop.
pub(crate) struct TlsServer {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) ca: Vec<u8>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn tls_server(body: &str) -> Result<TlsServer, String> {
    let openssl = find_tool("openssl").ok_or("openssl is not installed")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let ossl = |args: &[&str]| -> Result<(), String> {
        let o = run_capture(Command::new(&openssl).args(args).current_dir(d));
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("openssl {args:?}:\n{}", describe_output(&o)))
        }
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=pare test CA",
    ])?;
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    ossl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    let www = d.join("www");
    fs::create_dir(&www).map_err(|e| e.to_string())?;
    fs::write(www.join("index.html"), body).map_err(|e| e.to_string())?;
    let port = free_port();
    let child = Command::new(&openssl)
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(d.join("srv.crt"))
        .arg("-key")
        .arg(d.join("srv.key"))
        .current_dir(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start openssl s_server: {e}"))?;
    let ca = fs::read(d.join("ca.crt")).map_err(|e| e.to_string())?;
    let server = TlsServer {
        child,
        port,
        ca,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("openssl s_server did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}
