//! A throw-away CNCF distribution registry (anonymous, basic auth or token auth).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::*;

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
    let accept: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    http_request(port, "GET", path, creds, &accept, None)
}

/// Minimal HTTP/1.0 request with `headers` and a body (the server closes the connection
/// after the response).
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    creds: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some((user, pass)) = creds {
        let _ = write!(
            request,
            "Authorization: Basic {}\r\n",
            basic_auth(user, pass)
        );
    }
    for (k, v) in headers {
        let _ = write!(request, "{k}: {v}\r\n");
    }
    if let Some(b) = body {
        let _ = write!(request, "Content-Length: {}\r\n", b.len());
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
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

    /// Start a registry whose storage is in memory (`/dev/shm`, when the machine has it): the
    /// benchmarks' registry, so the disk's stalls do not time the registry instead of pare.
    #[allow(dead_code)]
    pub fn start_in_memory() -> Registry {
        let shm = Path::new("/dev/shm");
        Self::launch_with(None, None, shm.is_dir().then_some(shm))
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
        let mut reg = Self::launch_with(
            Some((user.to_string(), pass.to_string())),
            Some(token),
            None,
        );
        reg.token_server = Some((server, tdir));
        reg
    }

    /// Start an anonymous registry that announces every event to `url` (the distribution
    /// registry's `notifications` endpoint) with `Authorization: Bearer TOKEN`, retrying a
    /// failed delivery after 1 s.
    #[allow(dead_code)]
    pub fn start_notifying(url: &str, token: &str) -> Registry {
        let section = format!(
            "notifications:\n  endpoints:\n    - name: pare\n      url: {url}\n      \
             headers:\n        Authorization: [\"Bearer {token}\"]\n      timeout: 5s\n      \
             threshold: 3\n      backoff: 1s\n"
        );
        Self::launch_with(None, Some(section), None)
    }

    fn launch(creds: Option<(String, String)>) -> Registry {
        let auth = creds.as_ref().map(|_| String::new());
        Self::launch_with(creds, auth, None)
    }

    /// `auth`: the config's `auth:` section; empty for htpasswd with `creds`. `parent`: where
    /// its storage dir goes (else the temp dir).
    fn launch_with(
        creds: Option<(String, String)>,
        auth: Option<String>,
        parent: Option<&Path>,
    ) -> Registry {
        let binary = require_tool(REGISTRY_BIN);
        let mut failures = Vec::new();
        // The free port can be stolen between probing and the registry binding it; retry.
        for _attempt in 0..3 {
            let mut b = tempfile::Builder::new();
            b.prefix("pare-registry-");
            let dir = match parent {
                Some(p) => b.tempdir_in(p),
                None => b.tempdir(),
            }
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

    /// A raw request with a body (blob uploads, manifest puts), with the registry's credentials.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> HttpResponse {
        http_request(self.port, method, path, self.creds(), headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.host()))
    }

    /// Put `blob` into `repo` (a monolithic upload: POST, then PUT with the bytes), or mount
    /// it from `from`.
    pub fn put_blob(&self, repo: &str, blob: &[u8], from: Option<&str>) -> String {
        let digest = sha256_digest(blob);
        if let Some(from) = from {
            let r = self.request(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
                &[],
                Some(&[]),
            );
            assert_eq!(r.status, 201, "mount {digest} into {repo}: {}", r.text());
            return digest;
        }
        let r = self.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Some(&[]),
        );
        assert_eq!(r.status, 202, "start an upload to {repo}: {}", r.text());
        let location = r
            .header("Location")
            .expect("an upload location")
            .to_string();
        // The location may be absolute: keep its path and query.
        let path = match location.split_once("://") {
            Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = self.request(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            Some(blob),
        );
        assert_eq!(r.status, 201, "blob {digest} into {repo}: {}", r.text());
        digest
    }

    /// Put a manifest under `reference` (a tag or digest) of `repo`.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let r = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            Some(bytes),
        );
        assert_eq!(r.status, 201, "manifest {repo}:{reference}: {}", r.text());
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
