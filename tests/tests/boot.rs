//! Our VMM boots the real guest kernel to the agent on real KVM: vsock handshake, ping,
//! SMP, virtio-blk, both kernel formats, shutdown and failure paths.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ironpod_pods::agent_client::{connect_hybrid, ClientError};
use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_protocol::ErrorKind;
use ironpod_tests::require_linux_kvm;
use ironpod_vmm::config::DiskConfig;

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn spec() -> VmSpec {
    VmSpec::with_defaults()
        .expect("guest assets installed (cargo xtask kernel && cargo xtask initramfs)")
}

fn boot(spec: &VmSpec) -> (RunningVm, ironpod_pods::agent_client::AgentClient) {
    let mut vm = RunningVm::start(spec).expect("start VMM");
    let agent = vm.wait_agent(BOOT_TIMEOUT).unwrap_or_else(|e| {
        let console = std::fs::read_to_string(vm.dir().join("console.log")).unwrap_or_default();
        panic!("agent not ready: {e}\nVMM: {}\nconsole:\n{console}", vm.vmm_log())
    });
    println!(
        "booted {} ({} vCPU, {} disk(s)) with ironpod-vmm pid {}: agent ready in {} ms",
        spec.kernel.display(),
        spec.vcpus,
        spec.disks.len(),
        vm.pid(),
        vm.started().elapsed().as_millis()
    );
    (vm, agent)
}

fn shutdown_clean(mut vm: RunningVm, mut agent: ironpod_pods::agent_client::AgentClient) {
    let status = vm.shutdown(&mut agent, Duration::from_secs(30)).expect("shutdown");
    assert_eq!(status.code(), Some(0), "VMM exit status after shutdown; log: {}", vm.vmm_log());
}

#[test]
fn boots_to_agent_handshake_ping_and_clean_shutdown() {
    let _watchdog = require_linux_kvm();
    let t = Instant::now();
    let (vm, mut agent) = boot(&spec());
    println!("agent ready after {:?}", t.elapsed());
    assert_eq!(agent.agent_version(), env!("CARGO_PKG_VERSION"));
    for _ in 0..10 {
        agent.ping().unwrap();
    }
    let info = agent.info().unwrap();
    assert!(info.kernel_release.starts_with("6.12."), "guest kernel {}", info.kernel_release);
    assert_ne!(info.kernel_release, host_kernel(), "the guest must run its own kernel");
    assert_eq!(info.cpus_online, 1);
    assert!(info.memory_total_kib > 200 * 1024, "{} KiB", info.memory_total_kib);
    let sock = vm.vsock_path().to_path_buf();
    shutdown_clean(vm, agent);
    assert!(!sock.exists(), "the VMM removes its vsock socket");
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

#[test]
fn bzimage_boots_too() {
    let _watchdog = require_linux_kvm();
    let mut s = spec();
    s.kernel = s.kernel.with_file_name("bzImage");
    assert!(s.kernel.is_file(), "{} missing", s.kernel.display());
    let (vm, mut agent) = boot(&s);
    agent.ping().unwrap();
    shutdown_clean(vm, agent);
}

#[test]
fn two_vms_at_once_with_two_vcpus_each() {
    let _watchdog = require_linux_kvm();
    let mut s = spec();
    s.vcpus = 2;
    let mut a = RunningVm::start(&s).unwrap();
    let mut b = RunningVm::start(&s).unwrap();
    let mut ca =
        a.wait_agent(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("vm a: {e}: {}", a.vmm_log()));
    let mut cb =
        b.wait_agent(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("vm b: {e}: {}", b.vmm_log()));
    let (ia, ib) = (ca.info().unwrap(), cb.info().unwrap());
    assert_eq!((ia.cpus_online, ib.cpus_online), (2, 2));
    assert_ne!(ia.boot_id, ib.boot_id, "two separate guests");
    // Each VM answers on its own socket while the other runs.
    ca.ping().unwrap();
    cb.ping().unwrap();
    shutdown_clean(a, ca);
    shutdown_clean(b, cb);
}

fn ext4_image(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let content = dir.join(format!("{name}-content"));
    std::fs::create_dir_all(&content).unwrap();
    for (f, data) in files {
        std::fs::write(content.join(f), data).unwrap();
    }
    let img = dir.join(format!("{name}.ext4"));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 << 20).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
    img
}

#[test]
fn virtio_blk_read_only_and_read_write_disks() {
    let _watchdog = require_linux_kvm();
    let dir = tempfile::tempdir().unwrap();
    let ro = ext4_image(dir.path(), "ro", &[("hello.txt", b"hello from a read-only disk\n")]);
    let rw = ext4_image(dir.path(), "rw", &[]);
    let ro_before = std::fs::read(&ro).unwrap();
    let mut s = spec();
    s.disks = vec![
        DiskConfig { path: ro.clone(), read_only: true },
        DiskConfig { path: rw.clone(), read_only: false },
    ];
    let (vm, mut agent) = boot(&s);

    agent.mount("/dev/vda", "/mnt/ro", "ext4", true).unwrap();
    assert_eq!(agent.read_file("/mnt/ro/hello.txt").unwrap(), b"hello from a read-only disk\n");
    // The filesystem refuses writes, and so does the device underneath it.
    let e = agent.write_file("/mnt/ro/new.txt", b"x").unwrap_err();
    assert!(matches!(e, ClientError::Agent(ref a) if a.kind == ErrorKind::ReadOnly), "{e}");
    let e = agent.write_file("/dev/vda", b"overwrite the superblock").unwrap_err();
    assert!(
        matches!(e, ClientError::Agent(ref a) if matches!(a.kind, ErrorKind::ReadOnly | ErrorKind::PermissionDenied)),
        "{e}"
    );
    let e = agent.mount("/dev/vda", "/mnt/ro-as-rw", "ext4", false).unwrap_err();
    assert!(
        matches!(e, ClientError::Agent(_)),
        "mounting a read-only disk read-write must fail: {e}"
    );

    // A large file through the read-write disk survives the VM (flush on shutdown).
    agent.mount("/dev/vdb", "/mnt/rw", "ext4", false).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    agent.write_file("/mnt/rw/data.bin", &data).unwrap();
    assert_eq!(agent.read_file("/mnt/rw/data.bin").unwrap(), data);
    shutdown_clean(vm, agent);

    assert_eq!(std::fs::read(&ro).unwrap(), ro_before, "the read-only image is untouched");
    let out = Command::new("debugfs").args(["-R", "cat /data.bin"]).arg(&rw).output().unwrap();
    assert_eq!(out.stdout, data, "data written in the guest is in the image after shutdown");
}

#[test]
fn vsock_refuses_ports_nobody_listens_on() {
    let _watchdog = require_linux_kvm();
    let (vm, mut agent) = boot(&spec());
    match connect_hybrid(vm.vsock_path(), 4444, Duration::from_secs(10)) {
        Err(ClientError::Refused(4444)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Many connections in a row, each with a handshake: no leak, no stall.
    for _ in 0..20 {
        let s = connect_hybrid(
            vm.vsock_path(),
            ironpod_protocol::AGENT_VSOCK_PORT,
            Duration::from_secs(10),
        )
        .unwrap();
        let mut c = ironpod_pods::agent_client::AgentClient::handshake(s).unwrap();
        c.ping().unwrap();
    }
    agent.ping().unwrap();
    shutdown_clean(vm, agent);
}

#[test]
fn killed_vmm_is_noticed_quickly() {
    let _watchdog = require_linux_kvm();
    let (mut vm, mut agent) = boot(&spec());
    agent.set_timeout(Duration::from_secs(5)).unwrap();
    // SAFETY: killing the VMM child we started.
    unsafe { libc::kill(vm.pid() as i32, libc::SIGKILL) };
    let t = Instant::now();
    assert!(agent.ping().is_err(), "a ping to a killed VM must fail");
    assert!(t.elapsed() < Duration::from_secs(6));
    assert!(vm.wait_exit(Duration::from_secs(5)).is_some());
}

#[test]
fn a_missing_initramfs_is_reported() {
    let _watchdog = require_linux_kvm();
    let mut s = spec();
    s.initrd = PathBuf::from("/nonexistent/initramfs.img");
    // The launcher finds it missing while making the VMM's jail.
    let e = RunningVm::start(&s).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/initramfs.img"), "{e}");
}

#[test]
fn a_guest_without_init_ends_instead_of_hanging() {
    let _watchdog = require_linux_kvm();
    // No init the kernel can run: it panics, and panic=-1 + reboot=k turn that into a reset.
    let mut s = spec();
    s.cmdline_extra = "rdinit=/does-not-exist init=/does-not-exist".into();
    let mut vm = RunningVm::start(&s).unwrap();
    let e = vm.wait_agent(BOOT_TIMEOUT).unwrap_err();
    assert!(e.to_string().contains("exited"), "{e}");
    assert!(vm.wait_exit(Duration::from_secs(5)).is_some());
}

#[test]
fn image_layer_disk_mounts_as_erofs_in_the_guest() {
    let _watchdog = require_linux_kvm();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "served from a shared read-only layer\n").unwrap();
    std::os::unix::fs::symlink("/etc/motd", rootfs.join("motd-link")).unwrap();
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
    let store = ironpod_images::ImageStore::open(&dir.path().join("state")).unwrap();
    store.import(&tarball, "layer-test").unwrap();
    let disks = store.layer_disks("layer-test").unwrap();

    // Two VMs share the same layer file, read-only, at the same time.
    let mut s = spec();
    s.disks = vec![DiskConfig { path: disks[0].clone(), read_only: true }];
    let (vm1, mut a1) = boot(&s);
    let (vm2, mut a2) = boot(&s);
    for agent in [&mut a1, &mut a2] {
        agent.mount("/dev/vda", "/layer", "erofs", true).unwrap();
        assert_eq!(
            agent.read_file("/layer/etc/motd").unwrap(),
            b"served from a shared read-only layer\n"
        );
    }
    shutdown_clean(vm1, a1);
    shutdown_clean(vm2, a2);
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn free_page_reporting_gives_freed_guest_memory_back() {
    let _watchdog = require_linux_kvm();
    let mut s = spec();
    s.free_page_reporting = true;
    s.cmdline_extra = "page_reporting.page_reporting_order=3".into();
    let (vm, mut agent) = boot(&s);
    let before = rss_kib(vm.pid());
    // The guest fills 32 MiB of tmpfs: the host now backs those pages.
    let chunk = vec![0x5a_u8; 512 * 1024];
    for _ in 0..64 {
        agent
            .call(ironpod_protocol::RequestBody::WriteFile {
                path: "/tmp/big".into(),
                data: chunk.clone(),
                append: true,
                attrs: None,
            })
            .unwrap();
    }
    let filled = rss_kib(vm.pid());
    assert!(filled >= before + 24 * 1024, "32 MiB written but RSS {before} → {filled} KiB");
    // The guest frees them; free page reporting hands them back to the host.
    agent.remove_file("/tmp/big").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = rss_kib(vm.pid());
    while now + 20 * 1024 > filled && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now = rss_kib(vm.pid());
    }
    println!(
        "VMM RSS: {before} KiB at boot, {filled} KiB with 32 MiB in use, {now} KiB after freeing"
    );
    assert!(
        now + 20 * 1024 <= filled,
        "freed guest memory stayed on the host: {filled} → {now} KiB"
    );
    // The guest still works, and memory it reported reads back as zeros when reused.
    agent.ping().unwrap();
    agent.write_file("/tmp/again", &chunk).unwrap();
    assert_eq!(agent.read_file("/tmp/again").unwrap(), chunk);
    shutdown_clean(vm, agent);
}

/// A Linux guest paused and snapshotted, then restored twice at once in new VMM processes
/// with other sockets: each clone has the guest's files and goes on with its clock moved on
/// by the time between; the agent answers on the new vsock socket (the guest was told its
/// connections were gone, and listens again); reseeded with host entropy, the clones' random
/// numbers differ; the memory file is never written.
#[test]
fn snapshot_and_restore_of_a_running_guest() {
    use ironpod_pods::vmm_api;
    let _watchdog = require_linux_kvm();
    let mut s = spec();
    s.jail = false; // snapshot files where the test can see them
    s.spare_disks = 1; // the control socket
    s.memory_mib = 128;
    let (vm, mut agent) = boot(&s);
    agent.write_file("/run/marker", b"written before the snapshot").unwrap();
    let uptime = |a: &mut ironpod_pods::agent_client::AgentClient| -> f64 {
        let text = String::from_utf8(a.read_file("/proc/uptime").unwrap()).unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    let up_before = uptime(&mut agent);
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let t = Instant::now();
    vmm_api::pause(&vm.api_path()).unwrap();
    vmm_api::snapshot(&vm.api_path(), &state, &mem).unwrap();
    println!(
        "paused and snapshotted in {:?}: state {} bytes, memory {} MiB sparse",
        t.elapsed(),
        std::fs::metadata(&state).unwrap().len(),
        std::fs::metadata(&mem).unwrap().len() >> 20
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vm.dir().join("vm.json")).unwrap()).unwrap();
    drop(agent);
    drop(vm);
    // What the clones must not change: the file's time and its first 32 MiB (the kernel,
    // the page tables, the early allocations: pages every clone writes to).
    let fingerprint = || {
        use sha2::Digest;
        use std::io::Read;
        let mut head = vec![0u8; 32 << 20];
        std::fs::File::open(&mem).unwrap().read_exact(&mut head).unwrap();
        let meta = std::fs::metadata(&mem).unwrap();
        (meta.modified().unwrap(), sha2::Sha256::digest(&head).to_vec())
    };
    let mem_before = fingerprint();
    std::thread::sleep(Duration::from_secs(2));

    let clone = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        let mut c = config.clone();
        c["vsock"]["uds_path"] = d.join("v.sock").to_string_lossy().into();
        c["api_socket"] = d.join("api.sock").to_string_lossy().into();
        c["serial"] = d.join("console.log").to_string_lossy().into();
        c["kernel"] = "".into();
        c["restore"] = serde_json::json!({ "state": state, "memory": mem });
        std::fs::write(d.join("vm.json"), c.to_string()).unwrap();
        let child = Command::new(ironpod_pods::assets::vmm_binary())
            .arg("--config")
            .arg(d.join("vm.json"))
            .stderr(std::fs::File::create(d.join("vmm.log")).unwrap())
            .spawn()
            .unwrap();
        (d, child)
    };
    let t = Instant::now();
    let mut randomness = Vec::new();
    let mut clones = vec![clone("a"), clone("b")];
    for (d, child) in &mut clones {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut agent = loop {
            match ironpod_pods::agent_client::AgentClient::open(
                &d.join("v.sock"),
                Duration::from_secs(10),
            ) {
                Ok(a) => break a,
                Err(e) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let log = std::fs::read_to_string(d.join("vmm.log")).unwrap_or_default();
                        panic!("restored VMM ended ({status}): {log}");
                    }
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("restored agent never answered: {e}"),
            }
        };
        agent.ping().unwrap();
        agent.restored(false).unwrap();
        let uuid = agent.read_file("/proc/sys/kernel/random/uuid").unwrap();
        let mut bytes = Vec::new();
        for _ in 0..4 {
            bytes.extend(agent.read_file("/proc/sys/kernel/random/uuid").unwrap());
        }
        randomness.push((uuid, bytes));
        assert_eq!(agent.read_file("/run/marker").unwrap(), b"written before the snapshot");
        let up = uptime(&mut agent);
        assert!(up >= up_before + 2.0, "the clock moved on: {up_before} s → {up} s");
        agent.write_file("/run/mine", d.to_string_lossy().as_bytes()).unwrap();
        assert_eq!(agent.read_file("/run/mine").unwrap(), d.to_string_lossy().as_bytes());
        println!(
            "clone {} answers {:?} after the restores began; uptime {up_before} s → {up} s",
            d.display(),
            t.elapsed()
        );
    }
    for (_, child) in &mut clones {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Reseeded from the host, the clones' generators part: no UUID in common.
    let (a, b) = (&randomness[0], &randomness[1]);
    assert_ne!(a.0, b.0, "two clones gave the same UUID");
    assert_ne!(a.1, b.1);
    assert!(fingerprint() == mem_before, "the clones' writes never reach the memory file");
}
