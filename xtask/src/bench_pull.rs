//! `cargo xtask bench pull`: a ~200 MB, 5-layer image from a local docker-registry, pulled by
//! ironpod and by `skopeo copy` to an OCI directory, alternating, in one run; then the time
//! to turn its layers into read-only disks, the first time and the second (cached) time, and
//! erofs against ext4 for the same trees.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

const LAYERS: usize = 5;
const LAYER_MB: usize = 40;

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(dir: &Path) -> Result<(Registry, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = dir.join("registry.yml");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry-data").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let reg = Registry(child);
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("docker-registry did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((reg, port))
}

fn sha256_file(p: &Path) -> Result<(String, u64)> {
    let out = util::output(Command::new("sha256sum").arg(p))?;
    let hex = out.split_whitespace().next().context("sha256sum output")?.to_string();
    Ok((hex, fs::metadata(p)?.len()))
}

/// Builds a 5-layer OCI layout (random file content, gzip layers) and returns its directory.
fn build_layout(dir: &Path) -> Result<PathBuf> {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..LAYERS {
        let tree = dir.join(format!("tree{i}"));
        fs::create_dir_all(tree.join(format!("data/layer{i}")))?;
        // Many files of mixed sizes, like a real image.
        for f in 0..(LAYER_MB * 4) {
            util::run(
                Command::new("head")
                    .args(["-c", "262144", "/dev/urandom"])
                    .stdout(fs::File::create(tree.join(format!("data/layer{i}/f{f}")))?),
            )?;
        }
        let tar = dir.join(format!("layer{i}.tar"));
        util::run(
            Command::new("tar")
                .args(["--sort=name", "--mtime=@0", "-C"])
                .arg(&tree)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        diff_ids.push(format!("sha256:{}", sha256_file(&tar)?.0));
        util::run(Command::new("gzip").args(["-1", "-f"]).arg(&tar))?;
        let gz = dir.join(format!("layer{i}.tar.gz"));
        let (hex, size) = sha256_file(&gz)?;
        fs::rename(&gz, blobs.join(&hex))?;
        layers.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{hex}"), "size": size}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))?;
    let put = |data: &[u8]| -> Result<(String, usize)> {
        let p = dir.join("tmp-blob");
        fs::write(&p, data)?;
        let (hex, _) = sha256_file(&p)?;
        fs::rename(&p, blobs.join(&hex))?;
        Ok((format!("sha256:{hex}"), data.len()))
    };
    let (cd, cs) = put(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }))?;
    let (md, ms) = put(&manifest)?;
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
             "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))?,
    )?;
    Ok(layout)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn dir_size(p: &Path) -> u64 {
    util::output(Command::new("du").args(["-sb"]).arg(p))
        .ok()
        .and_then(|o| o.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Runs the benchmark and prints a markdown table.
pub fn run(runs: usize) -> Result<()> {
    crate::deps::ensure()?;
    util::build_release_bins()?;
    let ironpod = util::target_dir().join("release/ironpod");
    let work = Path::new("/var/tmp/ironpod-bench-pull");
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work)?;
    eprintln!("bench pull: building a {LAYERS}-layer image of ~{} MB", LAYERS * LAYER_MB);
    let layout = build_layout(work)?;
    let (_reg, port) = start_registry(work)?;
    let image = format!("localhost:{port}/bench/big:v1");
    util::run(
        Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{image}")),
    )?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let root = work.join(format!("root{i}"));
        let t = Instant::now();
        util::run(Command::new(&ironpod).arg("--root").arg(&root).args(["pull", "-q", &image]))?;
        ours.push(t.elapsed().as_secs_f64());
        let dst = work.join(format!("skopeo{i}"));
        let t = Instant::now();
        util::run(
            Command::new("skopeo")
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{image}"))
                .arg(format!("oci:{}:v1", dst.display())),
        )?;
        theirs.push(t.elapsed().as_secs_f64());
        eprintln!("run {}: ironpod {:.2} s, skopeo {:.2} s", i + 1, ours[i], theirs[i]);
        if i > 0 {
            let _ = fs::remove_dir_all(&root);
        }
        let _ = fs::remove_dir_all(&dst);
    }
    // Layer disks: first build, then the cached second call.
    let store = ironpod_images::ImageStore::open(&work.join("root0"))?;
    let t = Instant::now();
    let disks = store.layer_disks(&image)?;
    let first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.layer_disks(&image)?;
    let second = t.elapsed().as_secs_f64();
    let erofs_bytes: u64 =
        disks.iter().map(|d| fs::metadata(d).map(|m| m.len()).unwrap_or(0)).sum();
    // ext4 for the same trees (mkfs.ext4 -d needs a size: content + 20 % + 8 MiB).
    let t = Instant::now();
    let mut ext4_bytes = 0;
    for i in 0..LAYERS {
        let tree = work.join(format!("tree{i}"));
        let img = work.join(format!("layer{i}.ext4"));
        let size = dir_size(&tree) * 12 / 10 + (8 << 20);
        fs::File::create(&img)?.set_len(size)?;
        util::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&tree)
                .arg(&img)
                .stdout(Stdio::null()),
        )?;
        ext4_bytes += size;
    }
    let ext4_time = t.elapsed().as_secs_f64();
    let mut erofs_trees = 0.0;
    for i in 0..LAYERS {
        let t = Instant::now();
        let img = work.join(format!("layer{i}.erofs"));
        util::run(
            Command::new("mkfs.erofs").arg("--quiet").arg(&img).arg(work.join(format!("tree{i}"))),
        )?;
        erofs_trees += t.elapsed().as_secs_f64();
    }
    println!("| pull, {LAYERS} layers, ~{} MB, local docker-registry ({runs} runs) | median | min | max |", LAYERS * LAYER_MB);
    println!("|---|---|---|---|");
    let row = |name: &str, v: &mut Vec<f64>| {
        let mut s = v.clone();
        let m = median(&mut s);
        println!("| {name} | {m:.2} s | {:.2} s | {:.2} s |", s[0], s[s.len() - 1]);
    };
    row("ironpod pull", &mut ours);
    row("skopeo copy docker:// → oci:", &mut theirs);
    println!();
    println!("| layer disks for that image | time | size |");
    println!("|---|---|---|");
    println!(
        "| first `layer_disks` (unpack + mkfs.erofs, {LAYERS} layers) | {first:.2} s | {:.0} MB |",
        erofs_bytes as f64 / 1e6
    );
    println!("| second `layer_disks` (cached) | {:.3} s | — |", second);
    println!(
        "| mkfs.erofs from the unpacked trees | {erofs_trees:.2} s | {:.0} MB |",
        erofs_bytes as f64 / 1e6
    );
    println!(
        "| mkfs.ext4 -d from the same trees | {ext4_time:.2} s | {:.0} MB allocated |",
        ext4_bytes as f64 / 1e6
    );
    let _ = fs::remove_dir_all(work);
    Ok(())
}
