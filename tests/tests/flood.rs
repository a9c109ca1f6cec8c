//! A hostile program, root in a privileged container, floods every way out of its VM at once
//! (console, network card, vsock, its stdout, its writable disk; `tests/src/bin/hostile-pod.rs`)
//! while a neighbour pod serves web pages: the host side stays bounded and the neighbour keeps
//! answering.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ironpod_tests::web::{free_port, http_get, try_http_get, web_server};
use ironpod_tests::{import_with_program, require_linux_kvm, vm_dir_of, TestRoot};

/// The flood's counters as the program last reported them.
fn flood_stats(root: &TestRoot) -> std::collections::HashMap<String, u64> {
    let out = root.ok(&["exec", "hostile", "cat", "/dev/shm/flood-stats"]);
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Bytes of `dir`'s files whose names start with `prefix`, and how many there are.
fn files_starting(dir: &Path, prefix: &str) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix).then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect()
}

#[test]
fn a_hostile_pod_floods_every_way_out_and_its_neighbour_keeps_answering() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    import_with_program(&root, "hostile-pod", "hostile");

    let port = free_port();
    let web = web_server("still-here", 10);
    let publish = format!("127.0.0.1:{port}:80");
    root.ok(&["run", "-d", "--name", "web", "-p", &publish, "demo", "sh", "-c", &web]);
    assert!(http_get(port, "/").contains("still-here"));
    let gateway = root.inspect("web")["NetworkSettings"]["Gateway"].as_str().unwrap().to_string();

    let (disk_size, log_size) = (64u64 << 20, 1u64 << 20);
    let id = root.ok(&[
        "run",
        "-d",
        "--name",
        "hostile",
        "--privileged",
        "--storage-opt",
        "size=64m",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
        "hostile",
        "/hostile-pod",
        &gateway,
    ]);
    let id = id.trim().to_string();
    let vmm = root.inspect(&id)["Pod"]["VmmPid"].as_u64().unwrap() as u32;
    let console = vm_dir_of(vmm).join("console.log");
    let log_dir = ironpod_pods::paths::log_path(root.path(), &id).parent().unwrap().to_path_buf();
    let disk = ironpod_pods::paths::writable_disk(root.path(), &id);

    // Thirty seconds of flood, and on until every way out has been flooded (a slow machine
    // fills the disk later): the neighbour answers every request, the hostile pod's host
    // side stays within its bounds the whole time.
    let (mut peak_kib, mut answers, mut slowest) = (0u64, 0u32, Duration::ZERO);
    let start = Instant::now();
    let kinds = ["console", "udp", "vsock", "stdout", "disk_full"];
    let all_seen = |stats: &std::collections::HashMap<String, u64>| {
        kinds.iter().all(|k| stats.get(*k).is_some_and(|n| *n > 0))
    };
    let mut stats = std::collections::HashMap::new();
    while start.elapsed() < Duration::from_secs(30)
        || (!all_seen(&stats) && start.elapsed() < Duration::from_secs(150))
    {
        let t = Instant::now();
        match try_http_get(port, "/", Duration::from_secs(20)) {
            Ok(s) if s.contains("still-here") => answers += 1,
            other => panic!("the neighbour stopped answering during the flood: {other:?}"),
        }
        slowest = slowest.max(t.elapsed());
        if let Some(kib) = ironpod_pods::vm::overhead_kib(vmm, 256) {
            peak_kib = peak_kib.max(kib);
        }
        let console_bytes = std::fs::metadata(&console).map_or(0, |m| m.len());
        assert!(
            console_bytes <= ironpod_vmm::devices::serial::CONSOLE_FILE_LIMIT + 128,
            "the console log grew to {console_bytes} bytes"
        );
        let logs = files_starting(&log_dir, "ctr.log");
        assert!(logs.len() <= 2 && logs.iter().all(|(_, n)| *n <= log_size), "{logs:?}");
        let allocated = std::fs::metadata(&disk).unwrap().blocks() * 512;
        assert!(allocated <= disk_size, "the writable disk holds {allocated} bytes");
        if start.elapsed() >= Duration::from_secs(30) {
            stats = flood_stats(&root);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let stats = flood_stats(&root);
    println!(
        "hostile pod, {:.0} s: {stats:?}; neighbour answered {answers} times (slowest \
         {slowest:?}); the VMM's own memory peaked at {peak_kib} KiB",
        start.elapsed().as_secs_f64()
    );
    for what in kinds {
        assert!(stats.get(what).is_some_and(|n| *n > 0), "no {what} flood: {stats:?}");
    }
    assert!(peak_kib > 0 && peak_kib < 64 << 10, "the VMM's own memory grew to {peak_kib} KiB");
    // The neighbour's own pod is unharmed too: exec still works.
    assert_eq!(root.ok(&["exec", "web", "cat", "/www/index.html"]), "still-here\n");
    // The flood ends with its pod, and nothing of it stays.
    root.ok(&["rm", "-f", "hostile"]);
    assert!(!log_dir.exists() && !disk.exists(), "the hostile pod left files");
    assert!(http_get(port, "/").contains("still-here"));
    root.ok(&["rm", "-f", "web"]);
}
