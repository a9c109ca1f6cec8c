//! The same Dockerfile and context built by `ironpod build` and by Debian's podman 4.3
//! (buildah 1.28, the reference): the same files with the same modes, owners and contents,
//! the same run configuration. Dockerfiles without RUN (podman's chroot isolation could run
//! them here, ironpod's need a guest: the rig's tests build those).

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{ironpod, layer_tree, ok};
use ironpod_tests::podman::Podman;

fn base_tar(dir: &Path) -> std::path::PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["etc", "bin", "srv/existing"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1001:\nstaff:x:50:\n").unwrap();
    fs::write(rootfs.join("etc/motd"), "base\n").unwrap();
    let tar = dir.join("base.tar");
    let st =
        Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(st.success());
    tar
}

const DOCKERFILE: &str = r#"FROM base AS files
COPY --chown=app:staff stage/ /staged/

FROM base
ARG VERSION=1.0
ENV APP_VERSION=$VERSION HOME=/home/app PATH=/usr/local/bin:/bin
LABEL org.example.version=$VERSION org.example.name="demo app"
COPY --chown=1000:50 --chmod=0750 conf/ /srv/app/conf/
WORKDIR /srv/app
COPY *.txt notes/
COPY single.txt /srv/existing
COPY single.txt /renamed.txt
ADD bundle.tar /opt/
COPY --from=files /staged /from-stage/
COPY --from=files /etc/motd /from-stage/motd
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=2 CMD test -f /etc/motd
USER app:staff
ENTRYPOINT ["/bin/app"]
CMD ["--serve"]
"#;

#[test]
fn the_same_dockerfile_makes_the_same_files_and_config_as_podman() {
    let work = tempfile::tempdir().unwrap();
    let base = base_tar(work.path());
    let ctx = work.path().join("ctx");
    for (p, data, mode) in [
        ("conf/app.conf", "port=8080\n", 0o644),
        ("conf/sub/inner.conf", "x\n", 0o600),
        ("a.txt", "A\n", 0o644),
        ("b.txt", "B\n", 0o640),
        ("single.txt", "single\n", 0o644),
        ("stage/s.txt", "staged\n", 0o644),
        ("stage/bin/run.sh", "#!/bin/sh\n", 0o755),
        ("ignored.log", "no\n", 0o644),
        (".dockerignore", "*.log\n", 0o644),
        ("Dockerfile", DOCKERFILE, 0o644),
    ] {
        let path = ctx.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::symlink("a.txt", ctx.join("link.txt")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(7);
    h.set_gid(8);
    b.append_data(&mut h, "tool/bin", &b"abc"[..]).unwrap();
    fs::write(ctx.join("bundle.tar"), b.into_inner().unwrap()).unwrap();
    let c = ctx.to_string_lossy().into_owned();

    // ironpod
    let root = work.path().join("ironpod");
    ok(&ironpod(&root, &["import", base.to_str().unwrap(), "base"]));
    ok(&ironpod(&root, &["build", "-t", "same", "--build-arg", "VERSION=2.0", &c]));
    let store = ironpod_images::ImageStore::open(&root).unwrap();
    let d = store.resolve("same").unwrap();
    let ours_config = store.raw_config(&d).unwrap()["config"].clone();
    let layers: Vec<Box<dyn Read>> =
        store.layers_of(&d).unwrap().iter().map(|l| store.open_layer(l).unwrap()).collect();
    let ours = layer_tree(layers);

    // podman (buildah), Docker's image format, chroot isolation (no RUN anyway).
    let work = tempfile::tempdir().unwrap();
    let p = Podman::new_in(work.path());
    p.ok(&["import", base.to_str().unwrap(), "localhost/base:latest"]);
    p.ok(&[
        "build",
        "--format",
        "docker",
        "--isolation",
        "chroot",
        "--build-arg",
        "VERSION=2.0",
        "-t",
        "same",
        &c,
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&p.ok(&["image", "inspect", "same"])).unwrap();
    let mut theirs_config = inspect[0]["Config"].clone();
    // podman shows a Docker-format image's health check beside its OCI config.
    theirs_config["Healthcheck"] = inspect[0]["Healthcheck"].clone();
    let archive = work.path().join("same.tar");
    p.ok(&["save", "--format", "docker-archive", "-o", archive.to_str().unwrap(), "same"]);
    let unpacked = work.path().join("saved");
    fs::create_dir_all(&unpacked).unwrap();
    tar::Archive::new(fs::File::open(&archive).unwrap()).unpack(&unpacked).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    let layers: Vec<Box<dyn Read>> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            Box::new(fs::File::open(unpacked.join(l.as_str().unwrap())).unwrap()) as Box<dyn Read>
        })
        .collect();
    let theirs = layer_tree(layers);

    // Files: the same paths, kinds, modes, owners and contents.
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only ironpod's: {only_ours:?}\nonly podman's: {only_theirs:?}"
    );
    let differ: Vec<_> =
        ours.iter().filter(|(k, v)| theirs[*k] != **v).map(|(k, v)| (k, v, &theirs[k])).collect();
    assert!(differ.is_empty(), "(path, ironpod's, podman's): {differ:#?}");

    // Configuration: the same fields (buildah adds its version label).
    if let Some(l) = theirs_config["Labels"].as_object_mut() {
        l.remove("io.buildah.version");
    }
    for field in [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Labels",
        "Healthcheck",
    ] {
        assert_eq!(
            ours_config[field], theirs_config[field],
            "{field}: ironpod {ours_config}\npodman {theirs_config}"
        );
    }
}
