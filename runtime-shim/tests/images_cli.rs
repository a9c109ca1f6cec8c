//! The `ironpod` image commands end to end, on a private state root.

use std::path::Path;
use std::process::{Command, Output};

fn ironpod(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironpod")).arg("--root").arg(root).args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

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
