//! Pull and push against a real registry (Debian's docker-registry, distribution 2.8) that the
//! test starts on 127.0.0.1 with private storage.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

#[test]
fn push_pull_round_trip_skip_and_mount() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let t = tarball(dir.path(), "one", "one\n");
    ok(&ironpod(&a, &["import", t.to_str().unwrap(), "demo"]));
    let remote = format!("{}/team/app:v1", reg.host());
    ok(&ironpod(&a, &["tag", "demo", &remote]));
    let out = ok(&ironpod(&a, &["push", &remote]));
    assert!(out.contains("digest: sha256:"), "{out}");

    // Pull into an empty store: byte-identical manifest.
    let out = ok(&ironpod(&b, &["pull", &remote]));
    assert!(out.contains(&manifest_of(&a, "demo")), "{out}");
    assert_eq!(manifest_of(&b, &remote), manifest_of(&a, "demo"));
    // Pulling again downloads nothing.
    let again = ironpod(&b, &["pull", &remote]);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("Downloading"), "{again:?}");

    // Pushing again skips what the registry has; another repository mounts it.
    let o = ironpod(&a, &["push", &remote]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"), "{o:?}");
    let other = format!("{}/other/app:v1", reg.host());
    ok(&ironpod(&a, &["tag", "demo", &other]));
    let o = ironpod(&a, &["push", &other]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Mounted"), "{o:?}");

    // By digest, too.
    let by_digest = format!("{}/team/app@{}", reg.host(), manifest_of(&a, "demo"));
    ok(&ironpod(&dir.path().join("c"), &["pull", &by_digest]));

    // Errors: unknown image, unreachable registry.
    let o = ironpod(&b, &["pull", &format!("{}/team/nothing:here", reg.host())]);
    assert_eq!(o.status.code(), Some(1));
    let o = ironpod(&b, &["pull", "localhost:1/x:y"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("ironpod: registry"), "{o:?}");
}

fn put_manifest(reg: &Registry, repo: &str, reference: &str, media: &str, body: &[u8]) {
    let o = Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H", &format!("Content-Type: {media}"), "--data-binary", "@-"])
        .arg(format!("http://{}/v2/{repo}/manifests/{reference}", reg.host()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(body)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success(), "PUT manifest failed");
}

#[test]
fn index_with_two_platforms_picks_the_right_one() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let mut digests = Vec::new();
    for (name, content) in [("amd", "amd64\n"), ("arm", "arm64\n")] {
        let t = tarball(dir.path(), name, content);
        ok(&ironpod(&a, &["import", t.to_str().unwrap(), name]));
        let remote = format!("{}/multi/app:{name}", reg.host());
        ok(&ironpod(&a, &["tag", name, &remote]));
        ok(&ironpod(&a, &["push", "-q", &remote]));
        digests.push(manifest_of(&a, name));
    }
    let size = |d: &str| {
        std::fs::metadata(a.join("blobs/sha256").join(d.trim_start_matches("sha256:")))
            .unwrap()
            .len()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digests[1], "size": size(&digests[1]),
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digests[0], "size": size(&digests[0]),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    });
    put_manifest(
        &reg,
        "multi/app",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    let remote = format!("{}/multi/app:latest", reg.host());
    let b = dir.path().join("b");
    ok(&ironpod(&b, &["pull", "-q", &remote]));
    assert_eq!(manifest_of(&b, &remote), digests[0], "linux/amd64 by default");
    ok(&ironpod(&b, &["pull", "-q", "--platform", "linux/arm64", &remote]));
    assert_eq!(manifest_of(&b, &remote), digests[1]);
    let o = ironpod(&b, &["pull", "-q", "--platform", "windows/amd64", &remote]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn basic_auth_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, htpasswd) =
        (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("htpasswd"));
    // A private CA and a server certificate it signed (rustls refuses a self-signed CA as
    // the server's own certificate).
    let (ca_key, ca_cert, csr, ext) = (
        dir.path().join("ca.key"),
        dir.path().join("ca.pem"),
        dir.path().join("srv.csr"),
        dir.path().join("ext.cnf"),
    );
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        .unwrap();
    let openssl = |cmd: &str| {
        let o = Command::new("openssl").args(cmd.split_whitespace()).output().unwrap();
        assert!(o.status.success(), "openssl {cmd}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let (ca_key, ca_cert, csr, ext, key_s, cert_s) = (
        ca_key.display().to_string(),
        ca_cert.display().to_string(),
        csr.display().to_string(),
        ext.display().to_string(),
        key.display().to_string(),
        cert.display().to_string(),
    );
    openssl(&format!("req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ironpod-test-CA -keyout {ca_key} -out {ca_cert}"));
    openssl(&format!("req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout {key_s} -out {csr}"));
    openssl(&format!(
        "x509 -req -in {csr} -CA {ca_cert} -CAkey {ca_key} -CAcreateserial -days 1 -extfile {ext} -out {cert_s}"
    ));
    let h = Command::new("htpasswd").args(["-Bbn", "alice", "wonderland"]).output().unwrap();
    assert!(h.status.success());
    std::fs::write(&htpasswd, &h.stdout).unwrap();
    let extra = format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        cert.display(),
        key.display(),
        htpasswd.display()
    );
    let reg = Registry::start_with(&extra);
    let root = dir.path().join("a");
    let t = tarball(dir.path(), "tls", "secret\n");
    ok(&ironpod(&root, &["import", t.to_str().unwrap(), "demo"]));
    let remote = format!("{}/private/app:v1", reg.host());
    ok(&ironpod(&root, &["tag", "demo", &remote]));
    let ca = ca_cert.as_str();

    // No credentials: refused.
    let o = ironpod(&root, &["push", "-q", "--ca-file", ca, &remote]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // Wrong password: login checks it with the registry and stores nothing.
    let o = try_login(&root, &reg.host(), "alice", "wrong", &["--ca-file", ca]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(!root.join("auth.json").exists());
    // Right password, CA trusted: works both ways.
    login(&root, &reg.host(), "alice", "wonderland", &["--ca-file", ca]);
    let auth = std::fs::metadata(root.join("auth.json")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(auth.mode() & 0o777, 0o600);
    ok(&ironpod(&root, &["push", "-q", "--ca-file", ca, &remote]));
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(root.join("auth.json"), b.join("auth.json")).unwrap();
    ok(&ironpod(&b, &["pull", "-q", "--ca-file", ca, &remote]));
    assert_eq!(manifest_of(&b, &remote), manifest_of(&root, "demo"));
    // Without trusting the CA the TLS handshake fails (and plain HTTP is not spoken there).
    let o = ironpod(&b, &["pull", "-q", &remote]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    ok(&ironpod(&root, &["logout", &reg.host()]));
    assert_eq!(ironpod(&root, &["logout", &reg.host()]).status.code(), Some(1));
}

fn login(root: &Path, host: &str, user: &str, password: &str, extra: &[&str]) {
    let o = try_login(root, host, user, password, extra);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "Login Succeeded");
}

fn try_login(root: &Path, host: &str, user: &str, password: &str, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ironpod"))
        .arg("--root")
        .arg(root)
        .args(["login", host, "-u", user, "--password-stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(c.stdin.take().unwrap(), "{password}").unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn skopeo_interop_through_the_registry_and_parallel_pulls() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let t = tarball(dir.path(), "interop", "interop\n");
    ok(&ironpod(&a, &["import", t.to_str().unwrap(), "demo"]));
    let ours = format!("{}/interop/ours:v1", reg.host());
    ok(&ironpod(&a, &["tag", "demo", &ours]));
    ok(&ironpod(&a, &["push", "-q", &ours]));
    // skopeo pulls what we pushed, byte for byte...
    let layout = dir.path().join("layout");
    let sk = |args: &[&str]| {
        let o = Command::new("skopeo")
            .args(args)
            .output()
            .expect("skopeo is installed by `cargo xtask deps`");
        assert!(o.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        o
    };
    sk(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{ours}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let raw = sk(&["inspect", "--raw", &format!("oci:{}:x", layout.display())]);
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let ia: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&a, &["image", "inspect", "demo"]))).unwrap();
    assert_eq!(m["config"]["digest"], ia[0]["id"]);
    // ...and pushes an image we pull.
    let theirs = format!("{}/interop/theirs:v1", reg.host());
    sk(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:x", layout.display()),
        &format!("docker://{theirs}"),
    ]);
    // Two processes pull into one store at once; both succeed and the store is consistent.
    let b = dir.path().join("b");
    let spawn = |r: &str| {
        Command::new(env!("CARGO_BIN_EXE_ironpod"))
            .arg("--root")
            .arg(&b)
            .args(["pull", "-q", r])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn(&theirs), spawn(&ours));
    for p in [p1, p2] {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(manifest_of(&b, &ours), manifest_of(&a, "demo"));
    let ib: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&b, &["image", "inspect", &theirs]))).unwrap();
    assert_eq!(ib[0]["id"], ia[0]["id"]);
}

/// A token server for the registry's bearer-token auth: checks basic credentials and issues
/// RS256 JWTs signed with a certificate the registry trusts (x5c header).
fn token_server(
    key: PathBuf,
    cert_der_b64: String,
    user: &'static str,
    password: &'static str,
) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let mut authorized = false;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                use base64::Engine;
                let expected =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                if h.to_ascii_lowercase().starts_with("authorization: basic ")
                    && h.trim_end().ends_with(&expected)
                {
                    authorized = true;
                }
            }
            if !authorized {
                let _ = s.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let query = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .split_once('?')
                .map(|(_, q)| q.to_string())
                .unwrap_or_default();
            let mut access = Vec::new();
            for kv in query.split('&') {
                if let Some(scope) = kv.strip_prefix("scope=") {
                    let scope = scope.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/");
                    let parts: Vec<&str> = scope.split(':').collect();
                    if parts.len() == 3 {
                        access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                    }
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let b64 = |v: &[u8]| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
            };
            let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [cert_der_b64]});
            let claims = serde_json::json!({"iss": "ironpod-test-issuer", "sub": user, "aud": "ironpod-test",
                "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("{now}{port}"), "access": access});
            let signing_input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let mut sign = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            sign.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
            let sig = sign.wait_with_output().unwrap().stdout;
            let token = format!("{signing_input}.{}", b64(&sig));
            let body =
                serde_json::json!({"token": token, "access_token": token, "expires_in": 600})
                    .to_string();
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
        }
    });
    port
}

#[test]
fn bearer_token_auth_through_the_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert, der) =
        (dir.path().join("tok.key"), dir.path().join("tok.pem"), dir.path().join("tok.der"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=token signer",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .arg("-out")
        .arg(&der)
        .output()
        .unwrap();
    assert!(o.status.success());
    let der_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&der).unwrap())
    };
    let tport = token_server(key, der_b64, "bob", "builder");
    let extra = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: ironpod-test\n    issuer: ironpod-test-issuer\n    rootcertbundle: {}\n",
        cert.display()
    );
    let reg = Registry::start_with(&extra);
    let root = dir.path().join("a");
    let t = tarball(dir.path(), "token", "token\n");
    ok(&ironpod(&root, &["import", t.to_str().unwrap(), "demo"]));
    let remote = format!("{}/secure/app:v1", reg.host());
    ok(&ironpod(&root, &["tag", "demo", &remote]));
    // Anonymous: the token server refuses, so the registry does too.
    assert_eq!(ironpod(&root, &["push", "-q", &remote]).status.code(), Some(1));
    // Login asks the token server, which refuses a wrong password.
    assert_eq!(try_login(&root, &reg.host(), "bob", "wrong", &[]).status.code(), Some(1));
    login(&root, &reg.host(), "bob", "builder", &[]);
    ok(&ironpod(&root, &["push", "-q", &remote]));
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(root.join("auth.json"), b.join("auth.json")).unwrap();
    ok(&ironpod(&b, &["pull", "-q", &remote]));
    assert_eq!(manifest_of(&b, &remote), manifest_of(&root, "demo"));
}

#[test]
fn big_layers_push_in_chunks_and_docker_schema2_pulls() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    // 12 MiB of incompressible content: the layer is pushed in chunks (PATCH).
    let rootfs = dir.path().join("rootfs-big");
    std::fs::create_dir_all(&rootfs).unwrap();
    let data = noise(12 << 20, 0x2545f4914f6cdd1d);
    std::fs::write(rootfs.join("blob"), &data).unwrap();
    let t = dir.path().join("big.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&t)
        .arg(".")
        .status()
        .unwrap()
        .success());
    ok(&ironpod(&a, &["import", t.to_str().unwrap(), "big"]));
    let remote = format!("{}/big/app:v1", reg.host());
    ok(&ironpod(&a, &["tag", "big", &remote]));
    ok(&ironpod(&a, &["push", "-q", &remote]));
    let b = dir.path().join("b");
    ok(&ironpod(&b, &["pull", "-q", &remote]));
    assert_eq!(manifest_of(&b, &remote), manifest_of(&a, "big"));

    // skopeo rewrites it as a Docker schema-2 image; we pull, inspect, save and load that.
    let v2 = format!("{}/big/docker:v2s2", reg.host());
    let o = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--format",
            "v2s2",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{remote}"))
        .arg(format!("docker://{v2}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = dir.path().join("c");
    ok(&ironpod(&c, &["pull", "-q", &v2]));
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&c, &["image", "inspect", &v2]))).unwrap();
    assert_eq!(
        inspect[0]["manifest_json"]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        inspect[0]["manifest_json"]["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let saved = dir.path().join("v2.tar");
    ok(&ironpod(&c, &["save", "-o", saved.to_str().unwrap(), &v2]));
    let d = dir.path().join("d");
    ok(&ironpod(&d, &["load", "-i", saved.to_str().unwrap()]));
    assert_eq!(manifest_of(&d, &v2), manifest_of(&c, &v2));
}

#[test]
fn progress_bars_on_a_terminal_plain_lines_otherwise() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let t = tarball(dir.path(), "progress", "progress\n");
    ok(&ironpod(&a, &["import", t.to_str().unwrap(), "demo"]));
    let remote = format!("{}/progress/app:v1", reg.host());
    ok(&ironpod(&a, &["tag", "demo", &remote]));
    ok(&ironpod(&a, &["push", "-q", &remote]));
    // Not a terminal: one plain line per blob.
    let o = ironpod(&dir.path().join("b"), &["pull", &remote]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("Downloading") && err.contains("bytes)"), "{err}");
    // On a terminal (script(1) gives the command a pty): bars with byte counts.
    let cmd = format!(
        "{} --root {} pull {remote}",
        env!("CARGO_BIN_EXE_ironpod"),
        dir.path().join("c").display()
    );
    let o = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("Downloading") && out.contains("B/") && !out.contains("bytes)"), "{out}");
}
