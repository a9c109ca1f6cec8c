//! `ironpod build` of Dockerfiles without RUN steps (they need a guest: the rig's tests
//! build those): Docker's configuration and history, COPY/ADD layers, `.dockerignore`, the
//! cache, stages and targets, reproducible builds, and bad input.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{image_tree, ironpod, ok, Tree};
use serde_json::json;

/// A store with image `base`: /etc/passwd, /etc/group, /etc/motd, /bin (a directory).
fn root_with_base() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1001:\nstaff:x:50:\n").unwrap();
    fs::write(rootfs.join("etc/motd"), "base\n").unwrap();
    let tar = dir.path().join("base.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    ok(&ironpod(
        dir.path(),
        &[
            "import",
            "--change",
            "ENV PATH=/bin",
            "--change",
            "CMD [\"sh\"]",
            &tar.to_string_lossy(),
            "base",
        ],
    ));
    dir
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = dir.path().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
    }
    dir
}

fn build(root: &Path, ctx: &Path, args: &[&str]) -> std::process::Output {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    let c = ctx.to_string_lossy().into_owned();
    a.push(&c);
    ironpod(root, &a)
}

fn store(root: &Path) -> ironpod_images::ImageStore {
    ironpod_images::ImageStore::open(root).unwrap()
}

fn config(root: &Path, image: &str) -> serde_json::Value {
    let s = store(root);
    let d = s.resolve(image).unwrap();
    s.raw_config(&d).unwrap()
}

/// path → (mode, uid, gid, contents).
fn without_kind(t: Tree) -> BTreeMap<String, (u32, u64, u64, String)> {
    t.into_iter().map(|(p, (_, m, u, g, d))| (p, (m, u, g, d))).collect()
}

const EVERYTHING: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=base
FROM ${BASE} AS first
ARG VERSION=1.0
ENV APP_VERSION=$VERSION GREETING="hello world" \
    EMPTY=
LABEL org.example.version=$VERSION "org.example.name"="demo app"
MAINTAINER someone@example.com
WORKDIR /srv
WORKDIR app
COPY --chown=app:staff --chmod=0750 conf/ ./conf/
COPY *.txt /notes/
ADD bundle.tar /opt/
COPY <<EOF /etc/motd
built $APP_VERSION
EOF
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD test -f /etc/motd
ONBUILD RUN echo child
SHELL ["/bin/sh", "-ec"]
USER app
ENTRYPOINT ["/bin/app"]
CMD --serve
"#;

#[test]
fn a_build_writes_docker_s_config_history_and_layers() {
    let root = root_with_base();
    let ctx = context(&[
        ("conf/app.conf", "port=8080\n"),
        ("conf/secret.key", "hidden\n"),
        ("a.txt", "A\n"),
        ("b.txt", "B\n"),
        ("c.md", "not copied\n"),
        (".dockerignore", "**/*.key\n"),
        ("Dockerfile", EVERYTHING),
    ]);
    // A tar to ADD (unpacked) with a file of its own owner.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(7);
    h.set_gid(8);
    b.append_data(&mut h, "tool/bin", &b"abc"[..]).unwrap();
    fs::write(ctx.path().join("bundle.tar"), b.into_inner().unwrap()).unwrap();
    let out = build(
        root.path(),
        ctx.path(),
        &["-t", "app:1", "-t", "app:latest", "--build-arg", "VERSION=2.0", "--label", "extra=yes"],
    );
    let stdout = ok(&out);
    assert!(stdout.starts_with("Step 1/21 : FROM ${BASE} AS first\n"), "{stdout}");
    assert!(stdout.contains("Step 21/21 : LABEL \"extra\"=\"yes\""), "{stdout}");
    assert!(
        stdout.contains("Successfully tagged app:1\nSuccessfully tagged app:latest\n"),
        "{stdout}"
    );
    let c = config(root.path(), "app:1");
    let rc = &c["config"];
    assert_eq!(
        rc["Env"],
        json!(["PATH=/bin", "APP_VERSION=2.0", "GREETING=hello world", "EMPTY="])
    );
    assert_eq!(
        rc["Labels"],
        json!({"org.example.version": "2.0", "org.example.name": "demo app", "extra": "yes"})
    );
    assert_eq!(rc["WorkingDir"], "/srv/app");
    assert_eq!(rc["User"], "app");
    assert_eq!(rc["ExposedPorts"], json!({"8080/tcp": {}, "53/udp": {}}));
    assert_eq!(rc["Volumes"], json!({"/data": {}}));
    assert_eq!(rc["StopSignal"], "SIGINT");
    assert_eq!(
        rc["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "test -f /etc/motd"], "Interval": 5_000_000_000i64, "Retries": 2})
    );
    assert_eq!(rc["OnBuild"], json!(["RUN echo child"]));
    assert_eq!(rc["Shell"], json!(["/bin/sh", "-ec"]));
    assert_eq!(rc["Entrypoint"], json!(["/bin/app"]));
    assert_eq!(rc["Cmd"], json!(["/bin/sh", "-ec", "--serve"]), "a shell form runs in the SHELL");
    assert_eq!(c["author"], "someone@example.com");
    let history: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(history[1], "/bin/sh -c #(nop) ARG VERSION=1.0");
    assert!(history.contains(&"/bin/sh -c #(nop) USER app"), "{history:?}");
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("/bin/sh -c #(nop) COPY dir:") && h.ends_with(" in ./conf/ ")),
        "{history:?}"
    );
    assert!(history.iter().any(|h| h.starts_with("/bin/sh -c #(nop) COPY multi:")), "{history:?}");
    let empty: Vec<bool> =
        c["history"].as_array().unwrap().iter().map(|h| h["empty_layer"] == true).collect();
    assert_eq!(
        empty.iter().filter(|e| !**e).count(),
        c["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
    // The layers: conf with its owner and mode (the key left out), notes, the unpacked tar,
    // the here-document.
    let s = store(root.path());
    let files = without_kind(image_tree(&s, "app:1", 1));
    assert_eq!(files["srv/app/conf/app.conf"], (0o750, 1000, 50, "port=8080\n".to_string()));
    assert_eq!(files["srv/app/conf"].0, 0o755);
    assert!(
        !files.contains_key("srv/app/conf/secret.key"),
        "the .dockerignore'd file is not copied"
    );
    assert_eq!(files["notes/a.txt"].3, "A\n");
    assert!(files.contains_key("notes/b.txt") && !files.contains_key("notes/c.md"));
    assert_eq!(files["opt/tool/bin"], (0o644, 7, 8, "abc".to_string()));
    assert_eq!(files["etc/motd"].3, "built 2.0\n");
    // As Docker lists them.
    let hist = ok(&ironpod(root.path(), &["history", "app:1"]));
    assert!(hist.contains("/bin/sh -c #(nop) CMD --serve"), "{hist}");
}

#[test]
fn the_cache_finds_unchanged_steps_and_remakes_changed_ones() {
    let root = root_with_base();
    let ctx = context(&[
        ("a.txt", "one\n"),
        ("Dockerfile", "FROM base\nENV A=1\nCOPY a.txt /a.txt\nLABEL done=yes\n"),
    ]);
    let first = ok(&build(root.path(), ctx.path(), &["-t", "c:1"]));
    assert!(!first.contains("Using cache"), "{first}");
    let t = std::time::Instant::now();
    let again = ok(&build(root.path(), ctx.path(), &["-t", "c:2"]));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "a cached build took {:?}",
        t.elapsed()
    );
    assert_eq!(again.matches(" ---> Using cache").count(), 3, "{again}");
    let id = |s: &str| s.lines().last().unwrap().to_string();
    assert_eq!(
        store(root.path()).resolve("c:1").unwrap(),
        store(root.path()).resolve("c:2").unwrap()
    );
    // A changed file: its COPY and what follows are made again, not what precedes.
    fs::write(ctx.path().join("a.txt"), "two\n").unwrap();
    let changed = ok(&build(root.path(), ctx.path(), &["-t", "c:3"]));
    assert_eq!(changed.matches(" ---> Using cache").count(), 1, "{changed}");
    assert!(changed.contains("Step 2/4 : ENV A=1\n ---> Using cache"), "{changed}");
    // A changed mode too.
    fs::set_permissions(ctx.path().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let moded = ok(&build(root.path(), ctx.path(), &[]));
    assert_eq!(moded.matches(" ---> Using cache").count(), 1, "{moded}");
    // --no-cache makes every step.
    let fresh = ok(&build(root.path(), ctx.path(), &["--no-cache"]));
    assert!(!fresh.contains("Using cache"), "{fresh}");
    let _ = id;
    // A build arg changes nothing that a step used: still cached, and said unused.
    let unused = ok(&build(root.path(), ctx.path(), &["--build-arg", "NOPE=1"]));
    assert!(
        unused.contains("[Warning] One or more build-args [NOPE] were not consumed"),
        "{unused}"
    );
    // A pruned cache keeps named images, and finds nothing for the next build.
    let pruned = ok(&ironpod(root.path(), &["builder", "prune", "-f"]));
    assert!(pruned.contains("Total reclaimed space:"), "{pruned}");
    assert!(store(root.path()).resolve("c:1").is_ok());
    let after = ok(&build(root.path(), ctx.path(), &[]));
    assert!(!after.contains("Using cache"), "{after}");
}

#[test]
fn stages_targets_and_scratch() {
    let root = root_with_base();
    let df = "FROM base AS one\nENV STAGE=one\nFROM one AS two\nENV STAGE=two\nFROM scratch AS empty\nCOPY x.txt /x.txt\nFROM two\nLABEL final=yes\n";
    let ctx = context(&[("x.txt", "x\n"), ("Dockerfile", df)]);
    ok(&build(root.path(), ctx.path(), &["-t", "all"]));
    let c = config(root.path(), "all");
    assert_eq!(c["config"]["Env"], json!(["PATH=/bin", "STAGE=two"]));
    assert_eq!(c["config"]["Labels"], json!({"final": "yes"}));
    // --target builds the stage and what it needs, not the others.
    let out = ok(&build(root.path(), ctx.path(), &["-t", "one", "--target", "ONE"]));
    assert!(out.starts_with("Step 1/2 : FROM base AS one\n"), "{out}");
    assert_eq!(config(root.path(), "one")["config"]["Env"], json!(["PATH=/bin", "STAGE=one"]));
    let out = ok(&build(root.path(), ctx.path(), &["-t", "empty", "--target", "empty"]));
    assert!(out.contains("Step 2/2 : COPY x.txt /x.txt"), "{out}");
    let layer = image_tree(&store(root.path()), "empty", 0);
    assert_eq!(layer.keys().collect::<Vec<_>>(), ["x.txt"]);
    assert_eq!(
        store(root.path()).layers_of(&store(root.path()).resolve("empty").unwrap()).unwrap().len(),
        1
    );
    let e = build(root.path(), ctx.path(), &["--target", "nope"]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr)
        .contains("failed to reach build target nope in Dockerfile"));
}

#[test]
fn a_timestamp_makes_the_same_image_twice() {
    let ctx = context(&[
        ("a.txt", "a\n"),
        ("d/b.txt", "b\n"),
        ("Dockerfile", "FROM base\nCOPY . /app/\nWORKDIR /work\nENV X=1\n"),
    ]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let root = root_with_base();
        // Different file times between the two builds count for nothing.
        let later =
            std::time::SystemTime::now() + std::time::Duration::from_secs(ids.len() as u64 * 3600);
        fs::File::options()
            .write(true)
            .open(ctx.path().join("a.txt"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        ok(&build(root.path(), ctx.path(), &["-t", "r", "--timestamp", "1700000000"]));
        let s = store(root.path());
        let d = s.resolve("r").unwrap();
        ids.push((
            d.to_string(),
            s.layers_of(&d).unwrap().iter().skip(1).map(|l| l.to_string()).collect::<Vec<_>>(),
        ));
        let c = s.raw_config(&d).unwrap();
        assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    }
    // The base imports differ (their times): the layers built here are the same bytes.
    assert_eq!(ids[0].1, ids[1].1);
}

#[test]
fn bad_dockerfiles_and_contexts_are_refused_clearly() {
    let root = root_with_base();
    let cases: &[(&str, &str)] = &[
        ("FROM base\nFROB x\n", "Dockerfile:2: unknown instruction"),
        (
            "FROM base\nRUN --mount=type=cache,target=/x true\n",
            "Dockerfile:2: RUN --mount is not supported",
        ),
        (
            "FROM base\nCOPY ../outside /x\n",
            "Dockerfile:2: COPY failed: forbidden path outside the build context",
        ),
        (
            "FROM base\nCOPY missing.txt /x\n",
            "Dockerfile:2: COPY failed: file not found in build context",
        ),
        ("FROM base\nCOPY a b /dest\n", "must be a directory and end with a /"),
        ("FROM base AS a\nFROM base AS A\n", "Dockerfile:2: duplicate stage name"),
        // A cycle: b needs a, which needs b.
        (
            "FROM base AS a\nCOPY --from=b /x /x\nFROM base AS b\nCOPY --from=a /y /y\n",
            "Dockerfile:2: invalid from flag value b",
        ),
        ("FROM base\nENV =x\n", "Dockerfile:2: ENV names can not be blank"),
        ("FROM base\nEXPOSE 99999\n", "Dockerfile:2: invalid containerPort"),
        ("FROM base\nCOPY --chown=nobody a /a\n", "Dockerfile:2: unable to find user nobody"),
        ("FROM base\nADD https://example.com/x /x\n", "remote sources are not fetched"),
        ("FROM scratch\nRUN true\n", "Dockerfile:2: RUN on an empty image"),
        ("FROM base\nSTOPSIGNAL SIGNOPE\n", "invalid signal"),
        ("FROM base\nENV A=\"${B:?must be set}\"\n", "must be set"),
        ("", "Dockerfile"),
    ];
    for (df, want) in cases {
        let ctx = context(&[("a", "a"), ("b", "b"), ("Dockerfile", df)]);
        let out = build(root.path(), ctx.path(), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{df:?}: {err}");
        assert!(err.contains(want), "{df:?}: want {want:?}, got {err}");
    }
    // Usage errors: exit 125 as Docker's.
    let ctx = context(&[("Dockerfile", "FROM base\n")]);
    for (args, want) in [
        (&["--network", "host"][..], "--network=host"),
        (&["-t", "Bad Name"][..], "invalid tag"),
        (&["--build-arg", "=x"][..], "the name is empty"),
    ] {
        let out = build(root.path(), ctx.path(), args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ironpod(root.path(), &["build", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    let out =
        ironpod(root.path(), &["build", "-f", "/no/Dockerfile", &ctx.path().to_string_lossy()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Cannot locate specified Dockerfile"));
    // A bad .dockerignore names its line.
    let ctx = context(&[("Dockerfile", "FROM base\n"), (".dockerignore", "ok\n[bad\n")]);
    let out = build(root.path(), ctx.path(), &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(".dockerignore:2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn copy_from_stages_and_images_keeps_only_the_target_s_layers() {
    let root = root_with_base();
    let df = "FROM base AS build\nCOPY --chown=app:staff src/ /src/\nCOPY tool.sh /usr/bin/tool\n\
              FROM scratch\nCOPY --from=build /src /app/\nCOPY --from=0 /usr/bin/tool /bin/\n\
              COPY --from=base /etc/motd /etc/passwd /etc/\nCOPY --from=build /src/*.txt /texts/\n";
    let ctx = context(&[
        ("src/a.txt", "a\n"),
        ("src/deep/b.txt", "b\n"),
        ("tool.sh", "#!/bin/sh\n"),
        ("Dockerfile", df),
    ]);
    fs::set_permissions(ctx.path().join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    ok(&build(root.path(), ctx.path(), &["-t", "multi"]));
    let s = store(root.path());
    let d = s.resolve("multi").unwrap();
    let layers = s.layers_of(&d).unwrap();
    assert_eq!(layers.len(), 4, "only the final stage's layers");
    let files = without_kind(image_tree(&s, "multi", 0));
    assert_eq!(
        files["app/a.txt"],
        (0o644, 1000, 50, "a\n".to_string()),
        "the stage's owners are kept"
    );
    assert_eq!(files["app/deep/b.txt"].3, "b\n");
    assert_eq!(files["bin/tool"].0, 0o755);
    assert_eq!(files["etc/motd"].3, "base\n");
    assert!(files["etc/passwd"].3.contains("app:x:1000"));
    assert_eq!(files["texts/a.txt"].3, "a\n");
    assert!(!files.contains_key("texts/deep"), "a glob matches one level");
    let c = config(root.path(), "multi");
    assert_eq!(c["history"].as_array().unwrap().len(), 4);
    // A missing source, and a stage that is not there yet.
    let bad = context(&[("Dockerfile", "FROM base AS a\nFROM base\nCOPY --from=a /nope /x\n")]);
    let out = build(root.path(), bad.path(), &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Dockerfile:3: COPY failed: stat /nope: file does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn progress_tty_draws_a_view_on_a_terminal_and_needs_one() {
    let root = root_with_base();
    let ctx = context(&[("x.txt", "x\n"), ("Dockerfile", "FROM base\nCOPY x.txt /x\nENV A=1\n")]);
    // Not a terminal: refused, not ignored.
    let o = build(root.path(), ctx.path(), &["--progress", "tty"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a terminal"));
    // On a terminal (util-linux's `script` gives it one): the steps as a view, the
    // closing lines after it; `auto` picks it there.
    for progress in ["tty", "auto"] {
        let cmd = format!(
            "{} --root {} build --progress {progress} -t viewed {}",
            env!("CARGO_BIN_EXE_ironpod"),
            root.path().display(),
            ctx.path().display()
        );
        let o = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("TERM", "xterm")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{screen}");
        assert!(screen.contains("[1/3] FROM base"), "{screen}");
        assert!(screen.contains("[2/3] COPY x.txt /x"), "{screen}");
        assert!(screen.contains("Successfully tagged viewed:latest"), "{screen}");
        assert!(!screen.contains("Step 1/3"), "{screen}");
    }
}

#[test]
fn a_built_image_pushed_shows_the_same_config_and_history_to_skopeo() {
    let root = root_with_base();
    let df = "FROM base\nENV A=1\nLABEL team=core\nCOPY x.txt /x\nEXPOSE 80/tcp\nUSER app\nHEALTHCHECK --interval=3s CMD true\nCMD [\"cat\", \"/x\"]\n";
    let ctx = context(&[("x.txt", "x\n"), ("Dockerfile", df)]);
    let reg = common::Registry::start();
    let name = format!("{}/built/app:1", reg.host());
    ok(&build(root.path(), ctx.path(), &["-t", &name]));
    ok(&ironpod(root.path(), &["push", "-q", &name]));
    let skopeo = |args: &[&str]| -> serde_json::Value {
        let o = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .expect("skopeo is installed by `cargo xtask deps`");
        assert!(o.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let reference = format!("docker://{name}");
    // The registry holds the very config the store has: every field, the history.
    let raw = skopeo(&["inspect", "--tls-verify=false", "--config", "--raw", &reference]);
    assert_eq!(raw, config(root.path(), &name));
    assert_eq!(raw["config"]["Healthcheck"]["Interval"], 3_000_000_000u64, "{raw}");
    let created_by: Vec<&str> = raw["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["created_by"].as_str())
        .collect();
    assert!(created_by.contains(&"/bin/sh -c #(nop) USER app"), "{created_by:?}");
    // skopeo's summary: the labels, the environment, one layer per COPY on the base's.
    let summary = skopeo(&["inspect", "--tls-verify=false", &reference]);
    assert_eq!(summary["Labels"]["team"], "core", "{summary}");
    assert!(summary["Env"].as_array().unwrap().iter().any(|e| e == "A=1"), "{summary}");
    assert_eq!(summary["Layers"].as_array().unwrap().len(), 2, "{summary}");
    assert_eq!(
        (summary["Os"].as_str(), summary["Architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
}
