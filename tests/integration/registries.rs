//! Test registries on loopback: Debian's `docker-registry` (plain, TLS + htpasswd, `silly`
//! Bearer auth with an in-test token server, pull-through mirror), and a fault-injecting proxy
//! that also counts what crosses it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{require_tool, KillOnDrop};

/// A free loopback port (bound then released).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How a test registry authenticates.
pub enum Auth {
    None,
    /// htpasswd users (bcrypt), over TLS.
    Htpasswd(&'static str, &'static str),
    /// `silly` Bearer auth with this token realm.
    Silly(String),
}

/// A `docker-registry` process on a random loopback port.
pub struct Registry {
    _child: KillOnDrop,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

impl Registry {
    pub fn plain() -> Self {
        Self::start(Auth::None, None)
    }

    /// A plain-HTTP registry that also answers on this machine's own address.
    pub fn plain_everywhere() -> Self {
        Self::start_on(Auth::None, None, true)
    }

    pub fn start(auth: Auth, proxy_of: Option<&str>) -> Self {
        let everywhere = matches!(auth, Auth::Htpasswd(..));
        Self::start_on(auth, proxy_of, everywhere)
    }

    fn start_on(auth: Auth, proxy_of: Option<&str>, everywhere: bool) -> Self {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port("127.0.0.1");
        // A registry may also answer on this machine's own address, which is not loopback
        // (so not insecure by default).
        let listen = if everywhere {
            format!("0.0.0.0:{port}")
        } else {
            format!("127.0.0.1:{port}")
        };
        let host = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {listen}\n  secret: kiln-test-secret\n",
            dir.path().join("data").display()
        );
        match &auth {
            Auth::None => {}
            Auth::Htpasswd(user, pass) => {
                require_tool("htpasswd");
                require_tool("openssl");
                let htpasswd = dir.path().join("htpasswd");
                let st = Command::new("htpasswd")
                    .arg("-Bbc")
                    .arg(&htpasswd)
                    .args([user, pass])
                    .stderr(Stdio::null())
                    .status()
                    .expect("run htpasswd");
                assert!(st.success());
                // A CA, and a server certificate it signs (webpki refuses a self-signed CA
                // certificate as a server's).
                let d = dir.path();
                let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
                let ext = d.join("ext.cnf");
                std::fs::write(
                    &ext,
                    format!(
                        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:{}\n",
                        local_ip()
                    ),
                )
                .expect("write ext");
                let openssl = |args: &[&str]| {
                    let st = Command::new("openssl")
                        .current_dir(d)
                        .args(args)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("run openssl");
                    assert!(st.success(), "openssl {args:?}");
                };
                openssl(&[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=kiln test CA",
                    "-keyout",
                    "ca-key.pem",
                    "-out",
                    "ca.pem",
                ]);
                openssl(&[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    "key.pem",
                    "-out",
                    "req.csr",
                ]);
                openssl(&[
                    "x509",
                    "-req",
                    "-in",
                    "req.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca-key.pem",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                    "-out",
                    "cert.pem",
                ]);
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    cert.display(),
                    key.display(),
                    htpasswd.display()
                ));
            }
            Auth::Silly(realm) => {
                cfg.push_str(&format!(
                    "auth:\n  silly:\n    realm: {realm}\n    service: kiln-test-registry\n"
                ));
            }
        }
        if let Some(up) = proxy_of {
            cfg.push_str(&format!("proxy:\n  remoteurl: http://{up}\n"));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let r = Self {
            _child: KillOnDrop(child),
            dir,
            host,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&r.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start:\n{}",
                std::fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// `ADDRESS:PORT` on this machine's own (non-loopback) address.
    pub fn external_host(&self) -> String {
        self.host.replace("127.0.0.1", &local_ip())
    }

    /// The CA that signed the TLS certificate (for `ca =`).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// This machine's address on its default route (no packet is sent to find it).
pub fn local_ip() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    s.connect("10.255.255.255:9").expect("a route");
    let ip = s.local_addr().expect("local address").ip();
    assert!(
        !ip.is_loopback(),
        "this machine has no non-loopback address"
    );
    ip.to_string()
}

/// A parsed HTTP request or response head.
#[derive(Debug, Clone)]
pub struct Head {
    /// `GET /v2/ HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn bytes(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.line);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    pub fn method(&self) -> &str {
        self.line.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
}

/// Reads a head; `None` at a clean end of stream.
pub fn read_head(r: &mut impl BufRead) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Some(Head { line, headers })
}

/// Reads a body framed by `Content-Length` or chunked encoding; to the end of the stream when
/// `to_eof` and neither is given.
fn read_body(r: &mut impl BufRead, h: &Head, to_eof: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(n) = h.get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        r.take(n).read_to_end(&mut body).ok();
    } else if h
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let n =
                u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end).ok();
                break;
            }
            r.take(n).read_to_end(&mut body).ok();
            let mut crlf = String::new();
            r.read_line(&mut crlf).ok();
        }
    } else if to_eof {
        r.read_to_end(&mut body).ok();
    }
    body
}

/// A blocking HTTP/1.1 request to `host` (one connection, closed after).
pub fn http(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Head, Vec<u8>) {
    let mut s = TcpStream::connect(host).expect("connect");
    let mut h = Head {
        line: format!("{method} {path} HTTP/1.1"),
        headers: vec![
            ("Host".into(), host.into()),
            ("Connection".into(), "close".into()),
        ],
    };
    for (k, v) in headers {
        h.set(k, v);
    }
    h.set("Content-Length", &body.len().to_string());
    s.write_all(&h.bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut r = BufReader::new(s);
    let head = read_head(&mut r).expect("a response");
    let status = head
        .line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        read_body(&mut r, &head, true)
    };
    (status, head, body)
}

/// Serves on a thread until dropped; `handle` gets each connection.
struct Server {
    stop: Arc<AtomicBool>,
    addr: String,
}

impl Server {
    fn start(ip: &str, handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let l = TcpListener::bind((ip, 0)).expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = Arc::new(handle);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let h = handle.clone();
                std::thread::spawn(move || h(conn));
            }
        });
        Self { stop, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    pub service: Option<String>,
    pub scopes: Vec<String>,
    pub account: Option<String>,
    pub basic_user: Option<String>,
    pub grant_type: Option<String>,
}

/// A token server for `silly` auth that records each request.
pub struct TokenServer {
    _server: Server,
    pub realm: String,
    pub log: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    pub fn start() -> Self {
        let log: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
        let l2 = log.clone();
        let server = Server::start("127.0.0.1", move |conn| {
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let Some(head) = read_head(&mut r) else {
                return;
            };
            let body = read_body(&mut r, &head, false);
            let query = head
                .target()
                .split_once('?')
                .map_or("", |(_, q)| q)
                .to_owned();
            let form = if head.method() == "POST" {
                String::from_utf8_lossy(&body).into_owned()
            } else {
                query
            };
            let pairs: Vec<(String, String)> = form_pairs(&form);
            let one = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
            let mut scopes: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k == "scope")
                .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
                .filter(|s| !s.is_empty())
                .collect();
            scopes.sort();
            let basic_user = head.get("authorization").and_then(|a| {
                use base64::Engine as _;
                let b = a.strip_prefix("Basic ")?;
                let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
                let text = String::from_utf8(raw).ok()?;
                Some(text.split_once(':')?.0.to_owned())
            });
            let n = {
                let mut log = l2.lock().unwrap();
                log.push(TokenRequest {
                    method: head.method().to_owned(),
                    service: one("service"),
                    scopes,
                    account: one("account"),
                    basic_user,
                    grant_type: one("grant_type"),
                });
                log.len()
            };
            let json = format!(
                "{{\"token\":\"tok-{n}\",\"access_token\":\"tok-{n}\",\"expires_in\":300,\"refresh_token\":\"refresh-{n}\"}}"
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
            let mut w = conn;
            let _ = w.write_all(resp.as_bytes());
        });
        let realm = format!("http://{}/token", server.addr);
        Self {
            _server: server,
            realm,
            log,
        }
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().clone()
    }
}

fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the fault proxy does to the next requests, and what it counted.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer the next manifest GET with 401 and this challenge (a token that expired).
    pub unauthorized_once: Option<String>,
    /// Answer the next blob GET with 429 and `Retry-After: N`.
    pub too_many_once: Option<u64>,
    /// Answer the next N requests with 503.
    pub unavailable: u32,
    /// Cut the next blob GET's body after this many bytes (a reset).
    pub reset_blob_after: Option<u64>,
    /// Flip one byte in the middle of the next blob GET's body.
    pub flip_byte: bool,
    /// Drop `Range` from every request (a server that ignores it).
    pub ignore_range: bool,
    /// Redirect blob GETs to the proxy's second address (another host).
    pub redirect_blobs: bool,
    /// Refuse (416) a PATCH without `Content-Range` whose body is larger than this.
    pub patch_limit: Option<u64>,
    /// `Content-Range` values of PATCHes forwarded.
    pub chunks: Vec<String>,
    /// Body bytes of blob GETs answered.
    pub blob_bytes: u64,
    /// Body bytes of blob uploads (PATCH, PUT) forwarded.
    pub upload_bytes: u64,
    /// `METHOD path` of every request.
    pub requests: Vec<String>,
    /// Whether each request at the second address carried `Authorization`.
    pub foreign_auth: Vec<bool>,
}

/// A proxy in front of a registry that injects [`Faults`] and counts traffic. It listens on
/// `127.0.0.1` (the registry's face) and `127.0.0.2` (another host, for redirects).
pub struct FaultProxy {
    _main: Server,
    _foreign: Server,
    pub host: String,
    pub faults: Arc<Mutex<Faults>>,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> Self {
        let faults: Arc<Mutex<Faults>> = Arc::default();
        let foreign_addr: Arc<Mutex<String>> = Arc::default();
        let (f, up, fa) = (faults.clone(), upstream.to_owned(), foreign_addr.clone());
        let main = Server::start("127.0.0.1", move |conn| {
            let foreign = fa.lock().unwrap().clone();
            proxy_conn(conn, &up, &f, Some(&foreign));
        });
        let (f, up) = (faults.clone(), upstream.to_owned());
        let foreign = Server::start("127.0.0.2", move |conn| {
            proxy_conn(conn, &up, &f, None);
        });
        *foreign_addr.lock().unwrap() = foreign.addr.clone();
        Self {
            host: main.addr.clone(),
            _main: main,
            _foreign: foreign,
            faults,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.faults.lock().unwrap())
    }
}

fn respond(mut conn: TcpStream, status: &str, headers: &[(&str, String)]) {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    let _ = conn.write_all(s.as_bytes());
}

fn proxy_conn(conn: TcpStream, upstream: &str, faults: &Mutex<Faults>, foreign: Option<&str>) {
    let mut r = BufReader::new(conn.try_clone().expect("clone"));
    {
        let Some(mut head) = read_head(&mut r) else {
            return;
        };
        let body = read_body(&mut r, &head, false);
        let method = head.method().to_owned();
        let target = head.target().to_owned();
        let is_blob_get = method == "GET" && target.contains("/blobs/sha256:");
        let is_manifest_get = method == "GET" && target.contains("/manifests/");
        let is_upload =
            (method == "PATCH" || method == "PUT") && target.contains("/blobs/uploads/");
        let mut cut = None;
        let mut flip = false;
        {
            let mut f = faults.lock().unwrap();
            f.requests.push(format!("{method} {target}"));
            if foreign.is_none() {
                f.foreign_auth.push(head.get("authorization").is_some());
            }
            if f.unavailable > 0 {
                f.unavailable -= 1;
                drop(f);
                respond(conn, "503 Service Unavailable", &[]);
                return;
            }
            if is_manifest_get {
                if let Some(ch) = f.unauthorized_once.take() {
                    drop(f);
                    respond(conn, "401 Unauthorized", &[("WWW-Authenticate", ch)]);
                    return;
                }
            }
            if is_blob_get && foreign.is_some() {
                if let Some(secs) = f.too_many_once.take() {
                    drop(f);
                    respond(
                        conn,
                        "429 Too Many Requests",
                        &[("Retry-After", secs.to_string())],
                    );
                    return;
                }
                if f.redirect_blobs {
                    let to = format!("http://{}{target}", foreign.unwrap_or_default());
                    drop(f);
                    respond(conn, "307 Temporary Redirect", &[("Location", to)]);
                    return;
                }
            }
            if is_blob_get {
                cut = f.reset_blob_after;
                flip = f.flip_byte;
            }
            if f.ignore_range {
                head.remove("range");
            }
            if method == "PATCH"
                && head.get("content-range").is_none()
                && f.patch_limit.is_some_and(|l| body.len() as u64 > l)
            {
                drop(f);
                respond(conn, "416 Requested Range Not Satisfiable", &[]);
                return;
            }
            if let Some(cr) = head.get("content-range") {
                f.chunks.push(cr.to_owned());
            }
            if is_upload {
                f.upload_bytes += body.len() as u64;
            }
        }
        if foreign.is_none() {
            // The "other host" fetches with its own credentials.
            head.set("Authorization", "Bearer cdn");
        }
        head.set("Connection", "close");
        head.set("Host", upstream);
        head.remove("transfer-encoding");
        head.set("Content-Length", &body.len().to_string());
        let Ok(mut up) = TcpStream::connect(upstream) else {
            return;
        };
        if up.write_all(&head.bytes()).is_err() || up.write_all(&body).is_err() {
            return;
        }
        let mut ur = BufReader::new(up);
        let Some(mut rh) = read_head(&mut ur) else {
            return;
        };
        let mut rbody = if method == "HEAD" {
            Vec::new()
        } else {
            read_body(&mut ur, &rh, true)
        };
        // Locations point back at this proxy, whatever host the registry named.
        if let Some(loc) = rh.get("location").map(str::to_owned) {
            let fixed = loc.replace(
                upstream,
                &conn.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            );
            rh.set("Location", &fixed);
        }
        // Faults hit the first large blob (a layer, not a config).
        let large = rbody.len() > 64 << 10;
        let cut = cut.filter(|&n| large && (n as usize) < rbody.len());
        let flip = flip && large;
        if is_blob_get && rh.line.contains(" 20") {
            let mut f = faults.lock().unwrap();
            f.blob_bytes += cut.map_or(rbody.len() as u64, |n| n);
            if cut.is_some() {
                f.reset_blob_after = None;
            }
            if flip {
                f.flip_byte = false;
                let mid = rbody.len() / 2;
                rbody[mid] ^= 0xff;
            }
        }
        rh.remove("transfer-encoding");
        rh.set("Connection", "close");
        if method != "HEAD" {
            rh.set("Content-Length", &rbody.len().to_string());
        }
        let mut w = conn.try_clone().expect("clone");
        if w.write_all(&rh.bytes()).is_err() {
            return;
        }
        if let Some(n) = cut {
            let n = (n as usize).min(rbody.len());
            let _ = w.write_all(&rbody[..n]);
            let _ = w.flush();
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        let _ = w.write_all(&rbody);
        let _ = w.flush();
        let _ = w.shutdown(Shutdown::Write);
    }
}

/// Writes the registries file of `env` (`KILN_REGISTRIES_CONFIG`).
pub fn registries_config(env: &crate::harness::Env, text: &str) {
    env.write("registries.toml", text);
}

/// The JSON of a manifest by `skopeo inspect --raw`.
pub fn skopeo_raw(image: &str) -> Vec<u8> {
    require_tool("skopeo");
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// sha256 of bytes, as `sha256:<hex>`.
pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// Counts of requests by `METHOD` and a path fragment.
pub fn count(requests: &[String], method: &str, fragment: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.starts_with(&format!("{method} ")) && r.contains(fragment))
        .count()
}
