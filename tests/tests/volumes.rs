//! Data in pods: tmpfs mounts (`--tmpfs`) and volumes (`-v`, `ironpod volume`).

use ironpod_tests::{require_linux_kvm, text, TestRoot};

#[test]
fn tmpfs_mounts_are_sized_noexec_and_gone_with_the_pod() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = root.ironpod(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m,mode=1777",
        "--tmpfs",
        "/fast:exec",
        "demo",
        "sh",
        "-c",
        "grep -E ' /(scratch|fast) ' /proc/mounts; stat -c %a /scratch; \
         echo data > /scratch/f && cat /scratch/f; \
         dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1 | grep -o 'No space left on device'; \
         cp /bin/busybox /scratch/true; cp /bin/busybox /fast/true; \
         /fast/true && echo fast-exec-ok; /scratch/true 2>&1 || echo scratch-noexec; \
         cp /bin/busybox /tmp/x 2>&1 | tail -1",
    ]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    // (busybox picks its applet by name: the copies are called `true`.)
    let scratch = s.lines().find(|l| l.contains(" /scratch ")).expect("/scratch mounted");
    assert!(scratch.starts_with("tmpfs "), "{scratch}");
    for opt in ["nosuid", "nodev", "noexec", "size=1024k"] {
        assert!(scratch.contains(opt), "{opt}: {scratch}");
    }
    let fast = s.lines().find(|l| l.contains(" /fast ")).expect("/fast mounted");
    assert!(!fast.contains("noexec"), "exec overrides the default: {fast}");
    assert!(s.contains("\n1777\n"), "mode: {s}");
    assert!(s.contains("\ndata\n"), "{s}");
    assert!(s.contains("No space left on device"), "the size limit holds: {s}");
    assert!(s.contains("fast-exec-ok"), "{s}");
    assert!(s.contains("scratch-noexec"), "{s}");
    assert!(s.contains("Read-only file system"), "the root stays read-only: {s}");
    // A second pod sees nothing of the first's tmpfs.
    let out = root.ironpod(&["run", "--rm", "--tmpfs", "/scratch", "demo", "ls", "-A", "/scratch"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "");
    // Bad values are refused before anything starts.
    for bad in ["relative", "/x:size=1m,bind", "/", "/a/../b"] {
        let out = root.ironpod(&["run", "--rm", "--tmpfs", bad, "demo", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", text(&out.stderr));
    }
}

/// Mount points under the pods' shares on the host (none once pods are gone).
fn share_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with("/run/ironpod/shares/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn volumes_keep_data_between_pods_refuse_writes_when_ro_and_stay_inside() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let host = root.path().join("host-data");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("hello"), "from-host\n").unwrap();
    // Beside the volume, not in it: no container may read it.
    std::fs::write(root.path().join("secret.txt"), "host-secret\n").unwrap();
    std::os::unix::fs::symlink("/", host.join("to-root")).unwrap();
    std::os::unix::fs::symlink("..", host.join("up")).unwrap();
    let bind = format!("{}:/data", host.display());

    // One pod writes into a host directory and a named volume (made on first use)…
    let out = root.ironpod(&[
        "run",
        "--name",
        "writer",
        "-v",
        &bind,
        "-v",
        "keep1:/vol",
        "demo",
        "sh",
        "-c",
        "cat /data/hello; echo pod-one > /data/out; echo persisted > /vol/kept; \
         mkdir -p /vol/dir && echo deep > /vol/dir/f; \
         cat /data/../secret.txt /data/up/secret.txt /data/to-root/secret.txt 2>&1; \
         ls /data/to-root/ | tr '\\n' ' '; echo; grep ' /data ' /proc/mounts; \
         touch /data/by-root; chown 1234:4321 /data/out; mknod /data/dev c 1 3 || echo no-mknod",
    ]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.starts_with("from-host\n"), "{s}");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "pod-one\n");
    // `..` and symlinks resolve inside the container's own tree, never on the host.
    assert!(!s.contains("host-secret"), "a host file outside the volume was read: {s}");
    assert!(s.contains("No such file"), "{s}");
    assert!(s.contains("virtiofs"), "the volume is a virtio-fs mount: {s}");
    // virtiofsd, in a user namespace of its own, keeps Docker's ownership (root's files are
    // root's, chown works) but cannot make device nodes on the host.
    use std::os::unix::fs::MetadataExt;
    let meta = |f: &str| std::fs::metadata(host.join(f)).unwrap();
    assert_eq!((meta("by-root").uid(), meta("by-root").gid()), (0, 0));
    assert_eq!((meta("out").uid(), meta("out").gid()), (1234, 4321));
    assert!(s.contains("no-mknod") && !host.join("dev").exists(), "{s}");

    // …the next pod reads them; read-only volumes refuse writes (guest and host).
    let ro = format!("{}:/data:ro", host.display());
    let out = root.ironpod(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "-v",
        "keep1:/vol:ro",
        "demo",
        "sh",
        "-c",
        "cat /vol/kept /vol/dir/f /data/out; (echo x > /vol/new) 2>&1; (echo x > /data/out) 2>&1; \
         rm /data/hello 2>&1; grep ' /vol ' /proc/mounts",
    ]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.starts_with("persisted\ndeep\npod-one\n"), "{s}");
    assert_eq!(s.matches("Read-only file system").count(), 3, "{s}");
    assert!(s.lines().any(|l| l.contains(" /vol ") && l.contains(" ro,")), "{s}");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "pod-one\n");
    assert!(host.join("hello").exists());

    // `inspect` shows the writer's mounts as Docker does.
    let v: serde_json::Value =
        serde_json::from_slice(&root.ironpod(&["inspect", "writer"]).stdout).unwrap();
    // Both pods restored the pod template with a share that the first one made (a copy of
    // its memory in shared memory, their own virtiofsd plugged into its share device).
    let id = v[0]["Id"].as_str().unwrap();
    let log = std::fs::read_to_string(root.path().join("containers").join(id).join("monitor.log"))
        .unwrap_or_default();
    assert!(!log.contains("no pod template"), "the writer booted: {log}");
    let template = ironpod_tests::only_template(root.path());
    let inputs = std::fs::read_to_string(template.join("inputs.json")).unwrap();
    assert!(inputs.contains("\"share\": true"), "{inputs}");
    let mounts = &v[0]["Mounts"];
    assert_eq!(mounts[0]["Type"], "bind", "{mounts}");
    assert_eq!(mounts[0]["Destination"], "/data");
    assert_eq!(
        (mounts[1]["Type"].as_str(), mounts[1]["Name"].as_str()),
        (Some("volume"), Some("keep1"))
    );
    assert_eq!(mounts[1]["RW"], true);
    // Named volumes: listed, inspected, kept while a container uses them.
    let ls = text(&root.ironpod(&["volume", "ls", "-q"]).stdout);
    assert_eq!(ls, "keep1\n");
    let inspect = root.ironpod(&["volume", "inspect", "keep1"]);
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let mountpoint = std::path::PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(mountpoint.join("kept")).unwrap(), "persisted\n");
    let out = root.ironpod(&["volume", "rm", "keep1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("in use"), "{}", text(&out.stderr));
    assert!(root.ironpod(&["rm", "writer"]).status.success());
    assert!(root.ironpod(&["volume", "rm", "keep1"]).status.success());
    assert!(!mountpoint.exists());
    assert_eq!(text(&root.ironpod(&["volume", "ls", "-q"]).stdout), "");

    // Bad values are refused before anything starts; nothing is left mounted.
    for bad in ["/data", "rel:/x:rx", "x:/data", "v1:relative"] {
        let out = root.ironpod(&["run", "--rm", "-v", bad, "demo", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", text(&out.stderr));
    }
    assert!(share_mounts().is_empty(), "{:?}", share_mounts());
    assert_eq!(std::fs::read_to_string(host.join("hello")).unwrap(), "from-host\n");
}
