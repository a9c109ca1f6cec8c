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
