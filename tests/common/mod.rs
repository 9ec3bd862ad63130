#![allow(dead_code)]
//! Shared integration-test harness for `pare`.
//!
//! Everything here is deliberately independent of pare's own library code: images are built
//! with `tar`/`flate2` by hand, pushed and pulled with `skopeo`, unpacked with `umoci`, served by
//! the CNCF distribution registry (`docker-registry`), and shared-library closures are computed
//! with the host's `ldd`. That way the tests verify pare against third-party implementations
//! instead of against itself.
//!
//! Use it from a test file with `mod common;` and `use common::*;`.

pub mod debian;
pub mod faults;
pub mod scan;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ------------------------------------------------------------------------------------------------
// Constants
// ------------------------------------------------------------------------------------------------

/// Default `PATH` put into image configs (same as Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Numeric uid/gid pare is expected to run images as (the distroless "nonroot" convention).
pub const NONROOT_UID: u32 = 65532;
/// Fixed mtime written into every generated tar entry (2023-11-14T22:13:20Z).
pub const FIXED_MTIME: u64 = 1_700_000_000;
/// `created` timestamp written into generated image configs.
pub const CREATED: &str = "2023-11-14T22:13:20Z";

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Annotation carrying the tag in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Host tools the harness drives.
pub const REGISTRY_BIN: &str = "docker-registry";
pub const SKOPEO_BIN: &str = "skopeo";
pub const UMOCI_BIN: &str = "umoci";
pub const HTPASSWD_BIN: &str = "htpasswd";

/// Host binaries used as image content.
pub const HOST_BUSYBOX: &str = "/bin/busybox";
pub const HOST_JQ: &str = "/usr/bin/jq";
pub const HOST_PASSWD: &str = "/usr/bin/passwd";
pub const HOST_SU: &str = "/usr/bin/su";
pub const HOST_TRUE: &str = "/usr/bin/true";

/// Contents of [`usrmerge_base_layer`] (image paths, absolute).
///
/// Top-level usrmerge symlinks `(link, target)`.
pub const USRMERGE_LINKS: [(&str, &str); 4] = [
    ("/bin", "usr/bin"),
    ("/sbin", "usr/sbin"),
    ("/lib", "usr/lib"),
    ("/lib64", "usr/lib64"),
];
/// Static busybox (copied from [`HOST_BUSYBOX`]).
pub const BASE_BUSYBOX: &str = "/usr/bin/busybox";
/// Applet symlinks `/usr/bin/<name> -> busybox`; `/bin/sh` therefore resolves to busybox.
pub const BASE_BUSYBOX_APPLETS: [&str; 4] = ["sh", "ls", "cat", "wget"];
/// Setuid-root programs (mode 0o4755; copies of the host's passwd and su).
pub const BASE_SETUID_FILES: [&str; 2] = ["/usr/bin/passwd", "/usr/bin/su"];
/// Setgid program (mode 0o2755; a copy of the host's `true`).
pub const BASE_SETGID_FILES: [&str; 1] = ["/usr/bin/chage"];
/// A file that only exists in the base layer; tests white it out in an upper layer.
pub const BASE_ONLY_FILE: &str = "/etc/base-only.txt";
pub const BASE_ONLY_CONTENT: &str = "only in the base layer\n";
/// A directory tests make opaque in an upper layer, and the files the base puts in it.
pub const BASE_OPAQUE_DIR: &str = "/opt/data";
pub const BASE_OPAQUE_DIR_FILES: [&str; 2] = ["/opt/data/a.txt", "/opt/data/b.txt"];
pub const BASE_ETC_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
pub const BASE_ETC_GROUP: &str = "root:x:0:\n";
pub const BASE_LD_SO_CONF: &str = "include /etc/ld.so.conf.d/*.conf\n";
pub const BASE_LD_SO_CONF_D_FILE: &str = "/etc/ld.so.conf.d/x86_64-linux-gnu.conf";
pub const BASE_LD_SO_CONF_D_CONTENT: &str = "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n";
/// `/etc/os-release -> ../usr/lib/os-release` (the file is copied from the host).
pub const BASE_OS_RELEASE_LINK: (&str, &str) = ("/etc/os-release", "../usr/lib/os-release");

// ------------------------------------------------------------------------------------------------
// Small process / hashing helpers
// ------------------------------------------------------------------------------------------------

/// `"sha256:<hex>"` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Locate `name` on `PATH` (plus the sbin directories, which root's PATH may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Like [`find_tool`], but panics with installation advice when the tool is missing.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "integration-test tool `{name}` not found on PATH. Install the test prerequisites \
             (run `just test`, or `apt-get install docker-registry skopeo umoci busybox-static \
             apache2-utils jq`)"
        )
    })
}

/// Human-readable summary of a finished process, for assertion messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Run `cmd` to completion, capturing output. Panics only if it cannot be spawned.
pub fn run_capture(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"))
}

/// Run `cmd`, panicking with its full output unless it exits successfully.
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = run_capture(cmd);
    assert!(
        output.status.success(),
        "command failed: {cmd:?}\n{}",
        describe_output(&output)
    );
    output
}

/// Whether the test process runs with effective uid 0 (read from `/proc/self/status`).
pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .map(|euid| euid == "0")
        .expect("no Uid: line in /proc/self/status")
}

/// The `pare` binary under test, as a ready-to-configure [`Command`].
pub fn pare() -> Command {
    // `option_env!` rather than `env!` so the harness still compiles while the binary target
    // does not exist yet.
    let Some(bin) = option_env!("CARGO_BIN_EXE_pare") else {
        panic!("CARGO_BIN_EXE_pare is not set: the `pare` binary target (src/main.rs) is missing");
    };
    Command::new(bin)
}

fn basic_auth(user: &str, pass: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{pass}");
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Registry
// ------------------------------------------------------------------------------------------------

/// A throw-away CNCF distribution registry on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    creds: Option<(String, String)>,
    /// The token server of a token-auth registry, and its key and certificate.
    token_server: Option<(Child, TempDir)>,
}

/// A raw HTTP response from [`Registry::get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// Minimal HTTP/1.0 GET (the server closes the connection after the response).
fn http_get(
    port: u16,
    path: &str,
    creds: Option<(&str, &str)>,
    accept: Option<&str>,
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some((user, pass)) = creds {
        let _ = write!(
            request,
            "Authorization: Basic {}\r\n",
            basic_auth(user, pass)
        );
    }
    if let Some(accept) = accept {
        let _ = write!(request, "Accept: {accept}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad HTTP status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

impl Registry {
    /// Start an anonymous registry.
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// Start a registry requiring HTTP basic auth (htpasswd/bcrypt) for every request.
    pub fn start_with_auth(user: &str, pass: &str) -> Registry {
        Self::launch(Some((user.to_string(), pass.to_string())))
    }

    /// Start a registry with token auth (as Docker Hub, GHCR, Harbor and GitLab do): every
    /// request needs a Bearer JWT from a token server (tests/common/token_server.py, Python
    /// with `cryptography`) started beside it. `user:pass` may do anything, including
    /// `registry:catalog:*`; anonymous clients may only pull repositories under `public/`.
    /// The raw [`Registry::get`] helpers (Basic auth) do not work on it: use skopeo.
    pub fn start_with_token_auth(user: &str, pass: &str) -> Registry {
        let tdir = tempfile::Builder::new()
            .prefix("pare-token-")
            .tempdir()
            .expect("create token server tempdir");
        let script = tdir.path().join("token_server.py");
        fs::write(&script, include_str!("token_server.py")).expect("write token server");
        let tport = free_port();
        let mut server = Command::new("python3")
            .arg(&script)
            .arg(tdir.path())
            .arg(tport.to_string())
            .args(["pare-registry", "pare-token-issuer", user, pass])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the token server (python3)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.try_wait().expect("token server status") {
                panic!("the token server exited with {status} (python3-cryptography missing?)");
            }
            if http_get(tport, "/ready", None, None).is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "the token server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let token = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: pare-registry\n    \
             issuer: pare-token-issuer\n    rootcertbundle: {}\n",
            tdir.path().join("token.crt").display()
        );
        let mut reg = Self::launch_with(Some((user.to_string(), pass.to_string())), Some(token));
        reg.token_server = Some((server, tdir));
        reg
    }

    fn launch(creds: Option<(String, String)>) -> Registry {
        let auth = creds.as_ref().map(|_| String::new());
        Self::launch_with(creds, auth)
    }

    /// `auth`: the config's `auth:` section; empty for htpasswd with `creds`.
    fn launch_with(creds: Option<(String, String)>, auth: Option<String>) -> Registry {
        let binary = require_tool(REGISTRY_BIN);
        let mut failures = Vec::new();
        // The free port can be stolen between probing and the registry binding it; retry.
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("pare-registry-")
                .tempdir()
                .expect("create registry tempdir");
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(&config, Self::config_yml(dir.path(), port, auth.as_deref()))
                .expect("write registry config.yml");
            if let (Some((user, pass)), Some("")) = (&creds, auth.as_deref()) {
                let out =
                    run_ok(Command::new(require_tool(HTPASSWD_BIN)).args(["-Bbn", user, pass]));
                fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd file");
            }
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).expect("create registry log");
            let mut child = Self::spawn(&binary, dir.path(), log);

            match Self::wait_ready(&mut child, port, Duration::from_secs(10)) {
                Ok(()) => {
                    return Registry {
                        child,
                        port,
                        dir,
                        creds,
                        token_server: None,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    let retry = log.contains("address already in use");
                    failures.push(format!("port {port}: {why}\n{log}"));
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!(
            "docker-registry did not come up:\n{}",
            failures.join("\n---\n")
        );
    }

    /// `docker-registry serve DIR/config.yml`, logging to `log`.
    fn spawn(binary: &Path, dir: &Path, log: fs::File) -> Child {
        Command::new(binary)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .current_dir(dir)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup registry log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", binary.display()))
    }

    fn config_yml(dir: &Path, port: u16, auth: Option<&str>) -> String {
        let mut yml = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: pare-integration-tests\n",
            storage = dir.join("storage").display(),
        );
        match auth {
            Some("") => {
                let _ = write!(
                    yml,
                    "auth:\n  htpasswd:\n    realm: pare-test-registry\n    path: {}\n",
                    dir.join("htpasswd").display()
                );
            }
            Some(section) => yml.push_str(section),
            None => {}
        }
        yml
    }

    fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("registry exited early with {status}"));
            }
            if let Ok(resp) = http_get(port, "/v2/", None, None)
                && (resp.status == 200 || resp.status == 401)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on /v2/ within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the registry (its storage stays): clients now see connection refused.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start the stopped registry again, on the same port with the same storage.
    pub fn restart(&mut self) {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("open registry log");
        self.child = Self::spawn(&require_tool(REGISTRY_BIN), self.dir.path(), log);
        Self::wait_ready(&mut self.child, self.port, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("registry restart: {e}\n{}", self.log()));
    }

    /// `"127.0.0.1:PORT"`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:PORT/<name>"`, e.g. `reg.image("team/jq:1")`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// `"docker://127.0.0.1:PORT/<name>"` (a skopeo reference).
    pub fn docker_ref(&self, name: &str) -> String {
        format!("docker://{}", self.image(name))
    }

    /// The credentials of an auth registry.
    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's storage root on disk.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Raw GET against the registry API (authenticating with the registry's credentials if any).
    /// `accept` is sent as the `Accept` header.
    pub fn get(&self, path: &str, accept: Option<&str>) -> HttpResponse {
        http_get(self.port, path, self.creds(), accept)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.host()))
    }

    /// Tags of `repo` according to `/v2/<repo>/tags/list` (empty if the repository is unknown).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let resp = self.get(&format!("/v2/{repo}/tags/list"), None);
        if resp.status == 404 {
            return Vec::new();
        }
        assert_eq!(resp.status, 200, "tags/list for {repo}: {}", resp.text());
        let mut tags: Vec<String> = resp.json()["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((t, _)) = &mut self.token_server {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Layers
// ------------------------------------------------------------------------------------------------

/// One tar entry of a [`Layer`]. Paths are normalised image paths without a leading slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. }
            | Entry::Dir { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Hardlink { path, .. } => path,
        }
    }
}

/// Layer blob compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
            Compression::None => MEDIA_TYPE_LAYER_TAR,
        }
    }
}

/// Normalise an image path: strip leading `/`, `.` and empty components; reject `..`.
pub fn image_rel(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    assert!(
        !parts.contains(&".."),
        "image path {path:?} must not contain `..`"
    );
    assert!(!parts.is_empty(), "image path {path:?} names the root");
    parts.join("/")
}

/// A filesystem layer, built up entry by entry.
///
/// When serialised, all entries are owned by 0:0 with mtime [`FIXED_MTIME`]; missing parent
/// directories are added with mode 0755; entries are sorted so parents precede children (hard
/// links come last so their targets already exist). Adding a path twice keeps the last one.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
    /// `created_by` of this layer's history entry.
    pub created_by: Option<String>,
    /// If set, used verbatim as the uncompressed layer tar instead of `entries`.
    pub raw_tar: Option<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    /// A layer whose uncompressed tar is exactly `tar` (escape hatch for odd archives).
    pub fn from_tar(tar: Vec<u8>) -> Layer {
        Layer {
            raw_tar: Some(tar),
            ..Layer::default()
        }
    }

    pub fn compression(mut self, compression: Compression) -> Layer {
        self.compression = compression;
        self
    }

    pub fn created_by(mut self, created_by: &str) -> Layer {
        self.created_by = Some(created_by.to_string());
        self
    }

    pub fn entry(mut self, entry: Entry) -> Layer {
        self.entries.push(entry);
        self
    }

    /// A regular file with the given bytes and permission bits (e.g. `0o4755`).
    pub fn file(self, image_path: &str, data: impl AsRef<[u8]>, mode: u32) -> Layer {
        self.entry(Entry::File {
            path: image_rel(image_path),
            data: data.as_ref().to_vec(),
            mode,
        })
    }

    /// A regular file with the contents of `host_path` (symlinks followed); `mode` defaults to
    /// the host file's permission bits.
    pub fn file_from_host(
        self,
        host_path: impl AsRef<Path>,
        image_path: &str,
        mode: Option<u32>,
    ) -> Layer {
        let host_path = host_path.as_ref();
        let data = fs::read(host_path)
            .unwrap_or_else(|e| panic!("read host file {}: {e}", host_path.display()));
        let mode = mode.unwrap_or_else(|| {
            fs::metadata(host_path)
                .unwrap_or_else(|e| panic!("stat host file {}: {e}", host_path.display()))
                .permissions()
                .mode()
                & 0o7777
        });
        self.file(image_path, data, mode)
    }

    pub fn dir(self, image_path: &str, mode: u32) -> Layer {
        self.entry(Entry::Dir {
            path: image_rel(image_path),
            mode,
        })
    }

    /// A symlink; `target` is stored verbatim (relative or absolute).
    pub fn symlink(self, image_path: &str, target: &str) -> Layer {
        self.entry(Entry::Symlink {
            path: image_rel(image_path),
            target: target.to_string(),
        })
    }

    /// A hard link to another path of the image (stored as an archive path).
    pub fn hardlink(self, image_path: &str, target: &str) -> Layer {
        self.entry(Entry::Hardlink {
            path: image_rel(image_path),
            target: image_rel(target),
        })
    }

    /// Delete `image_path` from lower layers (`dir/.wh.name`).
    pub fn whiteout(self, image_path: &str) -> Layer {
        let rel = image_rel(image_path);
        let (dir, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name.to_string()),
            None => (String::new(), rel.clone()),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// Hide everything lower layers put in `dir_path` (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir_path: &str) -> Layer {
        let rel = image_rel(dir_path);
        self.file(&format!("{rel}/.wh..wh..opq"), b"", 0o644)
    }

    /// Add a host path the way the host resolves it: every symlink met while resolving it
    /// (including symlinked directories such as `/lib -> usr/lib`) is added as a symlink with
    /// its literal target, and the final regular file at its canonical location.
    pub fn host_path_with_links(mut self, host_path: impl AsRef<Path>) -> Layer {
        for entry in host_path_chain(host_path.as_ref()) {
            self = self.closure_entry(entry);
        }
        self
    }

    /// Add `binary`, its `PT_INTERP` and all shared libraries `ldd` reports, each with its
    /// host symlink chain (see [`host_closure`]).
    pub fn host_closure(mut self, binary: impl AsRef<Path>) -> Layer {
        for entry in host_closure(binary.as_ref()) {
            self = self.closure_entry(entry);
        }
        self
    }

    fn closure_entry(self, entry: ClosureEntry) -> Layer {
        match entry {
            ClosureEntry::File {
                host,
                image_path,
                mode,
            } => self.file_from_host(host, &image_path, Some(mode)),
            ClosureEntry::Symlink { image_path, target } => self.symlink(&image_path, &target),
        }
    }

    /// The final, ordered entry list (deduplicated, parents added, hard links last).
    pub fn resolved_entries(&self) -> Vec<Entry> {
        let mut by_path: BTreeMap<PathBuf, Entry> = BTreeMap::new();
        for entry in &self.entries {
            by_path.insert(PathBuf::from(entry.path()), entry.clone());
        }
        let paths: Vec<PathBuf> = by_path.keys().cloned().collect();
        for path in paths {
            for ancestor in path.ancestors().skip(1) {
                if ancestor.as_os_str().is_empty() {
                    break;
                }
                by_path
                    .entry(ancestor.to_path_buf())
                    .or_insert_with(|| Entry::Dir {
                        path: ancestor.to_string_lossy().into_owned(),
                        mode: 0o755,
                    });
            }
        }
        let (hardlinks, mut others): (Vec<Entry>, Vec<Entry>) = by_path
            .into_values()
            .partition(|e| matches!(e, Entry::Hardlink { .. }));
        others.extend(hardlinks);
        others
    }

    /// The uncompressed layer tar.
    pub fn tar_bytes(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw_tar {
            return raw.clone();
        }
        let mut builder = tar::Builder::new(Vec::new());
        for entry in self.resolved_entries() {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(FIXED_MTIME);
            header.set_size(0);
            let result = match &entry {
                Entry::File { path, data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(mode & 0o7777);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())
                }
                Entry::Dir { path, mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(mode & 0o7777);
                    builder.append_data(&mut header, format!("{path}/"), io::empty())
                }
                Entry::Symlink { path, target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    builder.append_link(&mut header, path, target)
                }
                Entry::Hardlink { path, target } => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_mode(0o644);
                    builder.append_link(&mut header, path, target)
                }
            };
            result.unwrap_or_else(|e| panic!("write tar entry {entry:?}: {e}"));
        }
        builder.into_inner().expect("finish layer tar")
    }

    /// `(blob, media type, diff_id)` of this layer.
    pub fn blob(&self) -> (Vec<u8>, &'static str, String) {
        let tar = self.tar_bytes();
        let diff_id = sha256_digest(&tar);
        let blob = match self.compression {
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&tar).expect("gzip layer");
                enc.finish().expect("finish gzip layer")
            }
            Compression::Zstd => ruzstd::encoding::compress_to_vec(
                tar.as_slice(),
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            Compression::None => tar,
        };
        (blob, self.compression.media_type(), diff_id)
    }
}

/// The smallest image that runs jq: one layer with jq's real closure, entrypoint `/usr/bin/jq`.
pub fn jq_only_image() -> ImageSpec {
    ImageSpec::new(vec![Layer::new().host_closure(HOST_JQ)]).with_entrypoint(&["/usr/bin/jq"])
}

/// The acceptance app layer on top of [`usrmerge_base_layer`]: jq's real closure, a whiteout of
/// [`BASE_ONLY_FILE`], and [`BASE_OPAQUE_DIR`] made opaque with a new file `c.txt`.
pub fn jq_app_layer() -> Layer {
    Layer::new()
        .created_by("pare-test: jq app layer")
        .host_closure(HOST_JQ)
        .whiteout(BASE_ONLY_FILE)
        .opaque(BASE_OPAQUE_DIR)
        .file("/opt/data/c.txt", "c\n", 0o644)
}

/// A Debian-like usrmerged base layer; see the `BASE_*` and [`USRMERGE_LINKS`] constants for
/// what it contains.
pub fn usrmerge_base_layer() -> Layer {
    let mut layer = Layer::new().created_by("pare-test: debian-like usrmerge base");
    for dir in [
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/local",
        "/usr/local/bin",
        "/etc",
        "/etc/ld.so.conf.d",
        "/var",
        "/home",
        "/opt",
        "/opt/data",
    ] {
        layer = layer.dir(dir, 0o755);
    }
    layer = layer
        .dir("/root", 0o700)
        .dir("/tmp", 0o1777)
        .dir("/var/tmp", 0o1777);
    for (link, target) in USRMERGE_LINKS {
        layer = layer.symlink(link, target);
    }
    layer = layer.file_from_host(HOST_BUSYBOX, BASE_BUSYBOX, Some(0o755));
    for applet in BASE_BUSYBOX_APPLETS {
        layer = layer.symlink(&format!("/usr/bin/{applet}"), "busybox");
    }
    for (host, image) in [HOST_PASSWD, HOST_SU].into_iter().zip(BASE_SETUID_FILES) {
        let host = if Path::new(host).is_file() {
            host
        } else {
            HOST_BUSYBOX
        };
        layer = layer.file_from_host(host, image, Some(0o4755));
    }
    for image in BASE_SETGID_FILES {
        layer = layer.file_from_host(HOST_TRUE, image, Some(0o2755));
    }
    let nsswitch = fs::read("/etc/nsswitch.conf")
        .unwrap_or_else(|_| b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec());
    let os_release = fs::read("/usr/lib/os-release").unwrap_or_else(|_| {
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n".to_vec()
    });
    layer
        .file("/etc/passwd", BASE_ETC_PASSWD, 0o644)
        .file("/etc/group", BASE_ETC_GROUP, 0o644)
        .file("/etc/ld.so.conf", BASE_LD_SO_CONF, 0o644)
        .file(BASE_LD_SO_CONF_D_FILE, BASE_LD_SO_CONF_D_CONTENT, 0o644)
        .file("/etc/nsswitch.conf", nsswitch, 0o644)
        .file("/usr/lib/os-release", os_release, 0o644)
        .symlink(BASE_OS_RELEASE_LINK.0, BASE_OS_RELEASE_LINK.1)
        .file(BASE_ONLY_FILE, BASE_ONLY_CONTENT, 0o644)
        .file(BASE_OPAQUE_DIR_FILES[0], "a\n", 0o644)
        .file(BASE_OPAQUE_DIR_FILES[1], "b\n", 0o644)
}

// ------------------------------------------------------------------------------------------------
// Host closures via ldd
// ------------------------------------------------------------------------------------------------

/// One item needed to reproduce a host path inside an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClosureEntry {
    /// A regular file: copy `host` (a canonical host path) to `image_path` (no leading slash).
    File {
        host: PathBuf,
        image_path: String,
        mode: u32,
    },
    /// A symlink met while resolving, with its literal target.
    Symlink { image_path: String, target: String },
}

impl ClosureEntry {
    pub fn image_path(&self) -> &str {
        match self {
            ClosureEntry::File { image_path, .. } | ClosureEntry::Symlink { image_path, .. } => {
                image_path
            }
        }
    }
}

/// The paths `ldd` prints for `binary`: the interpreter and every shared library, exactly as
/// printed (not canonicalised), in ldd's order. Empty for static binaries. Panics on
/// "not found" libraries.
pub fn ldd_paths(binary: &Path) -> Vec<PathBuf> {
    let output = run_capture(Command::new("ldd").arg(binary));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let text = format!("{stdout}{stderr}");
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "ldd {} failed:\n{}",
            binary.display(),
            describe_output(&output)
        );
        return Vec::new();
    }
    let mut paths = Vec::new();
    for line in stdout.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        let candidate = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                assert!(
                    !rest.starts_with("not found"),
                    "ldd {}: library {} not found",
                    binary.display(),
                    name.trim()
                );
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if candidate.starts_with('/') {
            let path = PathBuf::from(candidate);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
}

/// Resolve absolute host `path` component by component like the kernel does, recording every
/// symlink met (at its location, with its literal target) and finally the regular file at its
/// canonical location.
///
/// E.g. `/lib64/ld-linux-x86-64.so.2` on usrmerged Debian yields
/// `lib64 -> usr/lib64`, `usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`,
/// `lib -> usr/lib`, and the file `usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`.
pub fn host_path_chain(path: &Path) -> Vec<ClosureEntry> {
    assert!(
        path.is_absolute(),
        "host path {} must be absolute",
        path.display()
    );
    let mut out = Vec::new();
    let mut current = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir => None,
            other => Some(other.as_os_str().to_owned()),
        })
        .collect();
    let mut hops = 0;
    let rel = |p: &Path| {
        p.strip_prefix("/")
            .expect("absolute")
            .to_string_lossy()
            .into_owned()
    };
    while let Some(component) = pending.pop_front() {
        if component == "." {
            continue;
        }
        if component == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&component);
        let meta = fs::symlink_metadata(&candidate).unwrap_or_else(|e| {
            panic!(
                "resolving {}: lstat {}: {e}",
                path.display(),
                candidate.display()
            )
        });
        if meta.file_type().is_symlink() {
            hops += 1;
            assert!(hops <= 40, "too many symlinks resolving {}", path.display());
            let target = fs::read_link(&candidate)
                .unwrap_or_else(|e| panic!("readlink {}: {e}", candidate.display()));
            let entry = ClosureEntry::Symlink {
                image_path: rel(&candidate),
                target: target.to_string_lossy().into_owned(),
            };
            if !out.contains(&entry) {
                out.push(entry);
            }
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            for c in target.components().rev() {
                if c != Component::RootDir {
                    pending.push_front(c.as_os_str().to_owned());
                }
            }
        } else if meta.is_dir() {
            current = candidate;
        } else {
            assert!(
                pending.is_empty(),
                "resolving {}: {} is not a directory",
                path.display(),
                candidate.display()
            );
            out.push(ClosureEntry::File {
                image_path: rel(&candidate),
                host: candidate,
                mode: meta.mode() & 0o7777,
            });
        }
    }
    out
}

/// Everything needed to run host `binary` in an otherwise empty image: the binary itself, its
/// `PT_INTERP` and all libraries `ldd` lists, each via [`host_path_chain`]. Deduplicated.
pub fn host_closure(binary: &Path) -> Vec<ClosureEntry> {
    let mut out: Vec<ClosureEntry> = Vec::new();
    for path in std::iter::once(binary.to_path_buf()).chain(ldd_paths(binary)) {
        for entry in host_path_chain(&path) {
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// OCI image layouts
// ------------------------------------------------------------------------------------------------

/// Everything needed to describe one image of an OCI layout.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` strings; defaults to `PATH=`[`DEFAULT_PATH`].
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// e.g. `"8080/tcp"`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Extra keys of the config's `config` object (e.g. `Healthcheck`, `StopSignal`); they
    /// override the fields above when the key collides.
    pub extra_config: Map<String, Value>,
    /// Extra top-level keys of the image config (e.g. `author`).
    pub extra_top_level: Map<String, Value>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            layers: Vec::new(),
            architecture: "amd64".to_string(),
            os: "linux".to_string(),
            variant: None,
            entrypoint: None,
            cmd: None,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            workdir: None,
            user: None,
            exposed_ports: Vec::new(),
            labels: BTreeMap::new(),
            extra_config: Map::new(),
            extra_top_level: Map::new(),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl ImageSpec {
    pub fn new(layers: Vec<Layer>) -> ImageSpec {
        ImageSpec {
            layers,
            ..ImageSpec::default()
        }
    }

    pub fn with_layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn with_entrypoint(mut self, argv: &[&str]) -> Self {
        self.entrypoint = Some(strings(argv));
        self
    }

    pub fn with_cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = Some(strings(argv));
        self
    }

    /// Set (or replace) one environment variable.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env
            .retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(key));
        self.env.push(format!("{key}={value}"));
        self
    }

    pub fn with_workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.to_string());
        self
    }

    pub fn with_user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    pub fn with_exposed_port(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.to_string());
        self
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    pub fn with_extra_config(mut self, key: &str, value: Value) -> Self {
        self.extra_config.insert(key.to_string(), value);
        self
    }

    pub fn with_platform(mut self, architecture: &str, variant: Option<&str>) -> Self {
        self.architecture = architecture.to_string();
        self.variant = variant.map(String::from);
        self
    }

    /// The `platform` object used in index descriptors.
    pub fn platform(&self) -> Value {
        let mut platform = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }

    /// The image config JSON for the given layer diff_ids.
    pub fn config_json(&self, diff_ids: &[String]) -> Value {
        let mut cfg = Map::new();
        if let Some(user) = &self.user {
            cfg.insert("User".into(), json!(user));
        }
        if !self.exposed_ports.is_empty() {
            let ports: Map<String, Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            cfg.insert("ExposedPorts".into(), Value::Object(ports));
        }
        if !self.env.is_empty() {
            cfg.insert("Env".into(), json!(self.env));
        }
        if let Some(entrypoint) = &self.entrypoint {
            cfg.insert("Entrypoint".into(), json!(entrypoint));
        }
        if let Some(cmd) = &self.cmd {
            cfg.insert("Cmd".into(), json!(cmd));
        }
        if let Some(workdir) = &self.workdir {
            cfg.insert("WorkingDir".into(), json!(workdir));
        }
        if !self.labels.is_empty() {
            cfg.insert("Labels".into(), json!(self.labels));
        }
        for (key, value) in &self.extra_config {
            cfg.insert(key.clone(), value.clone());
        }
        let history: Vec<Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let created_by = layer
                    .created_by
                    .clone()
                    .unwrap_or_else(|| format!("pare-test: layer {i}"));
                json!({ "created": CREATED, "created_by": created_by })
            })
            .collect();
        let mut config = json!({
            "created": CREATED,
            "architecture": self.architecture,
            "os": self.os,
            "config": cfg,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if let Some(variant) = &self.variant {
            config["variant"] = json!(variant);
        }
        for (key, value) in &self.extra_top_level {
            config[key] = value.clone();
        }
        config
    }
}

/// What [`write_oci_layout`] produced.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
    /// Compressed layer blob digests, bottom first.
    pub layer_digests: Vec<String>,
    /// Uncompressed layer tar digests, bottom first.
    pub diff_ids: Vec<String>,
}

impl BuiltImage {
    /// An index/manifest descriptor for this image's manifest.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": self.manifest_digest,
            "size": self.manifest_size,
        })
    }
}

/// Write `bytes` as a blob of the layout at `dir`; returns its digest.
pub fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("mkdir {}: {e}", blobs.display()));
    let path = blobs.join(digest.trim_start_matches("sha256:"));
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("write blob {}: {e}", path.display()));
    digest
}

fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs").join("sha256"))
        .unwrap_or_else(|e| panic!("create layout {}: {e}", dir.display()));
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
}

/// Write layers, config and manifest blobs of `spec` into the layout at `dir` without touching
/// `index.json`.
pub fn write_image_blobs(dir: &Path, spec: &ImageSpec) -> BuiltImage {
    init_layout(dir);
    let mut layer_descriptors = Vec::new();
    let mut layer_digests = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &spec.layers {
        let (blob, media_type, diff_id) = layer.blob();
        let digest = write_blob(dir, &blob);
        layer_descriptors.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": blob.len(),
        }));
        layer_digests.push(digest);
        diff_ids.push(diff_id);
    }
    let config = spec.config_json(&diff_ids);
    let config_bytes = serde_json::to_vec(&config).expect("serialise config");
    let config_digest = write_blob(dir, &config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_OCI_CONFIG,
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layer_descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("serialise manifest");
    let manifest_digest = write_blob(dir, &manifest_bytes);
    BuiltImage {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        manifest,
        config_digest,
        config,
        layer_digests,
        diff_ids,
    }
}

/// Point `tag` of the layout at `dir` to `descriptor` (replacing an older entry for the tag).
pub fn set_layout_tag(dir: &Path, tag: &str, descriptor: &Value) {
    init_layout(dir);
    let index_path = dir.join("index.json");
    let mut index: Value = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("parse {}: {e}", index_path.display())),
        Err(_) => json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [],
        }),
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("index.json has a manifests array");
    manifests.retain(|m| m["annotations"][ANNOTATION_REF_NAME].as_str() != Some(tag));
    let mut descriptor = descriptor.clone();
    descriptor["annotations"] = json!({ ANNOTATION_REF_NAME: tag });
    manifests.push(descriptor);
    fs::write(
        &index_path,
        serde_json::to_vec_pretty(&index).expect("serialise index.json"),
    )
    .expect("write index.json");
}

/// Write `spec` as image `tag` of the OCI image layout at `dir` (created if needed; an existing
/// layout keeps its other tags).
pub fn write_oci_layout(dir: &Path, tag: &str, spec: &ImageSpec) -> BuiltImage {
    let built = write_image_blobs(dir, spec);
    let mut descriptor = built.descriptor();
    descriptor["platform"] = spec.platform();
    set_layout_tag(dir, tag, &descriptor);
    built
}

/// What [`write_oci_multiarch_layout`] produced.
#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub index_digest: String,
    pub index: Value,
    pub images: Vec<BuiltImage>,
}

/// Write several images (one per platform, taken from each spec) behind one OCI image index,
/// tagged `tag`. Push with `push_layout_with_args(.., &["--all"])` to keep all platforms.
pub fn write_oci_multiarch_layout(dir: &Path, tag: &str, specs: &[ImageSpec]) -> BuiltIndex {
    let images: Vec<BuiltImage> = specs.iter().map(|s| write_image_blobs(dir, s)).collect();
    let manifests: Vec<Value> = images
        .iter()
        .zip(specs)
        .map(|(image, spec)| {
            let mut d = image.descriptor();
            d["platform"] = spec.platform();
            d
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).expect("serialise image index");
    let index_digest = write_blob(dir, &bytes);
    set_layout_tag(
        dir,
        tag,
        &json!({ "mediaType": MEDIA_TYPE_OCI_INDEX, "digest": index_digest, "size": bytes.len() }),
    );
    BuiltIndex {
        index_digest,
        index,
        images,
    }
}

/// Read and digest-verify a blob of the layout at `dir`.
pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("unsupported digest {digest}"));
    let path = dir.join("blobs").join("sha256").join(hex);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()));
    assert_eq!(
        sha256_digest(&bytes),
        digest,
        "blob {} is corrupt",
        path.display()
    );
    bytes
}

fn read_json_blob(dir: &Path, digest: &str) -> Value {
    serde_json::from_slice(&read_blob(dir, digest))
        .unwrap_or_else(|e| panic!("blob {digest} is not JSON: {e}"))
}

/// One image read back from an OCI layout.
#[derive(Clone, Debug)]
pub struct LayoutImage {
    /// Digest of the image index the tag pointed to, when it pointed to one.
    pub index_digest: Option<String>,
    pub manifest_digest: String,
    pub manifest: Value,
    pub config: Value,
}

impl LayoutImage {
    /// The config's `config` object (Entrypoint, Cmd, Env, User, ...), or `Null`.
    pub fn exec_config(&self) -> &Value {
        &self.config["config"]
    }

    /// Layer descriptors of the manifest, bottom first.
    pub fn layers(&self) -> Vec<Value> {
        self.manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Read image `tag` of the OCI layout at `dir` (index.json -> [index ->] manifest -> config),
/// verifying blob digests. An image index is resolved to its linux/amd64 entry.
pub fn read_layout_image(dir: &Path, tag: &str) -> LayoutImage {
    let index_path = dir.join("index.json");
    let index: Value = serde_json::from_slice(
        &fs::read(&index_path).unwrap_or_else(|e| panic!("read {}: {e}", index_path.display())),
    )
    .unwrap_or_else(|e| panic!("parse {}: {e}", index_path.display()));
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|m| m["annotations"][ANNOTATION_REF_NAME].as_str() == Some(tag))
        .unwrap_or_else(|| panic!("tag {tag:?} not in {}: {index:#}", index_path.display()))
        .clone();
    let digest = entry["digest"]
        .as_str()
        .expect("descriptor digest")
        .to_string();
    let (index_digest, manifest_digest) = match entry["mediaType"].as_str() {
        Some(MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST) => {
            let image_index = read_json_blob(dir, &digest);
            let chosen = image_index["manifests"]
                .as_array()
                .and_then(|ms| {
                    ms.iter().find(|m| {
                        m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux"
                    })
                })
                .unwrap_or_else(|| panic!("no linux/amd64 manifest in {image_index:#}"));
            let manifest_digest = chosen["digest"].as_str().expect("digest").to_string();
            (Some(digest), manifest_digest)
        }
        _ => (None, digest),
    };
    let manifest = read_json_blob(dir, &manifest_digest);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("manifest without config digest: {manifest:#}"));
    let config = read_json_blob(dir, config_digest);
    LayoutImage {
        index_digest,
        manifest_digest,
        manifest,
        config,
    }
}

/// Metadata of one tar entry, as stored in a layer blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntryInfo {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub link_target: Option<String>,
}

/// Decompress (gzip, zstd or plain, sniffed from the bytes) and list a layer blob.
pub fn list_layer_blob(blob: &[u8]) -> Vec<TarEntryInfo> {
    let tar_bytes: Vec<u8> = if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gunzip layer");
        out
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut out = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(blob)
            .expect("zstd layer header")
            .read_to_end(&mut out)
            .expect("unzstd layer");
        out
    } else {
        blob.to_vec()
    };
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    archive
        .entries()
        .expect("read layer tar")
        .map(|entry| {
            let entry = entry.expect("layer tar entry");
            let header = entry.header();
            TarEntryInfo {
                path: entry
                    .path()
                    .expect("entry path")
                    .to_string_lossy()
                    .into_owned(),
                kind: header.entry_type(),
                mode: header.mode().expect("entry mode"),
                uid: header.uid().expect("entry uid"),
                gid: header.gid().expect("entry gid"),
                size: header.size().expect("entry size"),
                link_target: entry
                    .link_name()
                    .expect("entry link name")
                    .map(|l| l.to_string_lossy().into_owned()),
            }
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// skopeo / umoci
// ------------------------------------------------------------------------------------------------

fn skopeo() -> Command {
    let mut cmd = Command::new(require_tool(SKOPEO_BIN));
    cmd.arg("--insecure-policy");
    cmd
}

/// `docker://` prefix unless `image` already names a transport.
fn transport_ref(image: &str) -> String {
    if image.starts_with("docker://") || image.starts_with("oci:") {
        image.to_string()
    } else {
        format!("docker://{image}")
    }
}

fn creds_args(prefix: &str, creds: Option<(&str, &str)>) -> Vec<String> {
    match creds {
        Some((user, pass)) => vec![format!("--{prefix}creds={user}:{pass}")],
        None => vec![format!("--{prefix}no-creds")],
    }
}

/// `skopeo copy oci:LAYOUT:TAG docker://DEST`, returning skopeo's stderr on failure.
/// `extra_args` go before the references (e.g. `["--format", "v2s2"]` or `["--all"]`).
pub fn try_push_layout(
    layout_dir: &Path,
    tag: &str,
    dest: &str,
    creds: Option<(&str, &str)>,
    extra_args: &[&str],
) -> Result<(), String> {
    let output = run_capture(
        skopeo()
            .args(["copy", "--dest-tls-verify=false"])
            .args(creds_args("dest-", creds))
            .args(extra_args)
            .arg(format!("oci:{}:{tag}", layout_dir.display()))
            .arg(transport_ref(dest)),
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(describe_output(&output))
    }
}

/// Push image `tag` of the layout to `dest` (e.g. `"127.0.0.1:5000/team/jq:1"`).
pub fn push_layout(layout_dir: &Path, tag: &str, dest: &str, creds: Option<(&str, &str)>) {
    push_layout_with_args(layout_dir, tag, dest, creds, &[]);
}

/// [`push_layout`] with extra `skopeo copy` arguments.
pub fn push_layout_with_args(
    layout_dir: &Path,
    tag: &str,
    dest: &str,
    creds: Option<(&str, &str)>,
    extra_args: &[&str],
) {
    if let Err(err) = try_push_layout(layout_dir, tag, dest, creds, extra_args) {
        panic!(
            "skopeo push of {}:{tag} to {dest} failed:\n{err}",
            layout_dir.display()
        );
    }
}

/// Build `spec` in a fresh temporary layout and push it to `dest`; returns what was built.
pub fn build_and_push(spec: &ImageSpec, dest: &str, creds: Option<(&str, &str)>) -> BuiltImage {
    let dir = tempfile::tempdir().expect("tempdir for layout");
    let built = write_oci_layout(dir.path(), "img", spec);
    push_layout(dir.path(), "img", dest, creds);
    built
}

fn skopeo_inspect(image: &str, creds: Option<(&str, &str)>, extra: &[&str]) -> Output {
    let mut cmd = skopeo();
    cmd.arg("inspect");
    let reference = transport_ref(image);
    if reference.starts_with("docker://") {
        cmd.arg("--tls-verify=false").args(creds_args("", creds));
    }
    run_capture(cmd.args(extra).arg(reference))
}

/// Whether `image` (`host/repo:tag`, `docker://...` or `oci:DIR:TAG`) can be inspected.
pub fn skopeo_inspect_exists(image: &str, creds: Option<(&str, &str)>) -> bool {
    skopeo_inspect(image, creds, &["--raw"]).status.success()
}

/// The raw manifest (or index) bytes of `image`.
pub fn skopeo_raw_manifest(image: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    let output = skopeo_inspect(image, creds, &["--raw"]);
    assert!(
        output.status.success(),
        "skopeo inspect --raw {image} failed:\n{}",
        describe_output(&output)
    );
    output.stdout
}

/// `sha256:` digest of the top-level manifest (or index) of `image` as served.
pub fn skopeo_manifest_digest(image: &str, creds: Option<(&str, &str)>) -> String {
    sha256_digest(&skopeo_raw_manifest(image, creds))
}

/// The image config JSON of `image` (for an index: the host platform's image).
pub fn skopeo_config(image: &str, creds: Option<(&str, &str)>) -> Value {
    let output = skopeo_inspect(image, creds, &["--config"]);
    assert!(
        output.status.success(),
        "skopeo inspect --config {image} failed:\n{}",
        describe_output(&output)
    );
    serde_json::from_slice(&output.stdout).expect("skopeo --config output is JSON")
}

/// An image pulled into a temporary OCI layout and unpacked by umoci.
pub struct Unpacked {
    pub dir: TempDir,
    pub layout: PathBuf,
    pub tag: String,
    pub bundle: PathBuf,
    /// Manifest digest *in the local layout* (skopeo may have converted the manifest format
    /// when pulling; use [`skopeo_manifest_digest`] for the registry-side digest).
    pub manifest_digest: String,
    pub manifest: Value,
    /// The image config JSON (not umoci's runtime config.json).
    pub config: Value,
}

impl Unpacked {
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// Host path of image path `image_path` inside the rootfs (no symlink resolution).
    pub fn path(&self, image_path: &str) -> PathBuf {
        self.rootfs().join(image_path.trim_start_matches('/'))
    }

    /// The config's `config` object (Entrypoint, Cmd, Env, User, ...), or `Null`.
    pub fn exec_config(&self) -> &Value {
        &self.config["config"]
    }
}

/// Split `oci:DIR:TAG` into `(DIR, TAG)`.
fn parse_oci_ref(image: &str) -> Option<(PathBuf, String)> {
    let rest = image.strip_prefix("oci:")?;
    match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => Some((PathBuf::from(dir), tag.to_string())),
        _ => panic!("oci reference {image:?} needs an explicit :TAG"),
    }
}

/// [`pull_and_unpack_with_creds`] without credentials.
pub fn pull_and_unpack(image: &str) -> Unpacked {
    pull_and_unpack_with_creds(image, None)
}

/// Pull `image` (`docker://host/repo:tag`, bare `host/repo:tag`, or `oci:DIR:TAG`) with skopeo
/// into a temporary layout and unpack it with `umoci unpack`. Local `oci:` single-manifest
/// references are unpacked in place without copying.
pub fn pull_and_unpack_with_creds(image: &str, creds: Option<(&str, &str)>) -> Unpacked {
    let dir = tempfile::Builder::new()
        .prefix("pare-unpack-")
        .tempdir()
        .expect("create unpack tempdir");
    let local = parse_oci_ref(image)
        .filter(|(layout, tag)| read_layout_image(layout, tag).index_digest.is_none());
    let (layout, tag) = match local {
        Some(found) => found,
        None => {
            let layout = dir.path().join("layout");
            let reference = transport_ref(image);
            let mut cmd = skopeo();
            cmd.arg("copy");
            if reference.starts_with("docker://") {
                cmd.arg("--src-tls-verify=false")
                    .args(creds_args("src-", creds));
            }
            run_ok(
                cmd.arg(&reference)
                    .arg(format!("oci:{}:img", layout.display())),
            );
            (layout, "img".to_string())
        }
    };
    let image_info = read_layout_image(&layout, &tag);
    let bundle = dir.path().join("bundle");
    let mut umoci = Command::new(require_tool(UMOCI_BIN));
    umoci.arg("unpack");
    if !is_root() {
        umoci.arg("--rootless");
    }
    run_ok(
        umoci
            .arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle),
    );
    Unpacked {
        dir,
        layout,
        tag,
        bundle,
        manifest_digest: image_info.manifest_digest,
        manifest: image_info.manifest,
        config: image_info.config,
    }
}

// ------------------------------------------------------------------------------------------------
// Inspecting and running unpacked root filesystems
// ------------------------------------------------------------------------------------------------

/// Every path under `rootfs` (symlinks not followed) as image-absolute paths (`/usr/bin/jq`)
/// with their lstat metadata, sorted.
pub fn walk_rootfs(rootfs: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            let image_path = Path::new("/").join(path.strip_prefix(root).expect("under root"));
            let is_dir = meta.is_dir();
            out.push((image_path, meta));
            if is_dir {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(rootfs, rootfs, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// All image-absolute paths in `rootfs`.
pub fn list_paths(rootfs: &Path) -> BTreeSet<String> {
    walk_rootfs(rootfs)
        .into_iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

/// Image-absolute paths of files with setuid or setgid bits.
pub fn find_setid_files(rootfs: &Path) -> Vec<PathBuf> {
    walk_rootfs(rootfs)
        .into_iter()
        .filter(|(_, meta)| meta.mode() & 0o6000 != 0)
        .map(|(p, _)| p)
        .collect()
}

/// lstat permission bits (`& 0o7777`) of `image_path` in `rootfs`, if it exists.
pub fn mode_of(rootfs: &Path, image_path: &str) -> Option<u32> {
    fs::symlink_metadata(rootfs.join(image_path.trim_start_matches('/')))
        .ok()
        .map(|m| m.mode() & 0o7777)
}

/// Run `argv` inside `rootfs` via `chroot --userspec=65532:65532` with only `env` set.
/// Requires root (guard tests with [`is_root`]).
pub fn run_chroot(rootfs: &Path, argv: &[&str], env: &[(&str, &str)]) -> Output {
    run_chroot_as(rootfs, &format!("{NONROOT_UID}:{NONROOT_UID}"), argv, env)
}

/// Like [`run_chroot`] with an explicit `--userspec` (e.g. `"0:0"`).
pub fn run_chroot_as(rootfs: &Path, userspec: &str, argv: &[&str], env: &[(&str, &str)]) -> Output {
    assert!(
        is_root(),
        "run_chroot needs root; guard the test with is_root()"
    );
    assert!(!argv.is_empty(), "run_chroot needs a program");
    // A container runtime gives the process a /proc (glibc needs /proc/self/exe to expand
    // $ORIGIN in the executable's RUNPATH): mount one, in a private mount namespace so it
    // goes away with the process.
    let proc_dir = rootfs.join("proc");
    if !proc_dir.exists() {
        fs::create_dir(&proc_dir).expect("create /proc mount point in the unpacked rootfs");
    }
    run_capture(
        Command::new(require_tool("unshare"))
            .arg("--mount")
            .arg("--pid")
            .arg("--fork")
            .arg(format!("--mount-proc={}", proc_dir.display()))
            .arg(require_tool("chroot"))
            .arg(format!("--userspec={userspec}"))
            .arg(rootfs)
            .args(argv)
            .env_clear()
            .envs(env.iter().copied()),
    )
}

// ------------------------------------------------------------------------------------------------
// Foreign-architecture images from Debian packages
// ------------------------------------------------------------------------------------------------

/// A layer holding everything under `root` (a host directory the test made): directories,
/// regular files with their modes, symlinks with their targets as written.
pub fn dir_layer(root: &Path) -> Layer {
    let mut layer = Layer::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                layer = layer.symlink(&rel, &t.to_string_lossy());
            } else if meta.is_dir() {
                layer = layer.dir(&rel, meta.mode() & 0o7777);
                stack.push(p);
            } else if meta.is_file() {
                layer = layer.file_from_host(&p, &rel, Some(meta.mode() & 0o7777));
            }
        }
    }
    layer
}

/// Debian's arm64 packages of jq and what it needs, downloaded once into a cache dir
/// (`apt-get download` after `dpkg --add-architecture arm64`). `None`, with the reason, when
/// they cannot be had here.
pub fn arm64_jq_debs() -> Result<Vec<PathBuf>, String> {
    let cache = std::env::temp_dir().join("pare-test-arm64-debs");
    let names = ["libc6", "jq", "libjq1", "libonig5"];
    let have = |cache: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(cache)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    if have(&cache).len() >= names.len() {
        return Ok(have(&cache));
    }
    fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let pkgs: Vec<String> = names.iter().map(|n| format!("{n}:arm64")).collect();
    let out = Command::new("apt-get")
        .current_dir(&cache)
        .arg("download")
        .args(&pkgs)
        .output()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download {} failed (run `dpkg --add-architecture arm64 && apt-get update`): {}",
            pkgs.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(have(&cache))
}

/// Unpack .deb files into a fresh root with `dpkg-deb -x`.
pub fn unpack_debs(debs: &[PathBuf], root: &Path) {
    for d in debs {
        run_ok(Command::new("dpkg-deb").arg("-x").arg(d).arg(root));
    }
}

/// A two-platform jq index tagged `tag` in the layout: linux/amd64 from this machine's jq on
/// the Debian-like base, linux/arm64/v8 from Debian's arm64 packages. `Err` (the reason) when
/// the arm64 packages cannot be had.
pub fn write_jq_multiarch_layout(layout: &Path, tag: &str) -> Result<BuiltIndex, String> {
    let debs = arm64_jq_debs()?;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    unpack_debs(&debs, root.path());
    let amd64 = ImageSpec::new(vec![
        usrmerge_base_layer(),
        Layer::new().host_closure(HOST_JQ),
    ])
    .with_entrypoint(&["/usr/bin/jq"])
    .with_cmd(&["-n", "1+1"]);
    let arm64 = ImageSpec::new(vec![dir_layer(root.path())])
        .with_entrypoint(&["/usr/bin/jq"])
        .with_cmd(&["-n", "1+1"])
        .with_platform("arm64", Some("v8"));
    Ok(write_oci_multiarch_layout(layout, tag, &[amd64, arm64]))
}

/// The items of a `pare batch --report` file as sorted `"repo:tag status"` lines.
pub fn batch_report_items(report: &Path) -> Vec<String> {
    let r: Value = serde_json::from_slice(&fs::read(report).expect("read batch report"))
        .expect("batch report is JSON");
    let mut got: Vec<String> = r["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}:{} {}",
                i["repository"].as_str().unwrap_or_default(),
                i["tag"].as_str().unwrap_or_default(),
                i["status"].as_str().unwrap_or_default()
            )
        })
        .collect();
    got.sort();
    got
}

/// Where pare lives in its own image.
pub const PARE_IN_IMAGE: &str = "/usr/local/bin/pare";

/// pare's own image: a usrmerge base, `binary` at [`PARE_IN_IMAGE`] with the shared
/// libraries it loads (and their host symlink chains), and this machine's CA bundle (pare
/// talks TLS to registries). `just image` builds it from the release binary and hardens it.
pub fn pare_image_spec(binary: &Path) -> ImageSpec {
    let mut app = Layer::new().created_by("pare: the binary, its libraries, CA certificates");
    for lib in ldd_paths(binary) {
        app = app.host_path_with_links(lib);
    }
    app = app.file_from_host(binary, PARE_IN_IMAGE, Some(0o755));
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if bundle.is_file() {
        app = app
            .dir("/etc/ssl", 0o755)
            .dir("/etc/ssl/certs", 0o755)
            .file_from_host(bundle, "/etc/ssl/certs/ca-certificates.crt", Some(0o644));
    }
    ImageSpec::new(vec![usrmerge_base_layer(), app])
        .with_entrypoint(&[PARE_IN_IMAGE])
        .with_cmd(&["--help"])
        .with_label("org.opencontainers.image.title", "pare")
        .with_label(
            "org.opencontainers.image.description",
            "Make container images safe to run",
        )
}
