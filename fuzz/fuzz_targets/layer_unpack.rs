//! A layer tar unpacked into a temp directory: whatever the archive says (paths with `..`,
//! absolute paths, symlinks and hard links pointing out, devices, huge sizes), nothing may
//! appear outside the directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("temp dir");
    let root = outer.path().join("root");
    std::fs::create_dir(&root).expect("root");
    let _ = ironpod_images::unpack::unpack(std::io::Cursor::new(data), &root);
    let around: Vec<_> = std::fs::read_dir(outer.path())
        .expect("read the temp dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(around, vec![std::ffi::OsString::from("root")], "the layer wrote outside its root");
});
