//! `POST /build` driven by Debian's docker 20.10 CLI (its classic builder) and by
//! docker-compose 1.29 (docker-py): the context tar sent, Docker's output and exit codes,
//! the image named and listed. Dockerfiles without RUN (those need a guest: the rig's
//! `tests/build.rs` runs them through the CLI).

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::*;

fn base(root: &std::path::Path, dir: &std::path::Path) {
    let tar = tarball(dir, "base", "from base\n");
    ok(&ironpod(root, &["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap(), "base"]));
}

#[test]
fn docker_build_and_compose_build_use_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    base(&root, dir.path());
    let svc = Service::start(&root, &dir.path().join("docker.sock"), &[]);
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("conf")).unwrap();
    fs::write(ctx.join("conf/app.conf"), "x=1\n").unwrap();
    fs::write(ctx.join("secret.key"), "no\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "*.key\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nARG V=1\nENV V=$V\nCOPY conf /etc/app/\nLABEL built=by-docker\nCMD [\"cat\", \"/etc/app/app.conf\"]\n",
    )
    .unwrap();
    let env = [("DOCKER_BUILDKIT", "0")];
    let c = ctx.to_string_lossy().into_owned();
    let out = svc.docker_env(&["build", "-t", "web:1", "--build-arg", "V=2", &c], &env);
    let stdout = ok(&out);
    assert!(stdout.contains("Sending build context to Docker daemon"), "{stdout}");
    assert!(stdout.contains("Step 1/6 : FROM base\n"), "{stdout}");
    assert!(stdout.contains("Step 4/6 : COPY conf /etc/app/\n"), "{stdout}");
    assert!(stdout.contains("Successfully tagged web:1\n"), "{stdout}");
    let images = ok(&svc.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(images.lines().any(|l| l == "web:1"), "{images}");
    let inspect = ok(&svc.docker(&["image", "inspect", "web:1", "--format", "{{json .Config}}"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert!(v["Env"].as_array().unwrap().iter().any(|e| e == "V=2"), "{v}");
    assert_eq!(v["Labels"]["built"], "by-docker", "{v}");
    let history =
        ok(&svc.docker(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", "web:1"]));
    assert!(history.contains("/bin/sh -c #(nop) COPY dir:"), "{history}");
    // -q: only the id; the second time every step comes from the cache.
    let quiet = ok(&svc.docker_env(&["build", "-q", "--build-arg", "V=2", &c], &env));
    assert!(quiet.trim().starts_with("sha256:") && quiet.lines().count() == 1, "{quiet}");
    let again = ok(&svc.docker_env(&["build", "--build-arg", "V=2", &c], &env));
    assert_eq!(again.matches("Using cache").count(), 5, "{again}");
    // docker builder prune empties the cache: the next build makes every step.
    let pruned = ok(&svc.docker(&["builder", "prune", "-f"]));
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    let fresh = ok(&svc.docker_env(&["build", "--build-arg", "V=2", &c], &env));
    assert!(!fresh.contains("Using cache"), "{fresh}");
    // -f naming a Dockerfile elsewhere; a failing build: Docker's exit code 1 and message.
    let other = dir.path().join("Other.dockerfile");
    fs::write(&other, "FROM base\nCOPY missing.txt /x\n").unwrap();
    let o = svc.docker_env(&["build", "-f", &other.to_string_lossy(), &c], &env);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("COPY failed: file not found in build context"), "{err}");
    // BuildKit's protocol is refused with how to get the classic one.
    let o = svc.docker_env(&["build", &c], &[("DOCKER_BUILDKIT", "1")]);
    assert!(!o.status.success());
    // docker-compose builds the service's image through the same endpoint.
    fs::write(
        ctx.join("docker-compose.yml"),
        "version: '3'\nservices:\n  app:\n    build:\n      context: .\n      args:\n        V: '3'\n    image: composed:latest\n",
    )
    .unwrap();
    let o = Command::new("docker-compose")
        .args(["build"])
        .current_dir(&ctx)
        .env("DOCKER_HOST", format!("unix://{}", svc.socket.display()))
        .stdin(Stdio::null())
        .output()
        .expect("docker-compose (cargo xtask deps installs it)");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let inspect = ok(&svc.docker(&[
        "image",
        "inspect",
        "composed:latest",
        "--format",
        "{{json .Config.Env}}",
    ]));
    assert!(inspect.contains("V=3"), "{inspect}");
}

/// Peak resident memory (KiB) of process `pid` so far.
fn peak_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `cmd` to its end; (exit status, its peak resident memory in KiB).
fn run_measured(cmd: &mut Command) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    // Waited by wait4 below (which std's Child cannot give the usage of).
    #[allow(clippy::zombie_processes)]
    let child = cmd.stdout(Stdio::null()).stdin(Stdio::null()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: status and usage are valid for writes; the child is ours and not waited yet.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (std::process::ExitStatus::from_raw(status), usage.ru_maxrss as u64)
}

/// A context far larger than the memory either builder may use: `ironpod build` reads it in
/// place and streams the COPY, the service spools the docker CLI's tar to disk.
#[test]
fn a_huge_context_is_streamed_not_held_in_memory() {
    const BIG: u64 = 256 << 20;
    const LIMIT_KIB: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    base(&root, dir.path());
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let big = fs::File::create(ctx.join("big.bin")).unwrap();
    big.set_len(BIG).unwrap();
    drop(big);
    fs::write(ctx.join("Dockerfile"), "FROM base\nCOPY big.bin /big.bin\n").unwrap();
    let c = ctx.to_string_lossy().into_owned();
    let (status, kib) = run_measured(
        Command::new(env!("CARGO_BIN_EXE_ironpod"))
            .arg("--root")
            .arg(&root)
            .args(["build", "-t", "huge:cli", &c]),
    );
    assert!(status.success());
    eprintln!("ironpod build: peak {kib} KiB");
    assert!(kib < LIMIT_KIB, "ironpod build peaked at {kib} KiB for a 256 MiB context");
    let history = ok(&ironpod(&root, &["history", "huge:cli"]));
    assert!(history.contains("COPY file:"), "{history}");
    let svc = Service::start(&root, &dir.path().join("docker.sock"), &[]);
    let out = svc.docker_env(&["build", "-t", "huge:api", &c], &[("DOCKER_BUILDKIT", "0")]);
    let stdout = ok(&out);
    assert!(stdout.contains("Sending build context to Docker daemon  268.4MB"), "{stdout}");
    let kib = peak_kib(svc.child.id());
    eprintln!("the service: peak {kib} KiB");
    assert!(kib < LIMIT_KIB, "the service peaked at {kib} KiB for a 256 MiB context");
    // Nothing of the context stays behind.
    let builds = root.join("builds");
    assert_eq!(fs::read_dir(&builds).map(|d| d.count()).unwrap_or(0), 0);
}
