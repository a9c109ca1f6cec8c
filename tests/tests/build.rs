//! `ironpod build` with RUN steps, each in a microVM of its own: output streamed, the
//! step's changes as its layer, USER names from /etc/passwd, build arguments in RUN's
//! environment, the cache (a second build makes no VM), a failing RUN, a RUN that looks
//! for the host (its files, its loopback), byte-identical layers with `--timestamp`, and
//! RUN steps whose results match what Debian's podman 4.3 builds from the same Dockerfile.

use std::fs;

use std::io::{Read, Write};
use std::net::TcpListener;

use ironpod_tests::{require_linux_kvm, text, TestRoot};

/// Answers every HTTP request on the host's 127.0.0.1 with `body`; the port.
fn serve_on_host_loopback(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = write!(c, "HTTP/1.0 200 OK\r\n\r\n{body}");
        }
    });
    port
}

const DOCKERFILE: &str = r#"FROM demo
ARG WHO=world
RUN echo "hello $WHO" > /greeting && echo "step output: $WHO"
RUN echo 'builder:x:1234:1234::/home/builder:/bin/sh' >> /etc/passwd \
 && echo 'builder:x:1234:' >> /etc/group \
 && mkdir -p /home/builder && chown 1234:1234 /home/builder
USER builder
WORKDIR /home/builder
RUN id -u > uid && touch made-by-builder
USER root
COPY probe.sh /probe.sh
RUN sh /probe.sh
CMD ["cat", "/greeting"]
"#;

/// Looks for the host from inside a RUN: the build context (nothing of it is mounted),
/// the host's files, the host's loopback (the test serves on it).
const PROBE: &str = r#"set -u
if grep -qE ' (virtiofs|9p) ' /proc/mounts; then echo context-mounted > /checks; else echo context-not-mounted > /checks; fi
[ -e /etc/ironpod-host-marker ] && echo saw-host-file >> /checks || echo no-host-file >> /checks
if wget -q -T 3 -O- http://127.0.0.1:PORT/ >/dev/null 2>&1; then echo reached-host-loopback >> /checks; else echo no-host-loopback >> /checks; fi
"#;

#[test]
fn dockerfiles_with_run_steps_build_in_microvms() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    // Something on the host's loopback, and a file only the host has.
    let port = serve_on_host_loopback("host-secret");
    // Something listens there (for the host).
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the host's server");
    fs::write("/etc/ironpod-host-marker", "host\n").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(ctx.path().join("probe.sh"), PROBE.replace("PORT", &port.to_string())).unwrap();
    let c = ctx.path().to_string_lossy().into_owned();

    let out = root.ironpod(&["build", "-t", "built", "--build-arg", "WHO=ironpod", &c]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(" ---> Running in "), "{stdout}");
    assert!(stdout.contains("step output: ironpod\n"), "the step's output streams: {stdout}");
    assert!(stdout.contains("Removing intermediate container "), "{stdout}");
    assert!(stdout.contains("Successfully tagged built:latest"), "{stdout}");
    assert_eq!(root.ok(&["run", "--rm", "built"]), "hello ironpod\n");
    // USER by name (from the passwd a RUN wrote), WORKDIR, and what the RUN made.
    let check = root.ok(&[
        "run",
        "--rm",
        "built",
        "sh",
        "-c",
        "cat /home/builder/uid; stat -c %u /home/builder/made-by-builder; cat /checks",
    ]);
    assert_eq!(
        check, "1234\n1234\ncontext-not-mounted\nno-host-file\nno-host-loopback\n",
        "{stdout}"
    );
    let hist = root.ok(&["history", "built"]);
    assert!(hist.contains("|1 WHO=ironpod /bin/sh -c echo \"hello $WHO\""), "{hist}");
    // Unchanged: every step from the cache, no VM made.
    let again = root.ironpod(&["build", "-t", "built", "--build-arg", "WHO=ironpod", &c]);
    let again_out = text(&again.stdout);
    assert!(again.status.success(), "{again_out}");
    assert!(!again_out.contains("Running in"), "{again_out}");
    assert_eq!(again_out.matches(" ---> Using cache").count(), 10, "{again_out}");
    // Another build argument: the RUN that sees it runs again.
    let other = text(&root.ironpod(&["build", "--build-arg", "WHO=you", &c]).stdout);
    assert!(other.contains("step output: you"), "{other}");
    // A failing RUN: its output, its code, exit 1; nothing left behind.
    let failing = tempfile::tempdir().unwrap();
    fs::write(failing.path().join("Dockerfile"), "FROM demo\nRUN echo failing-now; exit 3\n")
        .unwrap();
    let f = root.ironpod(&["build", &failing.path().to_string_lossy()]);
    assert_eq!(f.status.code(), Some(1));
    assert!(text(&f.stdout).contains("failing-now"), "{}", text(&f.stdout));
    assert!(
        text(&f.stderr).contains(
            "Dockerfile:2: The command '/bin/sh -c echo failing-now; exit 3' returned a non-zero code: 3"
        ),
        "{}",
        text(&f.stderr)
    );
    assert_eq!(root.ok(&["ps", "-a", "-q"]), "", "build containers are removed");
    // --timestamp: a RUN's layer is the same bytes when made again.
    let repro = tempfile::tempdir().unwrap();
    fs::write(
        repro.path().join("Dockerfile"),
        "FROM demo\nRUN mkdir -p /out && echo fixed > /out/file && touch /out/new\n",
    )
    .unwrap();
    let mut layers = Vec::new();
    for tag in ["r1", "r2"] {
        let r = repro.path().to_string_lossy();
        root.ok(&["build", "--no-cache", "--timestamp", "1700000000", "-t", tag, &r]);
        let v: serde_json::Value =
            serde_json::from_str(&root.ok(&["image", "inspect", tag])).unwrap();
        let l = &v[0]["manifest_json"]["layers"];
        layers.push(l.as_array().unwrap().last().unwrap()["digest"].clone());
    }
    assert_eq!(layers[0], layers[1]);
    let _ = fs::remove_file("/etc/ironpod-host-marker");
    same_run_results_as_podman(&root);
}

/// RUN steps that make, change, link, chown and delete files (also the base image's).
const RUN_STEPS: &str = r#"FROM demo
RUN mkdir -p /srv/a/b && echo one > /srv/a/file && chmod 640 /srv/a/file \
 && ln -s a/file /srv/link && ln /srv/a/file /srv/hard && echo gone > /srv/gone
RUN echo 'svc:x:1234:1234::/home/svc:/bin/sh' >> /etc/passwd && echo 'svc:x:1234:' >> /etc/group \
 && mkdir -p /home/svc && chown svc:svc /home/svc && rm /bin/vi /srv/gone
RUN chown -R svc:svc /srv/a && rm /srv/hard && mkdir /srv/sticky && chmod 1777 /srv/sticky \
 && echo two >> /srv/a/file && mkfifo /srv/a/fifo
"#;

/// What the RUN steps left, as a container of the image sees it: kinds, modes, owners,
/// link targets, and files' contents by digest (no sizes: a directory's depends on the
/// filesystem under it).
const LISTING: &str = "cd / && find srv home etc/passwd etc/group bin/vi \
 -exec stat -c '%n|%F|%a|%u|%g|%N' {} + 2>&1 | sort; \
 find srv home etc/passwd etc/group -type f -exec md5sum {} + | sort";

/// The same RUN steps built by Debian's podman 4.3 (buildah, chroot isolation) leave the
/// same files, kinds, modes, owners, link targets and contents.
fn same_run_results_as_podman(root: &TestRoot) {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), RUN_STEPS).unwrap();
    let c = ctx.path().to_string_lossy().into_owned();
    root.ok(&["build", "-t", "runs", &c]);
    let ours = root.ok(&["run", "--rm", "runs", "sh", "-c", LISTING]);
    let podman = ironpod_tests::podman::Podman::new_in(root.path());
    let demo = root.path().join("demo.tar");
    let path = "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin";
    podman.ok(&["import", "--change", path, &demo.to_string_lossy(), "localhost/demo:latest"]);
    podman.ok(&["build", "--format", "docker", "--isolation", "chroot", "-t", "runs", &c]);
    let theirs = podman.ok(&["run", "--rm", "--net", "none", "runs", "sh", "-c", LISTING]);
    assert_eq!(ours, theirs, "ironpod's RUN results (left) and podman's (right)");
    assert!(ours.contains("srv/a/file|regular file|640|1234|1234|"), "{ours}");
    assert!(ours.contains("bin/vi: No such file or directory"), "{ours}");
}
