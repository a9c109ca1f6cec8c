//! `ironpod system service` driven by Debian's docker 20.10 CLI with real pods: run (attached,
//! with stdin, --rm, -t), run -d, exec (-i, -d, -e, -w, -it under a pty), logs, inspect,
//! stop, wait, kill, rm (-f), create + start, restart, top, stats, pause, commit, events,
//! cp both ways (running and stopped) and diff, auto-removal, and containers
//! made by one front end seen and handled by the other; restart policies and healthchecks;
//! Debian's docker-compose 1.29 running a three-service app. Every pod boots a real guest.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ironpod_tests::{require_linux_kvm, text, TestRoot};

const DOCKER_CLI: &str = "/var/cache/ironpod/docker-cli/docker";

/// The service, driven with the docker CLI.
struct Service(ironpod_tests::service::Service);

impl std::ops::Deref for Service {
    type Target = ironpod_tests::service::Service;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Service {
    fn start(root: &TestRoot) -> Service {
        Service(ironpod_tests::service::Service::start(root))
    }

    fn start_with(root: &TestRoot, extra: &[&str]) -> Service {
        Service(ironpod_tests::service::Service::start_with(root, extra))
    }

    fn docker(&self, args: &[&str]) -> Output {
        assert!(
            Path::new(DOCKER_CLI).is_file(),
            "{DOCKER_CLI} is missing: `cargo xtask test` installs it"
        );
        Command::new(DOCKER_CLI)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.socket.parent().unwrap().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker ARGS` with `input` on its standard input.
    fn with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut c = Command::new(DOCKER_CLI)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.socket.parent().unwrap().join("docker-config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
        let out = c.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?}: {}{}", text(&o.stdout), text(&o.stderr));
        text(&o.stdout)
    }

    fn fails(&self, args: &[&str], want: &str) {
        let o = self.docker(args);
        assert!(
            !o.status.success() && text(&o.stderr).contains(want),
            "docker {args:?}: want {want:?}, got {o:?}"
        );
    }

    /// Polls `docker ARGS` until its output satisfies `done`.
    fn until(&self, args: &[&str], done: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let out = self.ok(args);
            if done(&out) {
                return out;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "docker {args:?} never satisfied: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `PUT path` with `body` on the service's socket; the status code and the body.
fn raw_put(socket: &Path, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = text(&out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

/// A tar with one file named `name` as given (`..` and all: the tar crate's own setters
/// refuse such names).
fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// `docker cp` out of and into running container `web`, `docker diff`, and what the
/// archive route refuses.
fn copies_files_both_ways(svc: &Service, root: &TestRoot) {
    svc.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo one > /data/a && echo two > /data/sub/b && \
         ln -s /data/a /data/link && chmod 640 /data/a",
    ]);
    let host = root.path().join("cp");
    std::fs::create_dir_all(host.join("in/deep")).unwrap();
    let at = |p: &str| host.join(p).to_str().unwrap().to_string();
    // Out: a directory (links kept as links, modes kept), a file, a directory's content.
    svc.ok(&["cp", "web:/data", &at("out")]);
    assert_eq!(std::fs::read_to_string(host.join("out/a")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(host.join("out/sub/b")).unwrap(), "two\n");
    assert_eq!(std::fs::read_link(host.join("out/link")).unwrap(), Path::new("/data/a"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(host.join("out/a")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    svc.ok(&["cp", "web:/data/sub/b", &at("b.txt")]);
    assert_eq!(std::fs::read_to_string(host.join("b.txt")).unwrap(), "two\n");
    svc.ok(&["cp", "web:/data/.", &at("content")]);
    assert!(host.join("content/sub/b").is_file() && !host.join("content/data").exists());
    svc.fails(&["cp", "web:/nope", &at("x")], "No such container:path");
    // In: a directory into a directory, a file under a new name.
    std::fs::write(host.join("in/deep/f"), "from the host\n").unwrap();
    std::fs::write(host.join("single"), "single\n").unwrap();
    svc.ok(&["cp", &at("in"), "web:/data/"]);
    svc.ok(&["cp", &at("single"), "web:/data/renamed"]);
    let got = svc.ok(&["exec", "web", "cat", "/data/in/deep/f", "/data/renamed"]);
    assert_eq!(got, "from the host\nsingle\n");
    // A link in the container leads inside the container, never to the host.
    svc.ok(&["exec", "web", "ln", "-s", "/", "/data/up"]);
    svc.ok(&["cp", &at("single"), "web:/data/up/etc/"]);
    assert_eq!(svc.ok(&["exec", "web", "cat", "/etc/single"]), "single\n");
    assert!(!Path::new("/etc/single").exists(), "docker cp wrote to the host's /etc");
    // diff: what the container added and changed.
    let diff = svc.ok(&["diff", "web"]);
    for want in ["A /data", "A /data/in/deep/f", "C /etc", "A /etc/single"] {
        assert!(diff.lines().any(|l| l == want), "{want:?} in {diff}");
    }
    assert_eq!(root.ok(&["diff", "web"]), diff, "ironpod diff shows what docker diff shows");
    // ironpod cp copies the same ways.
    root.ok(&["cp", "web:/data/sub", &at("cli-out")]);
    assert_eq!(std::fs::read_to_string(host.join("cli-out/b")).unwrap(), "two\n");
    root.ok(&["cp", "web:/data/.", &at("cli-content")]);
    assert_eq!(std::fs::read_link(host.join("cli-content/link")).unwrap(), Path::new("/data/a"));
    root.ok(&["cp", &at("single"), "web:/data/cli-in"]);
    root.ok(&["cp", &at("in"), "web:/data/sub/"]);
    let got = svc.ok(&["exec", "web", "cat", "/data/cli-in", "/data/sub/in/deep/f"]);
    assert_eq!(got, "single\nfrom the host\n");
    // -L: a link is copied as what it points to, under the link's name, both ways.
    root.ok(&["cp", "-L", "web:/data/link", &at("followed")]);
    std::fs::create_dir_all(host.join("fdir")).unwrap();
    root.ok(&["cp", "-L", "web:/data/link", &at("fdir")]);
    for p in ["followed", "fdir/link"] {
        let meta = std::fs::symlink_metadata(host.join(p)).unwrap();
        assert!(meta.is_file(), "{p} is not a file");
        assert_eq!(std::fs::read_to_string(host.join(p)).unwrap(), "one\n");
    }
    std::os::unix::fs::symlink(host.join("single"), host.join("hlink")).unwrap();
    root.ok(&["cp", "-L", &at("hlink"), "web:/data/"]);
    let got = svc.ok(&["exec", "web", "sh", "-c", "test -f /data/hlink && cat /data/hlink"]);
    assert_eq!(got, "single\n");
    // The archive route refuses entries that leave their directory, and a file as target.
    let web = svc.ok(&["inspect", "-f", "{{.Id}}", "web"]);
    let evil = tar_with("../../evil", b"x");
    let (code, body) =
        raw_put(&svc.socket, &format!("/containers/{}/archive?path=/data", web.trim()), &evil);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("leaves its directory"), "{body}");
    let ok = tar_with("f", b"x");
    let (code, body) =
        raw_put(&svc.socket, &format!("/containers/{}/archive?path=/data/a", web.trim()), &ok);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a directory"), "{body}");
    let (code, _) = raw_put(&svc.socket, "/containers/nosuch/archive?path=/", &ok);
    assert_eq!(code, 404);
    let ls = svc.ok(&["exec", "web", "sh", "-c", "ls / /data"]);
    assert!(!ls.contains("evil"), "{ls}");
}

#[test]
fn docker_cli_runs_and_ends_pods() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let svc = Service::start(&root);

    // run -d: create + start; logs keep stdout and stderr apart.
    let id = svc.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "app=web",
        "-e",
        "GREETING=hi",
        "demo",
        "sh",
        "-c",
        "echo $GREETING; echo err >&2; exec sleep 300",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let state = svc.ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.Running}} {{.Config.Labels.app}}",
        "web",
    ]);
    assert_eq!(state.trim(), "running true web");
    let ps = svc.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.trim().starts_with("web Up "), "{ps}");
    // The CLI sees the service's container.
    assert!(root.ok(&["ps"]).contains(&id[..12]));
    svc.until(&["logs", "web"], |o| o == "hi\n");
    let err = svc.docker(&["logs", "web"]);
    assert_eq!(text(&err.stderr), "err\n");
    let ts = svc.ok(&["logs", "-t", "--tail", "2", "web"]); // the last two: hi, err
    assert!(ts.ends_with("Z hi\n") && ts.starts_with("20"), "{ts}");
    svc.fails(&["rm", "web"], "cannot remove a running container");

    // exec: output apart and the exit code, stdin, env and workdir, detached, a missing
    // program, and a terminal sized as the client's (under a pty made by script(1)).
    assert_eq!(svc.ok(&["exec", "web", "echo", "hi"]), "hi\n");
    let o = svc.docker(&["exec", "web", "sh", "-c", "echo o; echo e >&2; exit 7"]);
    assert_eq!(
        (text(&o.stdout).as_str(), text(&o.stderr).as_str(), o.status.code()),
        ("o\n", "e\n", Some(7)),
        "{o:?}"
    );
    let o = svc.with_input(&["exec", "-i", "web", "sh", "-c", "wc -c"], b"abcdef");
    assert_eq!(text(&o.stdout).trim(), "6", "{o:?}");
    let o = svc.ok(&["exec", "-e", "A=b", "-w", "/tmp", "web", "sh", "-c", "echo $A; pwd"]);
    assert_eq!(o, "b\n/tmp\n");
    svc.ok(&["exec", "-d", "web", "sh", "-c", "echo x > /tmp/f"]);
    svc.until(&["exec", "web", "sh", "-c", "cat /tmp/f 2>/dev/null; true"], |o| o == "x\n");
    let o = svc.docker(&["exec", "web", "nosuch"]);
    assert!(matches!(o.status.code(), Some(126 | 127)), "{o:?}");
    let cmd = format!(
        "stty rows 30 cols 100; {DOCKER_CLI} -H unix://{} exec -it web sh -c 'test -t 0 && stty size'",
        svc.socket.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("DOCKER_CONFIG", svc.socket.parent().unwrap().join("docker-config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(text(&o.stdout).contains("30 100"), "{o:?}");
    // restart keeps the container's changes (its writable disk) and appends to its log.
    svc.ok(&["exec", "web", "sh", "-c", "echo kept > /keep"]);
    svc.ok(&["restart", "-t", "1", "web"]);
    assert_eq!(svc.ok(&["inspect", "-f", "{{.State.Status}}", "web"]).trim(), "running");
    assert_eq!(svc.ok(&["exec", "web", "cat", "/keep"]), "kept\n");
    svc.until(&["logs", "web"], |o| o == "hi\nhi\n");
    // top, stats, pause and unpause, commit (the changes exec made, a new CMD).
    let top = svc.ok(&["top", "web"]);
    assert!(top.starts_with("UID") && top.contains("sleep 300"), "{top}");
    let st =
        svc.ok(&["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.MemUsage}}", "web"]);
    assert!(st.starts_with("web 1 ") && st.contains(" / "), "{st}");
    svc.ok(&["pause", "web"]);
    let st = svc.ok(&["inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "web"]);
    assert_eq!(st.trim(), "paused true");
    assert!(svc.ok(&["ps", "--format", "{{.Status}}"]).contains("(Paused)"));
    svc.fails(&["pause", "web"], "already paused");
    svc.ok(&["unpause", "web"]);
    assert_eq!(svc.ok(&["exec", "web", "echo", "thawed"]), "thawed\n");
    let img = svc.ok(&["commit", "-c", "CMD [\"cat\", \"/tmp/f\"]", "-m", "snap", "web", "snap:1"]);
    assert!(img.trim().starts_with("sha256:"), "{img}");
    let o = svc.docker(&["run", "--rm", "snap:1"]);
    assert_eq!(text(&o.stdout), "x\n", "{o:?}");
    copies_files_both_ways(&svc, &root);
    // What happened to it, as events.
    let ev = svc.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "container=web",
        "--format",
        "{{.Action}}",
    ]);
    for want in ["create", "start", "exec_start: echo hi", "pause", "unpause"] {
        assert!(ev.lines().any(|l| l == want), "{want:?} in {ev}");
    }
    // run -t: the container has a terminal (its output comes raw, with \r\n).
    let o = svc.docker(&["run", "--rm", "-t", "demo", "sh", "-c", "test -t 1 && echo tty"]);
    assert_eq!((text(&o.stdout).as_str(), o.status.code()), ("tty\r\n", Some(0)), "{o:?}");
    // Starting a running container changes nothing (304, as Docker).
    assert_eq!(svc.ok(&["start", "web"]).trim(), "web");

    // stop: the stop signal, then SIGKILL (sleep is PID 1, sh exec'd it, and PID 1 ignores
    // SIGTERM without a handler) → 137.
    assert_eq!(svc.ok(&["stop", "-t", "1", "web"]).trim(), "web");
    assert_eq!(svc.ok(&["wait", "web"]).trim(), "137");
    let st = svc.ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "web"]);
    assert_eq!(st.trim(), "exited 137");
    svc.fails(&["kill", "web"], "is not running");
    // A stopped container's files: read in a VM booted on its disks.
    let kept = root.path().join("kept");
    svc.ok(&["cp", "web:/keep", kept.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "kept\n");
    assert_eq!(svc.ok(&["rm", "web"]).trim(), "web");
    svc.fails(&["inspect", "web"], "No such object: web");
    assert!(!root.ok(&["ps", "-a"]).contains(&id[..12]));

    // create, then start, then wait: the exit code comes through.
    let once = "echo made; echo in-volume > /vol/x; exit 3";
    svc.ok(&["create", "--name", "once", "-v", "oncevol:/vol", "demo", "sh", "-c", once]);
    assert_eq!(svc.ok(&["inspect", "-f", "{{.State.Status}}", "once"]).trim(), "created");
    svc.ok(&["start", "once"]);
    assert_eq!(svc.ok(&["wait", "once"]).trim(), "3");
    assert_eq!(svc.ok(&["logs", "once"]), "made\n");
    // Started again: the same container, its log appended to.
    svc.ok(&["start", "once"]);
    assert_eq!(svc.ok(&["wait", "once"]).trim(), "3");
    assert_eq!(svc.ok(&["logs", "once"]), "made\nmade\n");
    // A stopped container's volume is among its files too.
    let x = root.path().join("from-volume");
    svc.ok(&["cp", "once:/vol/x", x.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&x).unwrap(), "in-volume\n");

    // docker run, attached: output streams apart, the exit code passed through, --rm
    // removes it; stdin piped in with -i, its end reaching the program.
    let t = Instant::now();
    let out = svc.docker(&[
        "run",
        "--rm",
        "--name",
        "att",
        "demo",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    println!("docker run --rm demo sh -c …: {:?}", t.elapsed());
    assert_eq!(
        (text(&out.stdout).as_str(), text(&out.stderr).as_str(), out.status.code()),
        ("out\n", "err\n", Some(7)),
        "{out:?}"
    );
    svc.until(&["ps", "-a", "--format", "{{.Names}}"], |o| !o.lines().any(|l| l == "att"));
    let data: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = svc.with_input(&["run", "--rm", "-i", "demo", "sh", "-c", "wc -c; echo done"], &data);
    assert_eq!(text(&out.stdout), "200000\ndone\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let out = svc.docker(&["run", "--name", "kept", "demo", "sh", "-c", "echo kept"]);
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("kept\n", Some(0)));
    assert_eq!(
        svc.ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "kept"]).trim(),
        "exited 0"
    );
    assert_eq!(svc.ok(&["logs", "kept"]), "kept\n");
    svc.ok(&["rm", "kept"]);

    // kill with a signal; rm -f of a running pod; --rm removes itself.
    svc.ok(&[
        "run",
        "-d",
        "--name",
        "k",
        "demo",
        "sh",
        "-c",
        "trap 'exit 5' USR1; sleep 300 & wait",
    ]);
    svc.until(&["inspect", "-f", "{{.State.Status}}", "k"], |o| o.trim() == "running");
    std::thread::sleep(Duration::from_millis(500)); // the trap is set
    svc.ok(&["kill", "-s", "USR1", "k"]);
    assert_eq!(svc.ok(&["wait", "k"]).trim(), "5");
    // The docker CLI sends `--until 0s` as whole seconds (now, truncated), as Docker's
    // daemon reads it too: an event of the current second is not yet "until now".
    std::thread::sleep(Duration::from_millis(1100));
    let ev = svc.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "container=k",
        "--filter",
        "event=die",
        "--format",
        "{{.Action}} {{index .Actor.Attributes \"exitCode\"}}",
    ]);
    assert_eq!(ev.trim(), "die 5");
    svc.ok(&["run", "-d", "--rm", "--name", "gone", "demo", "true"]);
    svc.until(&["ps", "-a", "--format", "{{.Names}}"], |o| !o.lines().any(|l| l == "gone"));
    root.ok(&["run", "-d", "--name", "fromcli", "demo", "sleep", "300"]);
    let ps = svc.ok(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), "fromcli", "the service sees the CLI's container");
    svc.ok(&["rm", "-f", "fromcli"]);
    svc.ok(&["rm", "once", "k"]);
    svc.ok(&["volume", "rm", "oncevol"]);
    assert!(svc.ok(&["ps", "-aq"]).trim().is_empty());
    assert!(root.ok(&["ps", "-aq"]).trim().is_empty());
}

/// `RestartCount State.Status` of `name`.
fn restarts(svc: &Service, name: &str) -> (u32, String) {
    let o = svc.ok(&["inspect", "-f", "{{.RestartCount}} {{.State.Status}}", name]);
    let (n, st) = o.trim().split_once(' ').unwrap_or_else(|| panic!("inspect: {o}"));
    (n.parse().unwrap(), st.to_string())
}

#[test]
fn restart_policies_and_healthchecks_are_kept() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let svc = Service::start(&root);
    // on-failure:2: restarted twice, then left exited with its code.
    let cmd = ["sh", "-c", "echo ran; exit 3"];
    let mut args = vec!["run", "-d", "--name", "flaky", "--restart", "on-failure:2", "demo"];
    args.extend(cmd);
    svc.ok(&args);
    svc.until(&["inspect", "-f", "{{.RestartCount}} {{.State.Status}}", "flaky"], |o| {
        o.trim() == "2 exited"
    });
    let policy =
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}";
    assert_eq!(svc.ok(&["inspect", "-f", policy, "flaky"]).trim(), "on-failure 2");
    assert_eq!(svc.ok(&["inspect", "-f", "{{.State.ExitCode}}", "flaky"]).trim(), "3");
    svc.until(&["logs", "flaky"], |o| o == "ran\nran\nran\n");
    // always, on a container the ironpod CLI made: the service restarts it when it ends…
    root.ok(&["run", "-d", "--name", "forever", "--restart", "always", "demo", "sleep", "1"]);
    svc.until(&["inspect", "-f", "{{.RestartCount}}", "forever"], |o| o.trim() != "0");
    // …until a user stops it.
    svc.ok(&["stop", "-t", "1", "forever"]);
    svc.until(&["inspect", "-f", "{{.State.Status}}", "forever"], |o| o.trim() == "exited");
    let (stopped_at, _) = restarts(&svc, "forever");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(restarts(&svc, "forever"), (stopped_at, "exited".into()), "restarted after stop");
    // unless-stopped: a VM that dies is restarted; once a user stopped it, it stays so.
    svc.ok(&[
        "run",
        "-d",
        "--name",
        "steady",
        "--restart",
        "unless-stopped",
        "demo",
        "sleep",
        "300",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", "steady"])).unwrap();
    let vmm = doc[0]["Pod"]["VmmPid"].as_i64().unwrap_or_else(|| panic!("VMM pid: {doc}")) as i32;
    // SAFETY: kill with integer arguments, on the pod's VMM.
    assert_eq!(unsafe { libc::kill(vmm, libc::SIGKILL) }, 0);
    svc.until(&["inspect", "-f", "{{.RestartCount}} {{.State.Status}}", "steady"], |o| {
        o.trim() == "1 running"
    });
    svc.ok(&["stop", "-t", "1", "steady"]);
    // When the service starts again: `always` comes back even though a user stopped it (as
    // Docker's daemon does at its start); `unless-stopped` stays stopped.
    drop(svc);
    let svc = Service::start(&root);
    svc.until(&["inspect", "-f", "{{.RestartCount}}", "forever"], |o| {
        o.trim().parse::<u32>().unwrap() > stopped_at
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(restarts(&svc, "steady").1, "exited");
    // A user's start begins a new count.
    svc.ok(&["start", "steady"]);
    assert_eq!(restarts(&svc, "steady"), (0, "running".into()));
    // A kill while it waits to be restarted (or boots for it) cancels the restart.
    svc.ok(&[
        "run",
        "-d",
        "--name",
        "bouncing",
        "--restart",
        "always",
        "demo",
        "sh",
        "-c",
        "exit 1",
    ]);
    svc.until(&["inspect", "-f", "{{.State.Status}}", "bouncing"], |o| o.trim() == "restarting");
    svc.ok(&["kill", "bouncing"]);
    svc.until(&["inspect", "-f", "{{.State.Status}}", "bouncing"], |o| o.trim() == "exited");
    let (killed_at, _) = restarts(&svc, "bouncing");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(restarts(&svc, "bouncing"), (killed_at, "exited".into()), "restarted after kill");
    // --rm and a restart policy do not go together.
    svc.fails(&["run", "--rm", "--restart", "always", "demo", "true"], "onflicting options");
    let o = root.ironpod(&["run", "--rm", "--restart", "always", "demo", "true"]);
    assert!(!o.status.success() && text(&o.stderr).contains("conflicting options"), "{o:?}");
    svc.ok(&["rm", "-f", "flaky", "forever", "steady", "bouncing"]);
    checks_health(&svc, &root);
}

/// A healthcheck probed in the running container: starting, unhealthy after its retries,
/// healthy once the probe passes; ps and events say so.
fn checks_health(svc: &Service, root: &TestRoot) {
    svc.ok(&[
        "run",
        "-d",
        "--name",
        "probed",
        "--health-cmd",
        // What a probe leaves running (holding its output) ends with it.
        "sleep 600 & cat /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "demo",
        "sleep",
        "300",
    ]);
    let st = "{{.State.Health.Status}} {{.State.Health.FailingStreak}}";
    svc.until(&["inspect", "-f", st, "probed"], |o| o.trim() == "unhealthy 2");
    assert!(svc.ok(&["ps", "--format", "{{.Status}}"]).contains("(unhealthy)"));
    let log = svc.ok(&[
        "inspect",
        "-f",
        "{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}|{{end}}",
        "probed",
    ]);
    assert!(log.contains("1 cat: can't open '/tmp/ok'"), "{log}");
    svc.ok(&["exec", "probed", "sh", "-c", "echo fine > /tmp/ok"]);
    svc.until(&["inspect", "-f", st, "probed"], |o| o.trim() == "healthy 0");
    assert!(root.ok(&["ps"]).contains("(healthy)"));
    let ev = svc.ok(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "container=probed",
        "--format",
        "{{.Action}}",
    ]);
    for want in ["health_status: unhealthy", "health_status: healthy"] {
        assert!(ev.lines().any(|l| l == want), "{want:?} in {ev}");
    }
    let cfg = svc.ok(&[
        "inspect",
        "-f",
        "{{.Config.Healthcheck.Test}} {{.Config.Healthcheck.Retries}}",
        "probed",
    ]);
    assert_eq!(cfg.trim(), "[CMD-SHELL sleep 600 & cat /tmp/ok] 2");
    let top = svc.ok(&["top", "probed"]);
    assert!(top.matches("sleep 600").count() <= 1, "probes left processes behind: {top}");
    svc.ok(&["rm", "-f", "probed"]);
    // The ironpod CLI's flags make the same; bad ones are refused.
    let o = root.ironpod(&["run", "--rm", "--health-interval", "5x", "demo", "true"]);
    assert!(!o.status.success() && text(&o.stderr).contains("invalid duration"), "{o:?}");
}

/// The compose file of the three-service app: a data service with a named volume and a
/// healthcheck, a web server (env file, published port, waits for the data service to be
/// healthy) and a worker that fetches the web page by the service's name on the network.
const COMPOSE_APP: &str = r#"version: "2.4"
services:
  data:
    image: demo
    command: ["sh", "-c", "echo stored > /store/v; echo data up; exec sleep 600"]
    volumes: ["store:/store"]
    networks: [back]
    healthcheck:
      test: ["CMD-SHELL", "test -f /store/v"]
      interval: 1s
      retries: 5
  web:
    image: demo
    command: ["sh", "-c", "mkdir -p /www && echo \"$$GREETING\" > /www/index.html && exec httpd -f -p 80 -h /www"]
    env_file: web.env
    ports: ["127.0.0.1:18080:80"]
    networks: [back]
    depends_on:
      data:
        condition: service_healthy
  worker:
    image: demo
    command: ["sh", "-c", "while true; do echo fetched $$(wget -q -O - http://web/); sleep 1; done"]
    networks: [back]
    depends_on: [web]
networks:
  back: {}
volumes:
  store: {}
"#;

/// `GET /` of the published port on loopback.
fn http_get(port: u16) -> String {
    http_get_path(port, "/")
}

/// `GET path` on a loopback port: the whole answer ("" when nothing listens).
fn http_get_path(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn docker_compose_runs_a_three_service_app() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let svc = Service::start_with(&root, &["--metrics-addr", "127.0.0.1:19323"]);
    let dir = root.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), COMPOSE_APP).unwrap();
    std::fs::write(dir.join("web.env"), "GREETING=hello from web\n").unwrap();
    let compose = |args: &[&str]| {
        let o = Command::new("docker-compose")
            .args(args)
            .current_dir(&dir)
            .env("DOCKER_HOST", format!("unix://{}", svc.socket.display()))
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .stdin(Stdio::null())
            .output()
            .expect("docker-compose (cargo xtask test installs it)");
        assert!(
            o.status.success(),
            "docker-compose {args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    };
    compose(&["up", "-d"]);
    let ps = compose(&["ps"]);
    assert!(ps.contains("app_data_1") && ps.contains("Up (healthy)"), "{ps}");
    assert!(ps.contains("app_web_1") && ps.contains("127.0.0.1:18080->80/tcp"), "{ps}");
    assert!(ps.contains("app_worker_1"), "{ps}");
    // The published port reaches the web server; the worker reaches it by name.
    let page = http_get(18080);
    assert!(page.starts_with("HTTP/1.") && page.ends_with("hello from web\n"), "{page}");
    svc.until(&["logs", "app_worker_1"], |o| o.contains("fetched hello from web"));
    let logs = compose(&["logs", "--no-color"]);
    assert!(logs.contains("data_1    | data up") || logs.contains("data_1  | data up"), "{logs}");
    assert!(logs.contains("fetched hello from web"), "{logs}");
    assert_eq!(compose(&["exec", "-T", "data", "cat", "/store/v"]), "stored\n");
    checks_metrics();
    // restart, then scale.
    compose(&["restart", "web"]);
    let t = Instant::now();
    loop {
        let page = http_get(18080);
        if page.ends_with("hello from web\n") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "after restart: {page:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    compose(&["up", "-d", "--scale", "worker=2"]);
    let ps = compose(&["ps"]);
    assert!(ps.contains("app_worker_2") && ps.matches(" Up").count() == 4, "{ps}");
    // down -v: nothing left.
    compose(&["down", "-v"]);
    assert_eq!(svc.ok(&["ps", "-aq"]), "");
    assert!(!svc.ok(&["network", "ls"]).contains("app_back"));
    assert_eq!(svc.ok(&["volume", "ls", "-q"]), "");
    assert!(std::net::TcpStream::connect(("127.0.0.1", 18080)).is_err(), "port still open");
}

/// The service's metrics while the compose app runs: its three pods started (and how long
/// they took), each one's CPU, memory, network and disk figures, the API's requests.
fn checks_metrics() {
    let page = http_get_path(19323, "/metrics");
    assert!(page.starts_with("HTTP/1.") && page.ends_with("# EOF\n"), "{page}");
    let value = |prefix: &str| -> f64 {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in\n{page}"))
    };
    assert!(value(r#"ironpod_pod_starts_total{result="ok"}"#) >= 3.0);
    assert!(value("ironpod_pod_start_duration_seconds_count") >= 3.0);
    assert!(value("ironpod_pod_start_duration_seconds_sum") > 0.0);
    for pod in ["app_data_1", "app_web_1", "app_worker_1"] {
        let labels = |side: &str| format!(r#"name="{pod}",side="{side}"}}"#);
        let series = |metric: &str, tail: &str| {
            page.lines()
                .find(|l| l.starts_with(metric) && l.contains(tail))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{metric} …{tail} in\n{page}"))
        };
        assert!(series("ironpod_pod_memory_bytes{", &labels("guest")) > 0.0);
        assert!(series("ironpod_pod_memory_bytes{", &labels("host")) > 0.0);
        assert!(series("ironpod_pod_cpu_seconds_total{", &labels("host")) > 0.0);
        let dir = |d: &str| format!(r#"name="{pod}",direction="{d}"}}"#);
        // The web server answers and the worker asks; the data service may send nothing.
        let sent = series("ironpod_pod_network_bytes_total{", &dir("transmit"));
        assert!(sent > 0.0 || pod == "app_data_1", "{pod} sent nothing:\n{page}");
        assert!(series("ironpod_pod_block_bytes_total{", &dir("read")) >= 0.0);
    }
    assert!(
        value(r#"ironpod_api_requests_total{method="POST",route="/containers/create",code="201"}"#)
            >= 3.0
    );
}

/// Twenty clients at once, each creating, starting (a pod of its own), using and removing
/// a container: all twenty run side by side, the service stays up and consistent, and
/// nothing is left behind.
#[test]
fn twenty_clients_start_pods_at_once() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let svc = Service::start(&root);
    let names: Vec<String> = (0..20).map(|i| format!("many{i}")).collect();
    let at_once = |work: &(dyn Fn(&str) + Sync)| {
        std::thread::scope(|s| {
            let all: Vec<_> = names.iter().map(|n| s.spawn(move || work(n))).collect();
            for h in all {
                h.join().expect("a client failed");
            }
        })
    };
    let t = Instant::now();
    at_once(&|name| {
        svc.ok(&["create", "--name", name, "demo", "sleep", "600"]);
        svc.ok(&["start", name]);
        assert_eq!(svc.ok(&["exec", name, "echo", name]), format!("{name}\n"));
    });
    eprintln!("20 clients created and started 20 pods in {:?}", t.elapsed());
    let ps = svc.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    let up = ps.lines().filter(|l| l.starts_with("many") && l.ends_with(" running")).count();
    assert_eq!(up, 20, "{ps}");
    assert_eq!(root.ok(&["ps", "-q"]).lines().count(), 20, "the CLI sees the same");
    at_once(&|name| {
        svc.ok(&["rm", "-f", name]);
    });
    assert_eq!(svc.ok(&["ps", "-aq"]), "");
    let t = Instant::now();
    while !ironpod_tests::containerd::processes_with(ironpod_tests::JAILED_VMM).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "VMMs left behind");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(svc.ok(&["version"]).contains("Server"), "the service still answers");
}
