//! `cargo xtask bench build`: a 6-step Dockerfile (FROM, COPY, three RUN, CMD) on the demo
//! image, built cold (`--no-cache`) and again unchanged (every step from the cache), by
//! `ironpod build` (each RUN in a microVM) and by Debian's podman 4.3 (`podman build`, each
//! RUN in a runc container), on the same machine, the same base image and context, in
//! alternating order.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::{stats, BenchRoot, Podman};

/// The benchmark's Dockerfile.
const DOCKERFILE: &str = r#"FROM demo
COPY app/ /app/
RUN mkdir -p /srv && cp -r /app /srv/app && ls -lR /srv > /srv/index
RUN for i in $(seq 1 500); do echo "line $i" >> /srv/log; done && sha256sum /srv/log > /srv/log.sum
RUN echo 'web:x:1000:1000::/srv:/bin/sh' >> /etc/passwd && chown -R 1000:1000 /srv
CMD ["cat", "/srv/index"]
"#;

/// Files in the context's `app/` and the size of each.
const FILES: usize = 100;
const FILE_BYTES: usize = 16 * 1024;

/// Writes the context: the Dockerfile and `app/` (deterministic contents).
fn context(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE)?;
    let app = dir.join("app");
    std::fs::create_dir_all(&app)?;
    let mut x: u32 = 0x1234_5678;
    for i in 0..FILES {
        let data: Vec<u8> = (0..FILE_BYTES)
            .map(|_| {
                // xorshift: contents that do not compress to nothing.
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        std::fs::write(app.join(format!("file{i}.bin")), data)?;
    }
    Ok(())
}

/// Runs `cmd`, which must succeed; seconds it took.
fn timed(what: &str, cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| what.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

fn row(what: &str, v: &mut [f64]) {
    let (median, min, max) = stats(v);
    println!("| {what} | {median:.2} | {min:.2} | {max:.2} |");
}

/// The measuring part; runs where KVM is.
pub fn driver(runs: usize) -> Result<()> {
    let b = BenchRoot::new()?;
    let podman = Podman::new(&b)?;
    let ctx = tempfile::tempdir()?;
    context(ctx.path())?;
    let c = ctx.path().to_string_lossy().into_owned();
    let ironpod = |args: &[&str]| -> Command {
        let mut cmd = Command::new(crate::util::target_dir().join("release/ironpod"));
        cmd.arg("--root").arg(b.root.path()).arg("build").args(args).arg(&c);
        cmd
    };
    let podman_build = |args: &[&str]| -> Command {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        all.push(&c);
        podman.cmd(&all)
    };
    let (mut cold, mut cached, mut peer_cold, mut peer_cached) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        for k in 0..2 {
            if (run + k) % 2 == 0 {
                cold.push(timed("ironpod build", &mut ironpod(&["--no-cache", "-t", "bb"]))?);
                cached.push(timed("ironpod build (cached)", &mut ironpod(&["-t", "bb"]))?);
            } else {
                let what = "podman build";
                peer_cold.push(timed(what, &mut podman_build(&["--no-cache", "-t", "bb"]))?);
                peer_cached.push(timed(what, &mut podman_build(&["-t", "bb"]))?);
            }
        }
        eprintln!(
            "run {}: ironpod cold {:.2} s cached {:.2} s; podman cold {:.2} s cached {:.2} s",
            run + 1,
            cold[run],
            cached[run],
            peer_cold[run],
            peer_cached[run]
        );
    }
    // Both results run the same way.
    let ours = b.ip(&["run", "--rm", "bb", "sh", "-c", "wc -l < /srv/log; stat -c %u /srv/log"])?;
    let theirs =
        podman.ok(&["run", "--rm", "bb", "sh", "-c", "wc -l < /srv/log; stat -c %u /srv/log"])?;
    if ours != theirs || ours != "500\n1000\n" {
        bail!("the two images differ: ironpod {ours:?}, podman {theirs:?}");
    }
    println!("| `build` of a 6-step Dockerfile ({runs} runs each; s) | median | min | max |");
    println!("|---|---|---|---|");
    row("ironpod: cold (`--no-cache`), each RUN in a microVM", &mut cold);
    row("podman 4.3: cold (`--no-cache`), each RUN in a runc container", &mut peer_cold);
    row("ironpod: unchanged rebuild (every step cached)", &mut cached);
    row("podman 4.3: unchanged rebuild (every step cached)", &mut peer_cached);
    Ok(())
}
