//! Pods restored from a pod template (the default for `ironpod run`): the first pod of a
//! size makes the template, the next ones restore it. Ten pods from one template each get
//! their own randomness, address, MAC, host name and clock; removing them leaves the
//! template as it was; `--no-template` and IRONPOD_NO_TEMPLATE boot; a damaged template is
//! made again.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironpod_tests::{require_linux_kvm, text, TestRoot};

/// What a pod prints: 16 random bytes, a UUID from the kernel, its host name, its card's
/// MAC and address, the guest's uptime and the time of day.
const PROBE: &str = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; \
    cat /proc/sys/kernel/random/uuid; hostname; cat /sys/class/net/eth0/address; \
    ip -4 -o addr show eth0 | awk '{print $4}'; cut -d' ' -f1 /proc/uptime; date +%s; \
    sleep 600";

/// The one template under the root (its directory).
fn template_dir(root: &TestRoot) -> PathBuf {
    ironpod_tests::only_template(root.path())
}

/// A file's identity and last change: any write to it changes its ctime.
fn stamp(p: &Path) -> (u64, u64, i64, i64, Vec<u8>) {
    let m = std::fs::metadata(p).unwrap();
    let small = if m.len() < (16 << 20) { std::fs::read(p).unwrap() } else { Vec::new() };
    (m.ino(), m.len(), m.ctime(), m.ctime_nsec(), small)
}

/// The probe's lines of pod `id`, once it printed them all.
fn probe_lines(root: &TestRoot, id: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = root.ironpod(&["logs", id]);
        let lines: Vec<String> = text(&logs.stdout).lines().map(str::to_string).collect();
        if lines.len() >= 7 {
            return lines;
        }
        assert!(Instant::now() < deadline, "pod {id} printed {lines:?}: {}", text(&logs.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn monitor_log(root: &TestRoot, id: &str) -> String {
    std::fs::read_to_string(root.path().join("containers").join(id).join("monitor.log"))
        .unwrap_or_default()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn ten_pods_from_one_template_are_distinct_and_leave_it_untouched() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let t = Instant::now();
    let first = root.ok(&["run", "-d", "demo", "sh", "-c", PROBE]);
    println!("first pod (makes the template): {:?}", t.elapsed());
    let template = template_dir(&root);
    let made = std::fs::metadata(template.join("state")).unwrap().mtime() as u64;
    let files = ["state", "memory", "inputs.json"].map(|f| template.join(f));
    let before: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    let mut ids = vec![first.trim().to_string()];
    for _ in 0..9 {
        let t = Instant::now();
        ids.push(root.ok(&["run", "-d", "demo", "sh", "-c", PROBE]).trim().to_string());
        println!("pod from the template: {:?}", t.elapsed());
    }
    let mut seen: [HashSet<String>; 5] = Default::default();
    for id in &ids {
        let log = monitor_log(&root, id);
        assert!(!log.contains("no pod template"), "pod {id} booted: {log}");
        let l = probe_lines(&root, id);
        println!("{id}: {l:?}");
        for (set, v) in seen.iter_mut().zip(&l[..5]) {
            assert!(set.insert(v.clone()), "pod {id} repeats {v:?} of another pod");
        }
        assert_eq!(l[2], id[..12], "host name");
        let settings = root.inspect(id);
        let mac = settings["NetworkSettings"]["MacAddress"].as_str().unwrap_or_default();
        assert_eq!(l[3], mac, "the card has the pod's MAC: {settings}");
        let ip = settings["NetworkSettings"]["IPAddress"].as_str().unwrap_or_default();
        assert!(l[4].starts_with(&format!("{ip}/")), "{} vs {ip}", l[4]);
        let date: u64 = l[6].parse().unwrap();
        assert!(date.abs_diff(now()) < 5 || date <= now(), "guest time {date}, host {}", now());
        assert!(date >= made, "guest time {date} before the template was made ({made})");
    }
    // The uptime of a restored guest counts from the template's boot.
    let last = probe_lines(&root, ids.last().unwrap());
    let last_uptime: f64 = last[5].parse().unwrap();
    let last_date: u64 = last[6].parse().unwrap();
    assert!(
        last_uptime + 2.0 >= (last_date - made) as f64,
        "uptime {last_uptime} s, {} s after the template was made",
        last_date - made
    );
    // The first pod's writable disk holds what its guest wrote: not the inode tables its
    // kernel would zero in the background without `noinit_itable` (tens of MiB by now).
    let disk = ironpod_pods::paths::writable_disk(root.path(), &ids[0]);
    let allocated = std::fs::metadata(&disk).unwrap().blocks() * 512;
    assert!(allocated < 16 << 20, "the writable disk holds {allocated} bytes");
    // Pods on the host: one VMM each; removing them leaves the template as it was.
    let out = root.ok(&["rm", "-f", &ids[0], &ids[1], &ids[2]]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let after: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    assert!(before == after, "the template changed");
    // `vm template ls` counts the VMMs restored from it; `prune` keeps a template in use.
    let ls: serde_json::Value =
        serde_json::from_str(&root.ok(&["vm", "template", "ls", "--json"])).unwrap();
    assert_eq!(ls.as_array().map(Vec::len), Some(1), "{ls}");
    assert_eq!((ls[0]["users"].as_u64(), ls[0]["current"].as_bool()), (Some(7), Some(true)));
    assert_eq!(root.ok(&["vm", "template", "prune"]), "", "a template in use was removed");
    // A pod booted cold: its guest has been up for seconds, not since the template.
    let cold = root.ok(&["run", "-d", "--no-template", "demo", "sh", "-c", PROBE]);
    let l = probe_lines(&root, cold.trim());
    let uptime: f64 = l[5].parse().unwrap();
    let age = now() - made;
    assert!(uptime < age as f64, "cold uptime {uptime} s, template {age} s old");
    let mut cmd = root.cmd(&["run", "--rm", "demo", "cut", "-d.", "-f1", "/proc/uptime"]);
    let out = cmd.env("IRONPOD_NO_TEMPLATE", "1").output().unwrap();
    let up: u64 = text(&out.stdout).trim().parse().unwrap_or(u64::MAX);
    assert!(up < now() - made, "IRONPOD_NO_TEMPLATE boots: uptime {up}, {}", text(&out.stderr));
    // With its pods gone, `prune` removes it.
    let mut rm = vec!["rm", "-f", cold.trim()];
    rm.extend(ids[3..].iter().map(String::as_str));
    root.ok(&rm);
    let key = template.file_name().unwrap().to_string_lossy().into_owned();
    // (A VMM may take a moment to end after `rm -f` returns.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pruned = root.ok(&["vm", "template", "prune"]);
        if !pruned.is_empty() || Instant::now() > deadline {
            assert_eq!(pruned, format!("{key}\n"));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!template.exists());
    root.clean_up();
}

#[test]
fn a_damaged_template_is_made_again() {
    let _w = require_linux_kvm();
    let root = TestRoot::with_demo();
    let out = root.ironpod(&["run", "--rm", "demo", "echo", "one"]);
    assert_eq!(text(&out.stdout), "one\n", "{}", text(&out.stderr));
    let state = template_dir(&root).join("state");
    let mut bytes = std::fs::read(&state).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&state, &bytes).unwrap();
    let out = root.ironpod(&["run", "--rm", "demo", "echo", "two"]);
    assert_eq!(text(&out.stdout), "two\n", "{}", text(&out.stderr));
    let again = std::fs::read(template_dir(&root).join("state")).unwrap();
    assert_ne!(again, bytes, "the template was made again");
    // Leftovers: none but the template.
    let names: Vec<String> = std::fs::read_dir(root.path().join("templates/vm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    root.clean_up();
}
