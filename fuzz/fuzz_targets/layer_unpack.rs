//! A layer tar unpacked into a temp directory: whatever the archive says (paths with `..`,
//! absolute paths, symlinks and hard links pointing out, devices, huge sizes), nothing may
//! appear outside the directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("temp dir");
    let root = outer.path().join("root");
    std::fs::create_dir(&root).expect("root");
    // Small caps: a fuzz input is small, and the caps' own checks are exercised too.
    let limits = ironpod_images::unpack::Limits { max_bytes: 64 << 20, max_members: 10_000 };
    let _ = ironpod_images::unpack::unpack(std::io::Cursor::new(data), &root, &limits);
    let around: Vec<_> = std::fs::read_dir(outer.path())
        .expect("read the temp dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(around, vec![std::ffi::OsString::from("root")], "the layer wrote outside its root");
});
