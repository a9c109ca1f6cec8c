use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

fn tar_with(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let p = dir.join(name);
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.finish().unwrap();
    p
}

fn step<'a>(parent: Option<&'a Digest>, layer: Option<&'a Path>, key: &'a str) -> BuildStep<'a> {
    BuildStep {
        parent,
        layer,
        config: json!({"Env": ["A=1"], "Cmd": ["sh"], "Healthcheck": {"Test": ["CMD", "true"]}}),
        created: "2026-01-01T00:00:00Z".into(),
        created_by: "/bin/sh -c #(nop) ENV A=1".into(),
        author: None,
        cache_key: key,
    }
}

#[test]
fn steps_from_scratch_stack_layers_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let first = tar_with(dir.path(), "a.tar", &[("a.txt", b"a")]);
    let base = store.add_step(&step(None, Some(&first), "k1")).unwrap();
    let env = store.add_step(&step(Some(&base), None, "k2")).unwrap();
    let second = tar_with(dir.path(), "b.tar", &[("b.txt", b"b")]);
    let mut s = step(Some(&env), Some(&second), "k3");
    s.created_by = "/bin/sh -c echo b > /b.txt".into();
    s.author = Some("me".into());
    let top = store.add_step(&s).unwrap();
    let c = store.raw_config(&top).unwrap();
    assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(c["config"]["Healthcheck"]["Test"][1], "true", "Docker's fields are kept");
    assert_eq!(c["author"], "me");
    let h = c["history"].as_array().unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[1]["empty_layer"], true);
    assert!(h[2].get("empty_layer").is_none());
    assert_eq!(h[2]["created_by"], "/bin/sh -c echo b > /b.txt");
    // Found by digest, kept by the cache, not listed; named on request.
    assert_eq!(store.resolve(&top.to_string()).unwrap(), top);
    assert_eq!(store.cached_step("k3").unwrap(), Some(top.clone()));
    assert_eq!(store.cached_step("nope").unwrap(), None);
    assert!(store.list().unwrap().is_empty());
    store.gc().unwrap();
    assert_eq!(store.layer_disks_of(&top).unwrap().len(), 2);
    let s = store.tag_manifest(&top, "built:1").unwrap();
    assert_eq!(s.names, vec!["built:1".to_string()]);
    assert_eq!(store.resolve("built:1").unwrap(), top);
    assert!(store.tag_manifest(&top, "bad name!").is_err());
}

#[test]
fn pruning_the_cache_keeps_named_images_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let t = tar_with(dir.path(), "a.tar", &[("a.txt", b"a")]);
    let kept = store.add_step(&step(None, Some(&t), "k1")).unwrap();
    let u = tar_with(dir.path(), "b.tar", &[("b.txt", b"bb")]);
    let gone = store.add_step(&step(None, Some(&u), "k2")).unwrap();
    store.tag_manifest(&kept, "keep").unwrap();
    let (n, deleted, freed) = store.prune_build_cache().unwrap();
    assert!(freed > 0);
    assert_eq!(n, 2);
    assert!(deleted.contains(&gone.to_string()), "{deleted:?}");
    assert_eq!(store.cached_step("k2").unwrap(), None);
    assert_eq!(store.resolve("keep").unwrap(), kept);
    assert!(store.resolve(&gone.to_string()).is_err());
}

#[test]
fn a_hostile_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let p = dir.path().join("evil.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    let mut h = tar::Header::new_gnu();
    let bytes = h.as_mut_bytes();
    bytes[..100].fill(0);
    bytes[..9].copy_from_slice(b"../escape");
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    b.finish().unwrap();
    assert!(store.add_step(&step(None, Some(&p), "k")).is_err());
    assert_eq!(store.cached_step("k").unwrap(), None);
}
