//! ironpod under Kubernetes' CRI: Debian's containerd 1.6 with its CRI plugin, a pod with the
//! `ironpod` runtime handler, driven through the CRI gRPC API the way a kubelet does.

use std::path::Path;
use std::time::{Duration, Instant};

use ironpod_tests::containerd::{
    metric, mounts_with, processes_with, text, Containerd, APP2_IMAGE, APP_IMAGE, DEMO_IMAGE,
};
use ironpod_tests::cri::{container_config, log_path, pod_config, ContainerState, Cri};
use ironpod_tests::require_linux_kvm;

/// The non-empty virtio disks the guest sees, as "serial size" lines.
const LIST_DISKS: &str =
    "for d in /sys/block/vd*; do s=$(cat $d/size); [ $s -gt 0 ] && echo $(cat $d/serial) $s; done; true";

/// The pod VM's VMM: the sandbox task's pid as containerd reports it.
fn vmm_pid(c: &Containerd, pod: &str) -> u32 {
    let tasks = c.tasks();
    tasks.iter().find(|t| t.0 == pod).map(|t| t.1).unwrap_or_else(|| panic!("{tasks:?}"))
}

fn exec_ok(cri: &mut Cri, id: &str, script: &str) -> String {
    let (out, err, code) = cri.exec_sync(id, &["sh", "-c", script], 60).expect("ExecSync");
    assert_eq!(code, 0, "{script}: stdout {out:?} stderr {err:?}");
    out
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cri_pod_with_two_containers_in_one_vm() {
    let _w = require_linux_kvm();
    let c = Containerd::shared_cri();
    c.add_app2_image();
    let mut cri = Cri::connect(&c.socket());
    let v = cri.version().expect("CRI Version");
    assert_eq!(v.runtime_name, "containerd");
    assert!(cri.has_image(APP_IMAGE).unwrap(), "images: {}", c.log());

    let logs = c.dir().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let pod_cfg = pod_config("web", &logs);
    let pod = cri
        .run_pod(&pod_cfg, "ironpod")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));
    assert_eq!(cri.pod_state(&pod).unwrap(), 0, "SANDBOX_READY");
    let vmm = vmm_pid(c, &pod);
    let vmm_cmd = std::fs::read_to_string(format!("/proc/{vmm}/cmdline")).unwrap();
    assert!(vmm_cmd.contains("ironpod-vmm"), "{vmm_cmd:?}");
    let vm_dir = ironpod_tests::vm_dir_of(vmm);
    // The pod's host side: the VMM jailed as a user of its own, in the pod's host cgroup,
    // whose usage the sandbox task's metrics report.
    let cg = Path::new("/sys/fs/cgroup/ironpod").join(format!("pod-{pod}"));
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|p| p == vmm.to_string()), "VMM {vmm} not in {procs}");
    let status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
    assert!(!status.lines().any(|l| l.starts_with("Uid:\t0")), "{status}");
    // Restored from the pod template, with no host file shared yet: no virtiofsd, and the
    // guest's memory is still the template's memory file mapped copy on write.
    let guest_ram_in_memfd =
        || std::fs::read_to_string(format!("/proc/{vmm}/maps")).unwrap().contains("memfd:ironpod");
    let share_server = || {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
        procs
            .lines()
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "virtiofsd")
            })
            .map(str::to_string)
    };
    assert_eq!(share_server(), None, "a virtiofsd in the pod's cgroup");
    assert!(!guest_ram_in_memfd(), "the sandbox's memory was copied");
    let max: u64 = std::fs::read_to_string(cg.join("memory.max")).unwrap().trim().parse().unwrap();
    let out = c.ctr(&["task", "metrics", &pod]);
    let m = text(&out.stdout);
    assert!(out.status.success(), "metrics: {}", text(&out.stderr));
    let value = |k: &str| metric(&m, k);
    assert_eq!(value("memory.usage_limit"), max, "{m}");
    assert!(value("memory.usage ") > 0 && value("memory.usage ") <= max, "{m}");

    // A: the demo image, the same layer as the pause image the VM booted with, and a
    // service account token the way a kubelet gives it (a projected volume).
    let mut a_cfg = container_config(
        "a",
        DEMO_IMAGE,
        &["sh", "-c", "echo hello-from-a; echo oops >&2; exec sleep 3600"],
    );
    let sa = c.dir().join("pod-web/volumes/kubernetes.io~projected/kube-api-access");
    std::fs::create_dir_all(&sa).unwrap();
    kubelet_write(&sa, "..2026_12_05_01", &[("token", "tok-1"), ("namespace", "default")]);
    a_cfg.mounts = vec![volume(&sa, "/var/run/secrets/kubernetes.io/serviceaccount", true)];
    let a = cri.create_container(&pod, &a_cfg, &pod_cfg).expect("CreateContainer a");
    cri.start_container(&a).expect("StartContainer a");
    let disks_before = exec_ok(&mut cri, &a, LIST_DISKS);
    // A binds the pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`: the guest got
    // copies, so still no share and the template's memory is still mapped copy on write.
    // (containerd gives a pod without its own a copy of the host's `/etc/hosts`.)
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert_eq!(exec_ok(&mut cri, &a, "cat /etc/hosts"), hosts);
    // (A pod on the node's network: containerd writes the node's name.)
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(exec_ok(&mut cri, &a, "cat /etc/hostname"), node);
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(
        exec_ok(&mut cri, &a, &format!("cat {sa_dir}/token {sa_dir}/namespace")),
        "tok-1default"
    );
    assert_eq!(share_server(), None, "a virtiofsd in the pod's cgroup");
    assert!(!guest_ram_in_memfd(), "the pod's memory was copied");

    // C: an image of two layers the VM lacks: attached as one flattened disk.
    let c_cfg = container_config("c", APP2_IMAGE, &["sleep", "3600"]);
    let cc = cri
        .create_container(&pod, &c_cfg, &pod_cfg)
        .unwrap_or_else(|e| panic!("CreateContainer c: {e}\n{}", c.log()));
    cri.start_container(&cc).expect("StartContainer c");
    let disks_with_c = exec_ok(&mut cri, &a, LIST_DISKS);
    assert_eq!(disks_with_c.lines().count(), disks_before.lines().count() + 1, "{disks_with_c}");
    assert_eq!(exec_ok(&mut cri, &cc, "cat /app.txt /two.txt"), "from the app image\ntwo\n");

    // B: an image with one layer the VM lacks: that layer's own disk is attached.
    let b_cfg = container_config("b", APP_IMAGE, &["sh", "-c", "cat /app.txt; exec sleep 3600"]);
    let b = cri
        .create_container(&pod, &b_cfg, &pod_cfg)
        .unwrap_or_else(|e| panic!("CreateContainer b: {e}\n{}", c.log()));
    cri.start_container(&b).expect("StartContainer b");
    let disks_with_b = exec_ok(&mut cri, &a, LIST_DISKS);
    assert_eq!(
        disks_with_b.lines().count(),
        disks_before.lines().count() + 2,
        "before {disks_before:?}, with b and c {disks_with_b:?}"
    );
    cri.stop_container(&cc, 0).expect("StopContainer c");
    cri.remove_container(&cc).expect("RemoveContainer c");
    let flat: Vec<&str> =
        disks_with_c.lines().filter(|l| !disks_before.lines().any(|b| b == *l)).collect();
    let after_c = exec_ok(&mut cri, &a, LIST_DISKS);
    assert_eq!(after_c.lines().count(), disks_before.lines().count() + 1, "{after_c}");
    assert!(flat.iter().all(|f| !after_c.contains(f)), "{flat:?} still in {after_c}");

    // One VM: both containers see the same guest kernel boot.
    let boot_a = exec_ok(&mut cri, &a, "cat /proc/sys/kernel/random/boot_id");
    let boot_b = exec_ok(&mut cri, &b, "cat /proc/sys/kernel/random/boot_id");
    assert_eq!(boot_a, boot_b);
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_ne!(boot_a, host_boot, "the containers run in the guest");
    assert!(exec_ok(&mut cri, &a, "uname -r").starts_with("6.12."));
    assert_eq!(exec_ok(&mut cri, &b, "cat /app.txt"), "from the app image\n");
    assert!(exec_ok(&mut cri, &a, "ls /").lines().all(|l| l != "app.txt"));

    // ExecSync: separate streams and the exit code.
    let (out, err, code) =
        cri.exec_sync(&a, &["sh", "-c", "echo out; echo err >&2; exit 4"], 60).unwrap();
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 4));

    // ContainerStatus and the CRI log files.
    let st = cri.container_status(&a).unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    assert_eq!(st.log_path, log_path(&logs, "a").to_string_lossy());
    wait_for("the containers' logs", Duration::from_secs(20), || {
        let a_log = std::fs::read_to_string(log_path(&logs, "a")).unwrap_or_default();
        let b_log = std::fs::read_to_string(log_path(&logs, "b")).unwrap_or_default();
        a_log.contains(" stdout F hello-from-a")
            && a_log.contains(" stderr F oops")
            && b_log.contains(" stdout F from the app image")
    });

    // UpdateContainerResources reaches the container's cgroup in the guest.
    let res = k8s_cri::v1::LinuxContainerResources {
        memory_limit_in_bytes: 100 << 20,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        ..Default::default()
    };
    cri.update_resources(&a, res).unwrap_or_else(|e| panic!("Update: {e}\n{}", c.log()));
    assert_eq!(exec_ok(&mut cri, &a, "cat /sys/fs/cgroup/memory.max"), "104857600\n");
    assert_eq!(exec_ok(&mut cri, &a, "cat /sys/fs/cgroup/cpu.max"), "50000 100000\n");

    // Stop and remove B: its layer disk leaves the VM.
    cri.stop_container(&b, 2).expect("StopContainer b");
    let st = cri.container_status(&b).unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert!(st.exit_code == 137 || st.exit_code == 143, "exit code {}", st.exit_code);
    cri.remove_container(&b).expect("RemoveContainer b");
    assert_eq!(exec_ok(&mut cri, &a, LIST_DISKS), disks_before);

    // Stop and remove the pod: nothing is left.
    cri.stop_pod(&pod).unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", c.log()));
    cri.remove_pod(&pod).unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", c.log()));
    wait_for("the pod to be gone", Duration::from_secs(30), || {
        processes_with(&format!("-id {pod} ")).is_empty()
            && std::fs::read_to_string(format!("/proc/{vmm}/cmdline"))
                .map_or(true, |c| !c.contains("ironpod-vmm"))
    });
    assert!(mounts_with(&pod).is_empty(), "mounts left: {:?}", mounts_with(&pod));
    assert!(!vm_dir.exists(), "{} left", vm_dir.display());
    assert!(!Path::new("/run/ironpod/shim").join(&pod).exists());
    assert!(c.tasks().is_empty(), "{:?}", c.tasks());
}

#[test]
fn cri_pods_on_a_cni_network_reach_each_other() {
    let _w = require_linux_kvm();
    // containerd, CNI's bridge and the pods' namespaces all live in a namespace of the
    // test's own.
    let ns = ironpod_tests::netns::Netns::new("cni");
    ns.ok(&["ip", "link", "set", "lo", "up"]);
    let c = Containerd::start_cri_with_cni(&ns.path());
    let mut cri = Cri::connect(&c.socket());
    let logs = c.dir().join("logs");
    let mut pods = Vec::new();
    for name in ["one", "two"] {
        let cfg = ironpod_tests::cri::pod_config_cni(name, &logs.join(name));
        std::fs::create_dir_all(logs.join(name)).unwrap();
        let pod = cri
            .run_pod(&cfg, "ironpod")
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", c.log()));
        let ctr = container_config("main", DEMO_IMAGE, &["sleep", "3600"]);
        let id = cri.create_container(&pod, &ctr, &cfg).expect("CreateContainer");
        cri.start_container(&id).expect("StartContainer");
        let addr = cri.pod_ip(&pod).unwrap();
        assert!(addr.starts_with("10.233.0."), "pod IP {addr:?}");
        pods.push((pod, id, addr));
    }
    // The guest's eth0 has the address CNI gave the pod.
    let (one, two) = (&pods[0], &pods[1]);
    let shown = exec_ok(&mut cri, &one.1, "ip -4 addr show eth0");
    assert!(shown.contains(&format!("{}/24", one.2)), "{shown}");
    // Pod to pod across the CNI bridge, both VMs answering; and to the bridge's gateway.
    let (out, _, code) =
        cri.exec_sync(&two.1, &["sh", "-c", &format!("ping -c 2 -W 5 {}", one.2)], 60).unwrap();
    if code != 0 {
        let mut diag = String::new();
        for (_, id, _) in &pods {
            let (o, e, _) = cri
                .exec_sync(id, &["sh", "-c", "ip neigh; ip route; cat /proc/net/dev"], 30)
                .unwrap();
            diag += &format!("guest {id}:\n{o}{e}\n");
        }
        for e in std::fs::read_dir("/var/run/netns").unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ip -n {n} -s link; ip -n {n} addr; tc -n {n} -s filter show dev eth0 ingress; \
                     tc -n {n} -s filter show dev tap0 ingress; tc -n {n} qdisc"
                ))
                .output()
                .unwrap();
            diag += &format!(
                "netns {n}:\n{}{}\n",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ip -n {0} -s link; bridge -n {0} fdb; ip -n {0} addr", ns.name))
            .output()
            .unwrap();
        diag += &format!(
            "test ns:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        panic!("pod two cannot ping pod one: {out}\n{diag}");
    }
    assert!(out.contains("2 packets received"), "{out}");
    let out = exec_ok(&mut cri, &one.1, "ping -c 1 -W 5 10.233.0.1");
    assert!(out.contains("1 packets received"), "{out}");
    // Both pod VMs restored the template the first one made (a card and a share): their
    // guests have been up since it was, and each has its own MAC and randomness.
    let template = ironpod_tests::only_template(&c.dir().join("shim"));
    let made = std::fs::metadata(template.join("state")).unwrap().modified().unwrap();
    let probe = "cut -d. -f1 /proc/uptime; cat /sys/class/net/eth0/address \
                 /proc/sys/kernel/random/uuid";
    let seen: Vec<Vec<String>> = pods
        .iter()
        .map(|(_, id, _)| exec_ok(&mut cri, id, probe).lines().map(str::to_string).collect())
        .collect();
    for l in &seen {
        let up: u64 = l[0].parse().unwrap();
        let since = made.elapsed().unwrap().as_secs();
        assert!(up + 2 >= since, "uptime {up} s, the template is {since} s old: booted? {l:?}");
        assert_ne!(l[1], ironpod_pods::template::TEMPLATE_MAC, "the card kept the template's MAC");
    }
    assert_ne!(seen[0][1..], seen[1][1..], "the pods share a MAC or randomness: {seen:?}");
    for (pod, _, _) in &pods {
        cri.stop_pod(pod).expect("StopPodSandbox");
        cri.remove_pod(pod).expect("RemovePodSandbox");
    }
}

/// Files under `dir` (recursively, not following links) whose contents hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            out.extend(files_holding(&e.path(), needle));
        } else if t.is_file() {
            let data = std::fs::read(e.path()).unwrap_or_default();
            if data.windows(needle.len()).any(|w| w == needle) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Writes version `version` of a configMap, secret or projected volume at `dir` the way a
/// kubelet's atomic writer does: the files in a hidden directory, `..data` replaced by a
/// rename, a link per top-level name; the previous version's directory removed.
fn kubelet_write(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let old = std::fs::read_link(dir.join("..data")).ok();
    for (name, data) in files {
        let p = dir.join(version).join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let _ = std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name));
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// A CRI mount of a host directory, the way a kubelet passes a pod's volumes.
fn volume(host: &Path, path: &str, readonly: bool) -> k8s_cri::v1::Mount {
    k8s_cri::v1::Mount {
        container_path: path.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

#[test]
fn cri_pod_volumes_empty_dir_config_map_and_secret() {
    let _w = require_linux_kvm();
    let c = Containerd::shared_cri();
    let mut cri = Cri::connect(&c.socket());
    let logs = c.dir().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // What a kubelet makes for a pod: an emptyDir, a configMap's files, and a secret's
    // files on a tmpfs (here /run) with mode 0600.
    let vols = c.dir().join("pod-volumes");
    let empty_dir = vols.join("kubernetes.io~empty-dir/cache");
    let config_map = vols.join("kubernetes.io~configmap/settings");
    std::fs::create_dir_all(&empty_dir).unwrap();
    std::fs::create_dir_all(&config_map).unwrap();
    // A memory-backed emptyDir: the kubelet mounts a tmpfs at the volume's directory.
    let mem_dir = vols.join("kubernetes.io~empty-dir/scratch");
    std::fs::create_dir_all(&mem_dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0777", "tmpfs"])
        .arg(&mem_dir)
        .status()
        .unwrap();
    assert!(mounted.success());
    kubelet_write(&config_map, "..2026_12_05_01", &[("app.conf", "color=blue\n")]);
    let secret_dir = tempfile::tempdir_in("/run").unwrap();
    let secret_value = "s3cr3t-7f1c9a-token";
    let token = secret_dir.path().join("token");
    std::fs::write(&token, secret_value).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Files too: a termination log the container writes and the kubelet reads, and a
    // secret's file mounted alone (subPath), owned by the pod's user.
    let term_log = vols.join("termination-log");
    std::fs::write(&term_log, "").unwrap();
    let key = secret_dir.path().join("key");
    std::fs::write(&key, "k3y-material").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::chown(&key, Some(1000), Some(1000)).unwrap();
    let pod_cfg = pod_config("vols", &logs);
    let pod = cri
        .run_pod(&pod_cfg, "ironpod")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));
    let mut writer = container_config("writer", DEMO_IMAGE, &["sleep", "3600"]);
    writer.mounts = vec![
        volume(&empty_dir, "/cache", false),
        volume(&config_map, "/etc/app", true),
        volume(secret_dir.path(), "/var/run/secrets/app", true),
        volume(&term_log, "/dev/termination-log", false),
        volume(&key, "/etc/ssh/key", true),
        volume(&mem_dir, "/scratch", false),
    ];
    let mut reader = container_config("reader", DEMO_IMAGE, &["sleep", "3600"]);
    reader.mounts = vec![volume(&empty_dir, "/data", false), volume(&mem_dir, "/scratch2", false)];
    let mut ids = Vec::new();
    for cfg in [&writer, &reader] {
        let id = cri
            .create_container(&pod, cfg, &pod_cfg)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", c.log()));
        cri.start_container(&id).expect("StartContainer");
        ids.push(id);
    }
    let (w, r) = (&ids[0], &ids[1]);
    // The emptyDir is one directory for both containers (and the host).
    exec_ok(&mut cri, w, "echo shared-by-writer > /cache/note");
    assert_eq!(exec_ok(&mut cri, r, "cat /data/note"), "shared-by-writer\n");
    exec_ok(&mut cri, r, "echo reply > /data/back");
    assert_eq!(std::fs::read_to_string(empty_dir.join("back")).unwrap(), "reply\n");
    // The memory-backed emptyDir is one tmpfs of the guest's for both, of the host's size;
    // the host's stays empty.
    exec_ok(&mut cri, w, "echo in-guest-memory > /scratch/f");
    let out = exec_ok(&mut cri, r, "cat /scratch2/f; df -k /scratch2 | tail -1");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("in-guest-memory"), "{out}");
    let size: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!((size[0], size[1]), ("tmpfs", "8192"), "{out}");
    assert!(std::fs::read_dir(&mem_dir).unwrap().next().is_none());
    // The configMap and the secret are read-only; the secret keeps its mode.
    assert_eq!(exec_ok(&mut cri, w, "cat /etc/app/app.conf"), "color=blue\n");
    let out = exec_ok(
        &mut cri,
        w,
        "cat /var/run/secrets/app/token; echo; stat -c %a /var/run/secrets/app/token; \
         (echo x > /etc/app/app.conf) 2>&1; (echo x > /var/run/secrets/app/new) 2>&1; true",
    );
    assert!(out.starts_with(&format!("{secret_value}\n600\n")), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert_eq!(std::fs::read_to_string(config_map.join("app.conf")).unwrap(), "color=blue\n");
    exec_ok(&mut cri, w, "echo finished-ok > /dev/termination-log");
    let out = exec_ok(&mut cri, w, "stat -c '%a %u' /etc/ssh/key; cat /etc/ssh/key");
    assert_eq!(out, "400 1000\nk3y-material");
    // A configMap update by the kubelet reaches the running pod's copy: a changed file, a
    // new one.
    kubelet_write(
        &config_map,
        "..2026_12_05_02",
        &[("app.conf", "color=green\n"), ("late.conf", "late\n")],
    );
    wait_for("the configMap update in the guest", Duration::from_secs(20), || {
        cri.exec_sync(w, &["cat", "/etc/app/app.conf", "/etc/app/late.conf"], 30)
            .is_ok_and(|(o, _, code)| code == 0 && o == "color=green\nlate\n")
    });
    // A file the host adds to a shared volume shows up at once (the secret's directory,
    // which is not laid out as a kubelet's: shared).
    std::fs::write(secret_dir.path().join("late"), "late\n").unwrap();
    assert_eq!(exec_ok(&mut cri, w, "cat /var/run/secrets/app/late"), "late\n");

    // Directories came through the pod's share: its virtiofsd runs, and the VM's memory
    // moved into a shared memory file when it was plugged in.
    let vmm = vmm_pid(c, &pod);
    let maps = std::fs::read_to_string(format!("/proc/{vmm}/maps")).unwrap();
    assert!(maps.contains("memfd:ironpod-guest-ram"), "{maps}");

    // Removing one container takes only its entries out of the pod's share.
    cri.stop_container(r, 0).expect("StopContainer");
    cri.remove_container(r).expect("RemoveContainer");
    assert_eq!(exec_ok(&mut cri, w, "cat /cache/back"), "reply\n");
    // The termination message reaches the host file by the time the container has stopped,
    // which is when a kubelet reads it.
    cri.stop_container(w, 0).expect("StopContainer");
    assert_eq!(std::fs::read_to_string(&term_log).unwrap(), "finished-ok\n");

    cri.stop_pod(&pod).unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", c.log()));
    cri.remove_pod(&pod).unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", c.log()));
    wait_for("the pod to be gone", Duration::from_secs(30), || {
        processes_with(&format!("-id {pod} ")).is_empty()
            && processes_with(&format!("shares/{pod}")).is_empty()
    });
    assert!(mounts_with(&pod).is_empty(), "mounts left: {:?}", mounts_with(&pod));
    let _ = std::process::Command::new("umount").arg(&mem_dir).status();
    // The volumes' data stays on the host; the secret was never copied anywhere.
    assert_eq!(std::fs::read_to_string(empty_dir.join("note")).unwrap(), "shared-by-writer\n");
    let mut copies = files_holding(c.dir(), secret_value.as_bytes());
    copies.extend(files_holding(Path::new("/run/ironpod"), secret_value.as_bytes()));
    assert!(copies.is_empty(), "the secret was written to {copies:?}");
}

/// The manifest that `ironpod kube apply` runs (tests/kube.rs), unchanged with its
/// `runtimeClassName: ironpod`, through containerd's CRI the way a cluster's kubelet hands
/// it over: the init container to its end, then both containers in one VM, which see the
/// same files, mounts, variables and localhost as under `kube apply`.
#[test]
fn cri_runs_the_kube_manifest() {
    use ironpod_tests::manifests::{SHARED_POD, SHARED_POD_SEES};
    let _w = require_linux_kvm();
    // The pod is not on the host's network: CNI gives it one (containerd, the bridge and
    // the pod's namespace in a namespace of the test's own).
    let ns = ironpod_tests::netns::Netns::new("manifest");
    ns.ok(&["ip", "link", "set", "lo", "up"]);
    let c = &Containerd::start_cri_with_cni(&ns.path());
    let mut cri = Cri::connect(&c.socket());
    let logs = c.dir().join("logs/manifest");
    std::fs::create_dir_all(&logs).unwrap();
    let vols = tempfile::tempdir_in("/run").unwrap();
    let p = ironpod_tests::kubelet_cri::from_manifest(SHARED_POD, vols.path(), &logs).unwrap();
    assert_eq!(p.handler, "ironpod");
    let pod = cri
        .run_pod(&p.sandbox, &p.handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));
    for cfg in &p.init {
        let id = cri.create_container(&pod, cfg, &p.sandbox).expect("CreateContainer (init)");
        cri.start_container(&id).expect("StartContainer (init)");
        wait_for("the init container's end", Duration::from_secs(60), || {
            cri.container_status(&id)
                .is_ok_and(|s| s.state == ContainerState::ContainerExited as i32)
        });
        assert_eq!(cri.container_status(&id).unwrap().exit_code, 0);
    }
    let mut ids = std::collections::HashMap::new();
    for cfg in &p.containers {
        let id = cri
            .create_container(&pod, cfg, &p.sandbox)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", c.log()));
        cri.start_container(&id).expect("StartContainer");
        ids.insert(cfg.metadata.as_ref().unwrap().name.clone(), id);
    }
    // Up: the sidecar wrote its file and the web container serves (its readiness probe's
    // check, made here as a kubelet would).
    wait_for("both containers up", Duration::from_secs(60), || {
        let side = cri.exec_sync(&ids["side"], &["cat", "/work/side.txt"], 10);
        let web = cri.exec_sync(&ids["side"], &["wget", "-qO-", "http://127.0.0.1:8080/"], 10);
        side.is_ok_and(|r| r.2 == 0) && web.is_ok_and(|r| r.2 == 0)
    });
    for (name, cmd, want) in SHARED_POD_SEES {
        let (out, err, code) = cri.exec_sync(&ids[*name], cmd, 30).expect("ExecSync");
        assert_eq!((out.as_str(), code), (*want, 0), "{name}: {cmd:?}: {err}");
    }
    cri.stop_pod(&pod).unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", c.log()));
    cri.remove_pod(&pod).unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", c.log()));
}
