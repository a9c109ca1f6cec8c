//! Helpers shared by the CLI test binaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `ironpod --root ROOT ARGS…`.
pub fn ironpod(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironpod")).arg("--root").arg(root).args(args).output().unwrap()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The manifest digest of an image in a store.
pub fn manifest_of(root: &Path, r: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(root, &["image", "inspect", r]))).unwrap();
    v[0]["manifest"].as_str().unwrap().to_string()
}

/// A rootfs tarball `DIR/NAME.tar` holding `etc/motd` with `content`.
pub fn tarball(dir: &Path, name: &str, content: &str) -> PathBuf {
    let rootfs = dir.join(format!("rootfs-{name}"));
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), content).unwrap();
    let t = dir.join(format!("{name}.tar"));
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&t)
        .arg(".")
        .status()
        .unwrap()
        .success());
    t
}

/// `len` bytes of incompressible (xorshift) data.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs skopeo, asserting success.
pub fn skopeo(args: &[&str]) -> Output {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by `cargo xtask deps`");
    assert!(o.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Debian's docker.io 20.10 CLI, put there by `cargo xtask test` (its dependency step).
pub fn docker_cli() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("IRONPOD_DOCKER_CLI")
            .unwrap_or_else(|_| "/var/cache/ironpod/docker-cli/docker".into()),
    );
    assert!(
        p.is_file(),
        "{} is missing: `cargo xtask test` installs Debian's docker CLI there",
        p.display()
    );
    p
}

/// The lines of a successful command's stdout.
pub fn lines(o: &Output) -> Vec<String> {
    ok(o).lines().map(str::to_string).collect()
}

/// Asserts the command failed with `text` in its stderr.
pub fn fails_with(o: &Output, text: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(text), "want failure {text:?}, got {o:?}");
}

/// Children that die with the test process.
trait ParentDeath {
    fn pre_exec_parent_death(&mut self) -> &mut Self;
}

impl ParentDeath for Command {
    fn pre_exec_parent_death(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl with integer arguments only, async-signal-safe, in the child
        // between fork and exec.
        unsafe {
            self.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        }
    }
}

/// `ironpod system service` on a socket of its own, for the docker CLI and curl.
pub struct Service {
    /// The service process.
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
}

impl Service {
    /// Starts it and waits until it listens.
    pub fn start(root: &Path, socket: &Path, extra: &[&str]) -> Service {
        let child = Command::new(env!("CARGO_BIN_EXE_ironpod"))
            .arg("--root")
            .arg(root)
            .args(["system", "service", "--socket"])
            .arg(format!("unix://{}", socket.display()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // The service dies with the test process, even one that panics in a thread.
            .pre_exec_parent_death()
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "the service did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Service { child, socket: socket.to_path_buf() }
    }

    /// `docker -H unix://SOCKET ARGS…`.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_env(args, &[])
    }

    /// With extra environment.
    pub fn docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(docker_cli())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.socket.parent().unwrap().join("docker-config"))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// curl over the socket: (status line + headers, body).
    pub fn curl(&self, args: &[&str]) -> (String, String) {
        let o = Command::new("curl")
            .args(["-s", "-i", "--unix-socket"])
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        (head.to_string(), body.to_string())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's docker-registry on 127.0.0.1 with private storage.
pub struct Registry {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a plain one.
    pub fn start() -> Registry {
        Self::start_with("")
    }

    /// Starts a registry; `extra` is appended to its YAML config (under `http:` first).
    pub fn start_with(extra: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed by `cargo xtask deps`");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port, _dir: dir }
    }

    /// `localhost:PORT`.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// path → (kind, mode, uid, gid, contents or link target)
pub type Tree = std::collections::BTreeMap<String, (char, u32, u64, u64, String)>;

/// Stacks layer tars (whiteouts applied) into one tree (what `build` tests compare).
pub fn layer_tree(layers: Vec<Box<dyn std::io::Read + '_>>) -> Tree {
    let mut t = Tree::new();
    for layer in layers {
        let mut a = tar::Archive::new(layer);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            if p.is_empty() || p == "." {
                continue;
            }
            let (dir, name) = p
                .rsplit_once('/')
                .map_or((String::new(), p.clone()), |(d, n)| (d.to_string(), n.to_string()));
            let under = |d: &str| if d.is_empty() { String::new() } else { format!("{d}/") };
            if name == ".wh..wh..opq" {
                let pre = under(&dir);
                t.retain(|k, _| !k.starts_with(&pre));
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let target = format!("{}{gone}", under(&dir));
                let pre = format!("{target}/");
                t.retain(|k, _| *k != target && !k.starts_with(&pre));
                continue;
            }
            let h = e.header().clone();
            let (kind, data) = match h.entry_type() {
                tar::EntryType::Directory => ('d', String::new()),
                tar::EntryType::Symlink => {
                    ('l', e.link_name().unwrap().unwrap().to_string_lossy().into_owned())
                }
                _ => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                    ('f', s)
                }
            };
            t.insert(
                p,
                (kind, h.mode().unwrap() & 0o7777, h.uid().unwrap(), h.gid().unwrap(), data),
            );
        }
    }
    t
}

/// The files of image `image`'s layers from the `skip`th up, as one tree.
pub fn image_tree(store: &ironpod_images::ImageStore, image: &str, skip: usize) -> Tree {
    let d = store.resolve(image).unwrap();
    let layers = store.layers_of(&d).unwrap();
    layer_tree(layers.iter().skip(skip).map(|l| store.open_layer(l).unwrap()).collect())
}
