//! Registries that lie: a tiny HTTP server in the test answers the distribution API with
//! broken content. Every case must end in a clear error, exit status 1, and a store with no
//! partial or unverified content.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ironpod;
use sha2::{Digest as _, Sha256};

fn sha(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The content the fake registry serves.
struct Content {
    config: Vec<u8>,
    layer: Vec<u8>,
}

impl Content {
    fn new() -> Content {
        let mut tar = tar::Builder::new(Vec::new());
        let data = b"hello\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/motd", &data[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]}
        }))
        .unwrap();
        Content { config, layer }
    }

    fn manifest(&self, layer_size: usize) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&self.config), "size": self.config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&self.layer), "size": layer_size}],
        }))
        .unwrap()
    }
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &[u8], declared_len: Option<usize>) {
    let len = declared_len.unwrap_or(body.len());
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// Bytes the endless manifest got written before the client hung up.
static ENDLESS_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Serves one scenario per repository name.
fn serve(listener: TcpListener, stall_release: Arc<AtomicBool>) {
    let c = Arc::new(Content::new());
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        let (c, stall_release) = (c.clone(), stall_release.clone());
        std::thread::spawn(move || {
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                return;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let head = method == "HEAD";
            if path == "/v2/" {
                return respond(&mut s, "200 OK", "application/json", b"{}", None);
            }
            let segs: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
            let (repo, kind, reference) =
                (segs[0], segs.get(1).copied().unwrap_or(""), segs.get(2).copied().unwrap_or(""));
            let manifest_ct = "application/vnd.oci.image.manifest.v1+json";
            match (repo, kind) {
                ("notjson", "manifests") => {
                    respond(&mut s, "200 OK", manifest_ct, b"<html>surprise</html>", None)
                }
                ("huge", "manifests") => {
                    respond(&mut s, "200 OK", manifest_ct, &vec![b' '; 5 << 20], None)
                }
                ("endless", "manifests") => {
                    // No length, and no end: only the client can stop this.
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {manifest_ct}\r\nConnection: close\r\n\r\n");
                    let _ = s.write_all(head.as_bytes());
                    let chunk = vec![b' '; 1 << 20];
                    for _ in 0..1024 {
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                        ENDLESS_SENT.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                }
                ("bigconfig", "manifests") => {
                    let mut m: serde_json::Value =
                        serde_json::from_slice(&c.manifest(c.layer.len())).unwrap();
                    m["config"]["size"] = serde_json::json!(1u64 << 30);
                    respond(&mut s, "200 OK", manifest_ct, &serde_json::to_vec(&m).unwrap(), None)
                }
                ("wrongdigest", "manifests") => {
                    respond(&mut s, "200 OK", manifest_ct, &c.manifest(c.layer.len()), None)
                }
                ("oversize", "manifests") => {
                    respond(&mut s, "200 OK", manifest_ct, &c.manifest(5), None)
                }
                (_, "manifests") => {
                    let body = c.manifest(c.layer.len());
                    respond(
                        &mut s,
                        "200 OK",
                        manifest_ct,
                        if head { b"" } else { &body },
                        Some(body.len()),
                    )
                }
                (_, "blobs") if reference == sha(&c.config) => {
                    respond(&mut s, "200 OK", "application/octet-stream", &c.config, None)
                }
                ("liar", "blobs") => respond(
                    &mut s,
                    "200 OK",
                    "application/octet-stream",
                    &vec![7u8; c.layer.len()],
                    None,
                ),
                ("trunc", "blobs") => respond(
                    &mut s,
                    "200 OK",
                    "application/octet-stream",
                    &c.layer[..10],
                    Some(c.layer.len()),
                ),
                ("stall", "blobs") => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        c.layer.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&c.layer[..c.layer.len() / 2]);
                    let _ = s.flush();
                    let t = Instant::now();
                    while !stall_release.load(Ordering::SeqCst)
                        && t.elapsed() < Duration::from_secs(60)
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = s.write_all(&c.layer[c.layer.len() / 2..]);
                }
                (_, "blobs") => {
                    respond(&mut s, "200 OK", "application/octet-stream", &c.layer, None)
                }
                _ => respond(&mut s, "404 Not Found", "application/json", b"{}", None),
            }
            // Close right away: a truncated body must end with the connection.
            let _ = s.shutdown(std::net::Shutdown::Both);
        });
    }
}

fn start() -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    std::thread::spawn(move || serve(l, r));
    (port, release)
}

fn blobs(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}

fn tmp_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("tmp")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn lying_registries_get_clear_errors_and_leave_the_store_clean() {
    let (port, _) = start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let content = Content::new();
    for (repo, expect) in [
        ("notjson", "not JSON"),
        ("huge", "too large"),
        ("endless", "too large"),
        ("bigconfig", "image config of 1073741824 bytes is too large"),
        ("liar", "digest"),
        ("trunc", "registry: error decoding response body"),
        ("oversize", "bytes"),
    ] {
        let o = ironpod(&root, &["pull", "-q", &format!("localhost:{port}/{repo}:v1")]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{repo}: {err}");
        assert!(err.starts_with("ironpod: ") && err.contains(expect), "{repo}: {err}");
        assert!(!err.contains("panicked"), "{repo}: {err}");
        assert_eq!(tmp_files(&root), 0, "{repo}: no partial download left behind");
        // Only verified blobs may be present (the config is genuine in these scenarios).
        for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            let data = std::fs::read(e.path()).unwrap();
            assert_eq!(
                format!("sha256:{}", e.file_name().to_string_lossy()),
                sha(&data),
                "{repo}: unverified blob stored"
            );
        }
        let list = ironpod(&root, &["images", "--json"]);
        assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]", "{repo}: no image named");
    }
    // The endless manifest was cut off near its limit, not read to its end.
    let sent = ENDLESS_SENT.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "{sent} bytes of an endless manifest were taken");
    // A manifest asked for by digest must match that digest.
    let wrong = sha(b"something else");
    let o = ironpod(&root, &["pull", "-q", &format!("localhost:{port}/wrongdigest@{wrong}")]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("verification failed: expected sha256:"), "{o:?}");
    // The honest repository still pulls fine.
    let o = ironpod(&root, &["pull", "-q", &format!("localhost:{port}/good:v1")]);
    assert!(o.status.success(), "{o:?}");
    assert!(root.join("blobs/sha256").join(&sha(&content.layer)[7..]).is_file());
}

#[test]
fn a_killed_pull_leaves_nothing_visible_and_a_rerun_completes() {
    let (port, release) = start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let image = format!("localhost:{port}/stall:v1");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ironpod"))
        .arg("--root")
        .arg(&root)
        .args(["pull", "-q", &image])
        .spawn()
        .unwrap();
    // Wait until the layer download has started.
    let t = Instant::now();
    loop {
        // The temporary file of the layer exists once its download has begun (its bytes
        // may still sit in the writer's buffer).
        let partial = std::fs::read_dir(root.join("tmp")).map(|d| d.count() > 0).unwrap_or(false);
        if partial {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let content = Content::new();
    assert!(
        !root.join("blobs/sha256").join(&sha(&content.layer)[7..]).exists(),
        "no partial blob is visible"
    );
    assert_eq!(String::from_utf8_lossy(&ironpod(&root, &["images", "--json"]).stdout).trim(), "[]");
    // Re-run: completes.
    release.store(true, Ordering::SeqCst);
    let o = ironpod(&root, &["pull", "-q", &image]);
    assert!(o.status.success(), "{o:?}");
    assert!(root.join("blobs/sha256").join(&sha(&content.layer)[7..]).is_file());
    // The dead pull's temporary file is swept by the next garbage collection.
    assert!(blobs(&root) >= 3);
    let o = ironpod(&root, &["rmi", &image]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(tmp_files(&root), 0);
    assert_eq!(blobs(&root), 0);
}
