//! Store-level tests: import, list, inspect, tag, remove + GC, hostile tarballs, concurrency.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn header(path: &str, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Write the name bytes directly: the builder would refuse hostile names.
    let bytes = h.as_mut_bytes();
    bytes[..100].fill(0);
    bytes[..path.len()].copy_from_slice(path.as_bytes());
    h.set_size(size);
    h.set_mode(0o755);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

fn rootfs_tar(dir: &Path) -> PathBuf {
    let p = dir.join("rootfs.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    let data = b"#!/bin/sh\necho hi\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "bin/hello", &data[..]).unwrap();
    let mut s = tar::Header::new_gnu();
    s.set_entry_type(tar::EntryType::Symlink);
    s.set_size(0);
    b.append_link(&mut s, "bin/sh", "/bin/busybox").unwrap();
    b.finish().unwrap();
    p
}

fn hostile_tar(
    dir: &Path,
    name: &str,
    entries: &[(&str, tar::EntryType, Option<&str>)],
) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    for (path, kind, link) in entries {
        let mut h = header(path, 0, *kind);
        if let Some(l) = link {
            h.as_mut_bytes()[157..157 + l.len()].copy_from_slice(l.as_bytes());
            h.set_cksum();
        }
        f.write_all(h.as_bytes()).unwrap();
    }
    f.write_all(&[0u8; 1024]).unwrap();
    p
}

#[test]
fn import_list_inspect_tag_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    let tar = rootfs_tar(dir.path());
    let s = store.import(&tar, "demo").unwrap();
    assert_eq!(s.names, vec!["demo:latest"]);
    assert!(s.size > 0);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    let d = store.inspect("demo").unwrap();
    assert_eq!(d.config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(d.manifest_json.layers().len(), 1);
    // Every blob is verified when read back.
    for l in d.manifest_json.layers() {
        store.blobs().read(&Digest::from_oci(l.digest()).unwrap()).unwrap();
    }
    // Tag and resolve by name, by id prefix, by manifest digest.
    store.tag("demo", "demo:v2").unwrap();
    store.tag(&s.id[7..19], "localhost:5000/team/demo:x").unwrap();
    assert_eq!(store.inspect("demo:v2").unwrap().summary.id, s.id);
    assert_eq!(store.inspect(&s.manifest).unwrap().summary.id, s.id);
    assert_eq!(store.list().unwrap()[0].names.len(), 3);
    assert_eq!(store.history("demo").unwrap().len(), 1);
    // Removing one name keeps the blobs; removing the last deletes them.
    let (untagged, deleted) = store.remove("demo:v2", false).unwrap();
    assert_eq!((untagged, deleted.len()), (vec!["demo:v2".to_string()], 0));
    let (untagged, deleted) = store.remove(&s.id, false).unwrap();
    assert_eq!(untagged.len(), 2);
    assert_eq!(deleted.len(), 3, "manifest, config and layer are collected");
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(store.inspect("demo"), Err(ImageError::NotFound(_))));
}

#[test]
fn gzip_tarballs_import_to_the_same_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    let tar = rootfs_tar(dir.path());
    let gz = dir.path().join("rootfs.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&tar).unwrap()).unwrap();
    enc.finish().unwrap();
    let a = store.inspect(&store.import(&tar, "a").unwrap().manifest).unwrap();
    let b = store.inspect(&store.import(&gz, "b").unwrap().manifest).unwrap();
    assert_eq!(a.config["rootfs"]["diff_ids"], b.config["rootfs"]["diff_ids"]);
}

#[test]
fn hostile_and_broken_tarballs_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = ImageStore::open(&root).unwrap();
    let cases = vec![
        hostile_tar(
            dir.path(),
            "dotdot.tar",
            &[("../../etc/passwd", tar::EntryType::Regular, None)],
        ),
        hostile_tar(dir.path(), "abs.tar", &[("/etc/passwd", tar::EntryType::Regular, None)]),
        hostile_tar(
            dir.path(),
            "link.tar",
            &[("x", tar::EntryType::Link, Some("../../../etc/shadow"))],
        ),
    ];
    for t in &cases {
        let e = store.import(t, "bad").unwrap_err();
        assert!(matches!(e, ImageError::BadTar(_)), "{}: {e}", t.display());
    }
    // Truncated: a header announcing 1 MiB followed by 10 bytes.
    let trunc = dir.path().join("trunc.tar");
    let mut f = std::fs::File::create(&trunc).unwrap();
    f.write_all(header("big", 1 << 20, tar::EntryType::Regular).as_bytes()).unwrap();
    f.write_all(&[1u8; 10]).unwrap();
    drop(f);
    assert!(matches!(store.import(&trunc, "bad"), Err(ImageError::BadTar(_))));
    // Not a tar at all.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, vec![0x55u8; 4096]).unwrap();
    assert!(matches!(store.import(&junk, "bad"), Err(ImageError::BadTar(_))));
    // Missing file, bad names.
    assert!(matches!(
        store.import(&dir.path().join("nope.tar"), "bad"),
        Err(ImageError::Io { .. })
    ));
    assert!(matches!(
        store.import(&rootfs_tar(dir.path()), "Bad Name"),
        Err(ImageError::InvalidName(_))
    ));
    // Nothing was stored, nothing is left in tmp.
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(root.join("blobs/sha256")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn concurrent_imports_from_separate_store_handles() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tar = rootfs_tar(dir.path());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (root, tar) = (root.clone(), tar.clone());
            std::thread::spawn(move || {
                let s = ImageStore::open(&root).unwrap();
                s.import(&tar, &format!("img{i}")).unwrap();
                s.tag(&format!("img{i}"), &format!("img{i}:again")).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let store = ImageStore::open(&root).unwrap();
    let names: usize = store.list().unwrap().iter().map(|i| i.names.len()).sum();
    assert_eq!(names, 8);
    for i in store.list().unwrap() {
        store.inspect(&i.manifest).unwrap();
    }
}

#[test]
fn corrupt_blob_is_reported_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    let s = store.import(&rootfs_tar(dir.path()), "demo").unwrap();
    let m = Digest::parse(&s.manifest).unwrap();
    std::fs::write(store.blobs().path(&m), b"{}").unwrap();
    assert!(matches!(store.inspect("demo"), Err(ImageError::DigestMismatch { .. })));
}

#[test]
fn layer_disks_are_built_once_and_hold_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    store.import(&rootfs_tar(dir.path()), "demo").unwrap();
    let disks = store.layer_disks("demo").unwrap();
    assert_eq!(disks.len(), 1);
    let built = std::fs::metadata(&disks[0]).unwrap().modified().unwrap();
    // Second time: the cached disk, not rebuilt.
    assert_eq!(store.layer_disks("demo").unwrap(), disks);
    assert_eq!(std::fs::metadata(&disks[0]).unwrap().modified().unwrap(), built);
    // The image is a valid erofs holding the layer's files.
    let out = dir.path().join("extract");
    let st = std::process::Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg(&disks[0])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert_eq!(std::fs::read(out.join("bin/hello")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(std::fs::read_link(out.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
    // Removing the image removes its layer disk.
    store.remove("demo", false).unwrap();
    assert!(!disks[0].exists());
}

#[test]
fn zstd_tarballs_and_zstd_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    let tar = std::fs::read(rootfs_tar(dir.path())).unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    // import accepts .tar.zst ...
    let zpath = dir.path().join("rootfs.tar.zst");
    std::fs::write(&zpath, &zst).unwrap();
    let plain =
        store.inspect(&store.import(&rootfs_tar(dir.path()), "plain").unwrap().manifest).unwrap();
    let z = store.inspect(&store.import(&zpath, "z").unwrap().manifest).unwrap();
    assert_eq!(plain.config["rootfs"]["diff_ids"], z.config["rootfs"]["diff_ids"]);
    // ... and a registry image with a zstd layer becomes a layer disk.
    let layer = store.blobs().put(&zst).unwrap();
    let config_digest = Digest::from_oci(z.manifest_json.config().digest()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest.to_string(), "size": z.manifest_json.config().size()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": layer.to_string(), "size": zst.len()}],
    });
    let m = store.blobs().put(manifest.to_string().as_bytes()).unwrap();
    store.db.set_ref("docker.io/library/zlayer:latest", &m).unwrap();
    let disks = store.layer_disks("zlayer").unwrap();
    let out = dir.path().join("x");
    let st = std::process::Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg(&disks[0])
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_eq!(std::fs::read(out.join("bin/hello")).unwrap(), b"#!/bin/sh\necho hi\n");
}

#[test]
fn images_in_use_are_kept_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    store.import(&rootfs_tar(dir.path()), "demo").unwrap();
    let disks = store.layer_disks("demo").unwrap();
    store.lease("pod-1", "demo").unwrap();
    // Not without force.
    assert!(matches!(store.remove("demo", false), Err(ImageError::InUse { .. })));
    // Forced: the name goes, the content (and the layer disk the pod has attached) stays.
    let (untagged, deleted) = store.remove("demo", true).unwrap();
    assert_eq!((untagged.len(), deleted.len()), (1, 0));
    assert!(disks[0].exists());
    assert!(store.gc().unwrap().is_empty());
    // Released: collected.
    assert_eq!(store.release("pod-1").unwrap(), 1);
    assert_eq!(store.gc().unwrap().len(), 3);
    assert!(!disks[0].exists());
}

#[test]
fn commit_adds_a_checked_layer_on_top_of_the_base() {
    use sha2::Digest as _;
    const MAX: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    store.import(&rootfs_tar(dir.path()), "base:1").unwrap();
    let base = store.resolve("base:1").unwrap();
    // A layer like the agent writes: a new file and a whiteout.
    let mut layer = Vec::new();
    {
        let mut b = tar::Builder::new(&mut layer);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/new", &b"new"[..]).unwrap();
        let mut w = tar::Header::new_gnu();
        w.set_size(0);
        w.set_mode(0o644);
        b.append_data(&mut w, "bin/.wh.hello", &b""[..]).unwrap();
        b.finish().unwrap();
    }
    let hex = format!("{:x}", sha2::Sha256::digest(&layer));
    let mut info = CommitInfo {
        created_by: "ironpod commit".into(),
        comment: Some("msg".into()),
        ..Default::default()
    };
    info.config.insert("Cmd".into(), serde_json::json!(["sh", "-c", "cat /etc/new"]));
    // Damaged in transit: refused, nothing tagged.
    let e = store
        .commit(
            &base,
            &layer[..layer.len() - 1],
            layer.len() as u64,
            &hex,
            u64::MAX,
            "new:1",
            &info,
        )
        .unwrap_err();
    assert!(e.to_string().contains("damaged"), "{e}");
    assert!(store.resolve("new:1").is_err());
    // A hostile layer: refused.
    let bad = hostile_tar(dir.path(), "bad.tar", &[("../escape", tar::EntryType::Regular, None)]);
    let bad = std::fs::read(bad).unwrap();
    let bad_hex = format!("{:x}", sha2::Sha256::digest(&bad));
    assert!(store
        .commit(&base, &bad[..], bad.len() as u64, &bad_hex, MAX, "new:1", &info)
        .is_err());
    assert!(store.resolve("new:1").is_err());
    // The real thing.
    // What the guest announces is checked before use: the digest's form (it names the
    // scratch file), the size against the limit; nothing is read or tagged.
    for bad_digest in ["../../../../../etc/passwd", "ABC", &format!("{hex}0"), &hex.to_uppercase()]
    {
        let e = store
            .commit(&base, &layer[..], layer.len() as u64, bad_digest, MAX, "new:1", &info)
            .unwrap_err();
        assert!(e.to_string().contains("malformed layer digest"), "{e}");
    }
    let e = store.commit(&base, &layer[..], 1 << 40, &hex, MAX, "new:1", &info).unwrap_err();
    assert!(e.to_string().contains("more than the"), "{e}");
    assert!(store.resolve("new:1").is_err());
    let s = store.commit(&base, &layer[..], layer.len() as u64, &hex, MAX, "new:1", &info).unwrap();
    let d = store.inspect("new:1").unwrap();
    assert_eq!(d.manifest_json.layers().len(), 2);
    assert_eq!(d.config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(d.config["rootfs"]["diff_ids"][1], format!("sha256:{hex}"));
    assert_eq!(d.config["config"]["Cmd"], serde_json::json!(["sh", "-c", "cat /etc/new"]));
    assert_eq!(store.history("new:1").unwrap()[0].comment().as_deref(), Some("msg"));
    assert_eq!(s.names, vec!["new:1".to_string()]);
    // A guest that holds its stream back holds up nothing else: the store is not locked
    // while the layer arrives.
    struct Gate(std::sync::mpsc::Receiver<()>, std::io::Cursor<Vec<u8>>);
    impl std::io::Read for Gate {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            if self.1.position() == 0 {
                let _ = self.0.recv();
            }
            self.1.read(b)
        }
    }
    let (open, gate) = std::sync::mpsc::channel();
    std::thread::scope(|sc| {
        let held = sc.spawn(|| {
            let other = ImageStore::open(&dir.path().join("root")).unwrap();
            let g = Gate(gate, std::io::Cursor::new(layer.clone()));
            other.commit(&base, g, layer.len() as u64, &hex, MAX, "new:2", &info).map(|_| ())
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(store.lock(true).expect("an exclusive lock while a commit streams"));
        open.send(()).unwrap();
        held.join().unwrap().unwrap();
    });
    // Both images' layer disks build; the base's layer disk is shared.
    let disks = store.layer_disks("new:1").unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0], store.layer_disks("base:1").unwrap()[0]);
}

#[test]
fn import_with_changes_sets_the_run_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("root")).unwrap();
    let tar = rootfs_tar(dir.path());
    let changes = vec![r#"CMD ["sleep", "inf"]"#.to_string(), "ENV A=1".to_string()];
    store.import_with(&tar, "pause", &changes).unwrap();
    let d = store.inspect("pause").unwrap();
    let c = &d.config["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["sleep", "inf"]));
    assert!(c["Env"].as_array().unwrap().iter().any(|e| e == "A=1"));
    // A bad instruction stores nothing.
    let e = store.import_with(&tar, "bad", &["RUN make".to_string()]).unwrap_err();
    assert!(matches!(e, ImageError::InvalidChange(_)), "{e}");
    assert!(store.inspect("bad").is_err());
    assert_eq!(store.list().unwrap().len(), 1);
}
