//! The `ironpod` image commands end to end, on a private state root.

mod common;

use std::process::Command;

use common::*;

#[test]
fn import_images_tag_inspect_history_rmi() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    std::os::unix::fs::symlink("/bin/busybox", rootfs.join("bin/sh")).unwrap();
    let tarball = dir.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());

    let id = ok(&ironpod(&root, &["import", tarball.to_str().unwrap(), "demo"]));
    assert!(id.trim().starts_with("sha256:") && id.trim().len() == 71, "{id}");
    ok(&ironpod(&root, &["tag", "demo", "demo:v1"]));
    let list: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&root, &["images", "--json"]))).unwrap();
    assert_eq!(list[0]["names"], serde_json::json!(["demo:latest", "demo:v1"]));
    let table = ok(&ironpod(&root, &["images"]));
    assert!(
        table.contains("demo") && table.contains("v1") && table.contains(&id.trim()[7..19]),
        "{table}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&root, &["image", "inspect", "demo:v1"]))).unwrap();
    assert_eq!(inspect[0]["id"].as_str(), Some(id.trim()));
    assert_eq!(inspect[0]["config"]["os"], "linux");
    let history = ok(&ironpod(&root, &["history", "demo"]));
    assert!(history.contains("ironpod import rootfs.tar"), "{history}");

    let out = ok(&ironpod(&root, &["rmi", "demo:v1"]));
    assert_eq!(out.trim(), "Untagged: demo:v1");
    let out = ok(&ironpod(&root, &["rmi", "demo"]));
    assert_eq!(out.lines().filter(|l| l.starts_with("Deleted: sha256:")).count(), 3, "{out}");

    // Errors: clear message, non-zero exit, no panic.
    for args in [
        vec!["rmi", "demo"],
        vec!["image", "inspect", "nope"],
        vec!["tag", "nope", "x"],
        vec!["import", "/nonexistent.tar", "x"],
        vec!["import", tarball.to_str().unwrap(), "Not A Name"],
    ] {
        let o = ironpod(&root, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("ironpod: ") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn save_load_round_trip_and_skopeo_interop() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let tarball = tarball(dir.path(), "demo", "hi\n");
    ok(&ironpod(&a, &["import", tarball.to_str().unwrap(), "demo:v1"]));
    let saved = dir.path().join("saved.tar");
    ok(&ironpod(&a, &["save", "-o", saved.to_str().unwrap(), "demo:v1"]));
    // Into a second store: same manifest digest.
    let out = ok(&ironpod(&b, &["load", "-i", saved.to_str().unwrap()]));
    assert_eq!(out.trim(), "Loaded image: demo:v1");
    let ia: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&a, &["image", "inspect", "demo:v1"]))).unwrap();
    let ib: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&b, &["image", "inspect", "demo:v1"]))).unwrap();
    assert_eq!(ia[0]["manifest"], ib[0]["manifest"]);

    // skopeo reads our archive ...
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", saved.display()),
        &format!("oci:{}:copied", layout.display()),
    ]);
    // ref.name holds the tag, as docker and containerd write it; one image needs no ref.
    skopeo(&["inspect", &format!("oci-archive:{}:v1", saved.display())]);
    let inspect = skopeo(&["inspect", "--raw", &format!("oci:{}:copied", layout.display())]);
    let raw: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(raw["config"]["digest"], ia[0]["id"]);
    // ... and writes one we load.
    let back = dir.path().join("from-skopeo.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:copied", layout.display()),
        &format!("oci-archive:{}:demo:v2", back.display()),
    ]);
    let c = dir.path().join("c");
    let out = ok(&ironpod(&c, &["load", "-i", back.to_str().unwrap()]));
    assert_eq!(out.trim(), "Loaded image: demo:v2");
    let ic: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&c, &["image", "inspect", "demo:v2"]))).unwrap();
    assert_eq!(ic[0]["id"], ia[0]["id"]);

    // A damaged archive: a blob whose content does not match its name is refused.
    let bad = dir.path().join("bad.tar");
    let mut data = std::fs::read(&saved).unwrap();
    // Flip a byte inside the config blob (plain JSON in the archive).
    let pos = data.windows(5).position(|w| w == b"\"Env\"").expect("config blob in the archive");
    data[pos + 1] = b'X';
    std::fs::write(&bad, &data).unwrap();
    let o = ironpod(&dir.path().join("d"), &["load", "-i", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("verification failed"), "{o:?}");
    let o = ironpod(&dir.path().join("d"), &["load", "-i", tarball.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "a plain rootfs tar is not an image archive");
    let list = ok(&ironpod(&dir.path().join("d"), &["images", "--json"]));
    assert_eq!(list.trim(), "[]");
}

#[test]
fn a_full_disk_gives_a_clear_error_and_a_consistent_store() {
    // A 4 MiB tmpfs as the state root; the layer does not fit.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("small");
    std::fs::create_dir_all(&root).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(root.clone());
    let small = tarball(dir.path(), "demo", "hi\n");
    ok(&ironpod(&root, &["import", small.to_str().unwrap(), "small"]));
    // 8 MiB of incompressible data.
    let rootfs = dir.path().join("big");
    std::fs::create_dir_all(&rootfs).unwrap();
    let data = noise(8 << 20, 0x9e3779b97f4a7c15);
    std::fs::write(rootfs.join("blob"), &data).unwrap();
    let big = dir.path().join("big.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&big)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let o = ironpod(&root, &["import", big.to_str().unwrap(), "big"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    // Nothing half-written is visible; the earlier image is intact and usable.
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    let list: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&root, &["images", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    ok(&ironpod(&root, &["image", "inspect", "small"]));
    ok(&ironpod(&root, &["rmi", "small"]));
}

#[test]
fn containerd_imports_what_we_save() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let tarball = tarball(dir.path(), "demo", "hi\n");
    ok(&ironpod(&a, &["import", tarball.to_str().unwrap(), "demo:v1"]));
    let saved = dir.path().join("saved.tar");
    ok(&ironpod(&a, &["save", "-o", saved.to_str().unwrap(), "demo:v1"]));

    // A private containerd (no CRI) on sockets in the test's directory.
    let c = dir.path().join("ctd");
    std::fs::create_dir_all(&c).unwrap();
    let sock = c.join("c.sock");
    std::fs::write(
        c.join("config.toml"),
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{0}/opt\"\n",
            c.display(),
            sock.display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new("containerd")
        .arg("--config")
        .arg(c.join("config.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("containerd is installed by `cargo xtask deps`");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let t = std::time::Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "containerd did not start");
        if let Ok(Some(s)) = daemon.try_wait() {
            panic!("containerd exited: {s}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _d = Kill(daemon);
    let ctr = |args: &[&str]| {
        let o = Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "ironpod-test"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ctr(&["images", "import", "--no-unpack", saved.to_str().unwrap()]);
    let ls = ctr(&["images", "ls"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&a, &["image", "inspect", "demo:v1"]))).unwrap();
    let manifest = inspect[0]["manifest"].as_str().unwrap();
    assert!(
        ls.lines().any(|l| l.starts_with("docker.io/library/demo:v1") && l.contains(manifest)),
        "containerd lists the image with our manifest digest:\n{ls}"
    );
}

/// The state root is root's alone: made 0700, so another local user can neither list it
/// nor read the records, images and credentials in it (the tests run as root).
#[test]
fn another_user_cannot_read_the_state_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    // The temp dir itself is 0700: open it up, so only the state root's mode protects it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("state");
    ok(&ironpod(&root, &["import", tarball(dir.path(), "t", "x").to_str().unwrap(), "demo"]));
    ok(&ironpod(&root, &["ps", "-a"]));
    ok(&ironpod(&root, &["network", "ls"]));
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
    let nobody = |cmd: &mut Command| cmd.uid(65534).gid(65534).output().unwrap();
    for f in ["images.db", "containers.db", "."] {
        let out = nobody(Command::new("cat").arg(root.join(f)));
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = nobody(
        Command::new(env!("CARGO_BIN_EXE_ironpod")).arg("--root").arg(&root).args(["images"]),
    );
    assert!(!out.status.success(), "another user listed the images");
    // An existing root with loose permissions is tightened on the next use.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(&ironpod(&root, &["images"]));
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
}
