//! The test rig (DESIGN.md §6): an L1 machine emulated by QEMU (TCG, EPYC-Rome) running
//! Debian's generic kernel with kvm-amd loaded (real nested SVM), the host's whole filesystem
//! read-only over 9p with a tmpfs overlay on top, running one command and reporting its exit
//! status. /tmp stays the host's (through the overlay), so a checkout under /tmp is visible;
//! /run is a real tmpfs for anything that cannot live on overlayfs.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cpio::CpioWriter;
use crate::{deps, util};

/// Modules L1 loads, in order (virtio + 9p + overlay for the host root, then KVM, then what
/// pod networks use: tun, veth, ingress qdisc + u32 + mirred, bridge; then nftables NAT and
/// what Services' rules use).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_mmio",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "overlay",
    "irqbypass",
    "kvm",
    "ccp",
    "kvm-amd",
    "tun",
    "veth",
    "sch_ingress",
    "cls_u32",
    "act_mirred",
    "llc",
    "stp",
    "bridge",
    // nftables NAT: networks' egress (masquerade, conntrack state), `bench net`'s DNAT.
    "crc32c_generic",
    "libcrc32c",
    "nfnetlink",
    "nf_tables",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nf_conntrack",
    "nf_nat",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    // Kubernetes Services: random choice of a ready pod, refusal of unknown ones.
    "nft_numgen",
    "nf_reject_ipv4",
    "nft_reject",
    "nft_reject_ipv4",
    // A pod's guard: its guest's frames pass only with its own addresses (netdev `fwd`).
    "nf_dup_netdev",
    "nft_fwd_netdev",
    // `bench kube`'s peer: podman's CNI bridge and firewall plugins call iptables (nft).
    "x_tables",
    "nft_compat",
    "xt_comment",
    "xt_conntrack",
    "xt_addrtype",
    "xt_mark",
    "xt_tcpudp",
    "xt_multiport",
    "xt_nat",
    "xt_MASQUERADE",
];

const EXIT_MARKER: &str = "IRONPOD-RIG-EXIT=";

/// L1's /init: mounts the host root, loads KVM, moves the overlay onto `/` and enters it
/// as switch_root does (not a plain chroot: user namespaces, which virtiofsd runs in, are
/// refused to a chrooted process) and runs the script named on its command line.
const L1_INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc; $B mount -t sysfs sys /sys; $B mount -t devtmpfs dev /dev
script=$($B sed -n 's/.*ironpod.script=\([^ ]*\).*/\1/p' /proc/cmdline)
for m in $(cat /modules); do
  args=""; [ "$m" = kvm-amd ] && args="npt=1"
  $B insmod /mods/$m.ko $args || { echo "rig: cannot load module $m"; echo "IRONPOD-RIG-EXIT=125"; $B poweroff -f; }
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=mmap hostroot /host || { echo "rig: 9p mount failed"; echo "IRONPOD-RIG-EXIT=125"; $B poweroff -f; }
$B mount -t tmpfs -o size=75% tmpfs /upper; $B mkdir -p /upper/u /upper/w
$B mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w,redirect_dir=on /newroot || { echo "rig: overlay failed"; echo "IRONPOD-RIG-EXIT=125"; $B poweroff -f; }
for d in proc sys dev; do $B mount --move /$d /newroot/$d; done
$B mkdir -p /newroot/dev/pts /newroot/dev/shm
$B mount -t devpts devpts /newroot/dev/pts
$B mount -t tmpfs tmpfs /newroot/run; $B mount -t tmpfs tmpfs /newroot/dev/shm
$B mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
$B ip link set lo up
$B mkdir -p /newroot/run/rig; $B cp /bin/busybox /newroot/run/rig/busybox
cd /newroot; $B mount --move . /
exec $B chroot . /run/rig/busybox sh -c '/bin/bash "$0"; echo "IRONPOD-RIG-EXIT=$?"; /run/rig/busybox poweroff -f' "$script"
"#;

/// Arguments of `cargo xtask rig`.
#[derive(clap::Args)]
pub struct RigArgs {
    /// Put target/release (not target/debug) first on PATH.
    #[arg(long)]
    release: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// L1 memory in MiB.
    #[arg(long, default_value_t = 4096)]
    mem: u64,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

/// `cargo xtask rig -- CMD…`: exits with CMD's status.
pub fn run_cli(a: RigArgs) -> Result<()> {
    eprintln!("xtask rig: booting L1 (QEMU TCG, nested SVM) to run: {}", a.cmd.join(" "));
    let code = run(&a.cmd, a.release, Duration::from_secs(a.timeout), a.mem)?;
    std::process::exit(code);
}

/// The newest Debian 6.1 generic kernel package. The package lists are refreshed first:
/// Debian replaces these packages (a new ABI number) with every kernel update, so an old
/// list names one the mirror no longer has.
fn newest_generic_kernel() -> Result<String> {
    util::run(Command::new("apt-get").args(["update", "-q"]))?;
    let out = util::output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.1\.0-[0-9]+-amd64$",
    ]))?;
    let mut names: Vec<(u32, String)> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let num = n.strip_prefix("linux-image-6.1.0-")?.strip_suffix("-amd64")?.parse().ok()?;
            Some((num, n.to_string()))
        })
        .collect();
    names.sort();
    names
        .pop()
        .map(|(_, n)| n)
        .context("no linux-image-6.1.0-NN-amd64 package in apt (run apt-get update)")
}

/// The Debian package L1's kernel came from (the one prepared first is kept and reused, so
/// runs on one machine use the same L1 kernel until its cache is removed).
pub fn l1_kernel() -> String {
    fs::read_link(Path::new(util::CACHE_DIR).join("rig/current"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "(not prepared)".into())
}

/// Makes sure L1's kernel and initramfs exist; returns their paths.
fn ensure_l1() -> Result<(PathBuf, PathBuf)> {
    let rig = Path::new(util::CACHE_DIR).join("rig");
    let _lock = util::Lock::acquire(&rig.join("lock"))?;
    // Reuse whatever was prepared before (no network needed), else fetch the newest.
    let current = rig.join("current");
    let have_modules =
        |d: &Path| MODULES.iter().all(|m| d.join("mods").join(format!("{m}.ko")).is_file());
    let dir = match fs::read_link(&current) {
        Ok(d) if d.join("vmlinux").is_file() && have_modules(&d) => d,
        _ => {
            let pkg = newest_generic_kernel()?;
            let dir = rig.join(&pkg);
            prepare_kernel(&pkg, &dir)?;
            let _ = fs::remove_file(&current);
            std::os::unix::fs::symlink(&dir, &current)?;
            dir
        }
    };
    let init_key = util::sha256_parts(&[
        L1_INIT.as_bytes(),
        MODULES.join(" ").as_bytes(),
        &fs::read("/bin/busybox")?,
    ]);
    let initrd = dir.join(format!("l1-{}.cpio", &init_key[..16]));
    if !initrd.is_file() {
        build_l1_initrd(&dir, &initrd)?;
    }
    Ok((dir.join("vmlinux"), initrd))
}

fn prepare_kernel(pkg: &str, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join("download");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    util::run(Command::new("apt-get").arg("download").arg(pkg).current_dir(&tmp))?;
    let deb = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let x = tmp.join("x");
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let boot = x.join("boot");
    let vmlinuz = fs::read_dir(&boot)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz")))
        .context("no vmlinuz in the package")?;
    // Booting the uncompressed vmlinux saves seconds of xz decompression under TCG.
    let script = tmp.join("extract-vmlinux");
    util::run(
        Command::new("tar")
            .args([
                "xf",
                "/usr/src/linux-source-6.12.tar.xz",
                "-O",
                "linux-source-6.12/scripts/extract-vmlinux",
            ])
            .stdout(fs::File::create(&script)?),
    )?;
    let out =
        Command::new("sh").arg(&script).arg(&vmlinuz).output().context("run extract-vmlinux")?;
    let vmlinux = out.stdout;
    if vmlinux.len() < 1 << 20 {
        bail!("extract-vmlinux produced no kernel from {}", vmlinuz.display());
    }
    let mods = dir.join("mods");
    fs::create_dir_all(&mods)?;
    for m in MODULES {
        let found = find_module(&x.join("lib/modules"), m)?;
        let data = if found.extension().is_some_and(|e| e == "xz") {
            Command::new("xz").arg("-dc").arg(&found).output().context("run xz")?.stdout
        } else {
            fs::read(&found)?
        };
        fs::write(mods.join(format!("{m}.ko")), data)?;
    }
    util::write_atomic(&dir.join("vmlinux"), &vmlinux)?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

fn find_module(root: &Path, name: &str) -> Result<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(f) = p.file_name().and_then(|f| f.to_str()) {
                if f == format!("{name}.ko") || f == format!("{name}.ko.xz") {
                    return Ok(p);
                }
            }
        }
    }
    bail!("module {name} not found in the L1 kernel package")
}

fn build_l1_initrd(dir: &Path, out: &Path) -> Result<()> {
    let mut w = CpioWriter::new(Vec::new());
    for d in ["bin", "dev", "proc", "sys", "host", "upper", "newroot", "mods"] {
        w.dir(d, 0o755)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.file("bin/busybox", 0o755, &fs::read("/bin/busybox")?)?;
    w.file("init", 0o755, L1_INIT.as_bytes())?;
    w.file("modules", 0o644, MODULES.join("\n").as_bytes())?;
    for m in MODULES {
        w.file(
            &format!("mods/{m}.ko"),
            0o644,
            &fs::read(dir.join("mods").join(format!("{m}.ko")))?,
        )?;
    }
    util::write_atomic(out, &w.finish()?)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script L1 runs: same working directory, PATH with our binaries (built with cargo
/// profile `profile`), IRONPOD_* and CARGO_TARGET_DIR passed on.
fn script(cmd: &[String], profile: &str) -> Result<String> {
    let cwd = std::env::current_dir()?;
    let bins = util::target_dir().join(profile);
    let mut s = String::from("set -o pipefail\n");
    s.push_str(&format!(
        "export PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        shell_quote(&bins.to_string_lossy())
    ));
    s.push_str("export IRONPOD_RIG=1 HOME=/root\n");
    for (k, v) in std::env::vars() {
        if k.starts_with("IRONPOD_")
            || k == "RUST_LOG"
            || k == "RUST_BACKTRACE"
            || k == "CARGO_TARGET_DIR"
        {
            s.push_str(&format!("export {}={}\n", k, shell_quote(&v)));
        }
    }
    s.push_str(&format!("cd {} || exit 125\n", shell_quote(&cwd.to_string_lossy())));
    s.push_str(&cmd.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
    s.push('\n');
    Ok(s)
}

/// Noise from L1's own kernel and firmware that is not the command's output.
fn is_noise(line: &str) -> bool {
    let t = line.trim_start();
    (t.starts_with('[')
        && t.get(1..14)
            .is_some_and(|x| x.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())))
        || t.contains("SeaBIOS")
        || t.starts_with("qemu-system-x86_64: warning: TCG doesn't support")
}

fn clean(line: &str) -> String {
    // Drop terminal escape sequences (SeaBIOS clears the screen) and carriage returns.
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                while let Some(&n) = chars.peek() {
                    chars.next();
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// How long QEMU may use no CPU at all before the watchdog wakes L1's CPU.
const STALL: Duration = Duration::from_secs(20);

/// CPU time (clock ticks, user + system) used so far by all of QEMU's threads.
fn qemu_cpu_ticks(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|st| {
            let rest = &st[st.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Kernel command line of L1 (`IRONPOD_RIG_KERNEL_ARGS` adds to it, for experiments).
/// `nohz=off highres=off` put L1's local APIC timer in periodic mode: the rare L1 stall seen
/// under TCG is a CPU halted for good, waiting for a one-shot timer interrupt that never
/// comes; a periodic timer cannot stay silent. Measured side by side (two L1s at once,
/// swapped): no cost (boot+pods+volumes+net 84.7 / 82.2 s with it, 85.9 / 84.5 s without).
const L1_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 quiet loglevel=1 nohz=off highres=off";

/// How one rig run ended.
pub struct RigExit {
    /// The command's exit status, if L1 reported one.
    pub status: Option<i32>,
    /// The rig was killed after its time limit.
    pub timed_out: bool,
    /// How long L1 ran.
    pub elapsed: Duration,
}

impl RigExit {
    /// The exit status, or an error saying why there is none.
    pub fn status(&self, timeout: Duration) -> Result<i32> {
        match self.status {
            Some(code) => Ok(code),
            None if self.timed_out => bail!("the rig timed out after {timeout:?}"),
            None => bail!("the rig machine stopped before the command finished (no exit marker)"),
        }
    }
}

/// Runs `cmd` in the rig, printing its output, and returns its exit status.
pub fn run(cmd: &[String], release: bool, timeout: Duration, mem_mib: u64) -> Result<i32> {
    deps::ensure()?;
    let profile = if release { "release" } else { "debug" };
    let exit = run_observed(cmd, profile, timeout, mem_mib, |line| println!("{line}"))?;
    eprintln!("xtask rig: L1 ran for {:.1} s", exit.elapsed.as_secs_f64());
    exit.status(timeout)
}

/// Runs `cmd` in a rig machine of its own (our binaries of cargo profile `profile` first on
/// PATH), handing every line of its output (L1's own noise left out) to `on_line` as it
/// arrives. Several may run at once, each on one host core.
pub fn run_observed(
    cmd: &[String],
    profile: &str,
    timeout: Duration,
    mem_mib: u64,
    mut on_line: impl FnMut(&str),
) -> Result<RigExit> {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let (vmlinux, initrd) = ensure_l1()?;
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let work = Path::new("/var/tmp/ironpod-rig").join(format!("{}-{n}", std::process::id()));
    fs::create_dir_all(&work)?;
    let script_path = work.join("cmd.sh");
    fs::write(&script_path, script(cmd, profile)?)?;
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "EPYC-Rome",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-m")
        .arg(mem_mib.to_string())
        .arg("-kernel")
        .arg(&vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "{L1_CMDLINE} {} ironpod.script={}",
            std::env::var("IRONPOD_RIG_KERNEL_ARGS").unwrap_or_default(),
            script_path.display()
        ))
        .args(["-fsdev", "local,id=hr,path=/,security_model=none,readonly=on,multidevs=remap"])
        .args(["-device", "virtio-9p-pci,fsdev=hr,mount_tag=hostroot", "-nic", "none"])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", work.join("hmp.sock").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("no qemu stdout")?;
    let pid = child.id();
    let hmp = work.join("hmp.sock");
    let watchdog = std::thread::spawn(move || watch(pid, &hmp, timeout));
    let mut status = None;
    for line in BufReader::new(stdout).split(b'\n') {
        let mut line = clean(&String::from_utf8_lossy(&line?));
        // SeaBIOS ends its banner without a newline: what follows is ours.
        if let Some(i) = line.find("Booting from ROM..") {
            line = line[i + "Booting from ROM..".len()..].to_string();
        }
        if let Some(code) = line.trim().strip_prefix(EXIT_MARKER) {
            status = code.trim().parse::<i32>().ok();
            continue;
        }
        if !is_noise(&line) {
            on_line(&line);
        }
    }
    let _ = child.wait();
    let timed_out = watchdog.join().unwrap_or(false);
    let _ = fs::remove_dir_all(&work);
    Ok(RigExit { status, timed_out, elapsed: started.elapsed() })
}

/// Watches QEMU `pid` until it ends (false) or `timeout` passes (kills it, true); wakes L1's
/// CPU with an NMI when QEMU has used no CPU for [`STALL`].
fn watch(pid: u32, hmp: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let (mut cpu, mut since) = (qemu_cpu_ticks(pid), Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: probing a pid with signal 0 has no effect.
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return false;
        }
        let now = qemu_cpu_ticks(pid);
        if now != cpu {
            (cpu, since) = (now, Instant::now());
        } else if since.elapsed() > STALL {
            // Seen rarely under TCG: L1 halts and the interrupt that should wake it
            // never comes, so the whole machine sleeps forever. An NMI wakes the CPU;
            // the kernel then runs its expired timers and goes on.
            eprintln!("xtask rig: L1 made no progress for {STALL:?}: waking its CPU (NMI)");
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(hmp) {
                let _ = std::io::Write::write_all(&mut s, b"nmi\n");
                std::thread::sleep(Duration::from_millis(200));
            }
            since = Instant::now();
        }
    }
    // SAFETY: killing our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        let args = ["sh", "-c", "echo 'a b' \"$X\"; exit 3", "", "ok-arg/x=1"];
        let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("for a in {}; do printf '<%s>' \"$a\"; done", quoted.join(" ")))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "<sh><-c><echo 'a b' \"$X\"; exit 3><><ok-arg/x=1>"
        );
    }

    #[test]
    fn noise_filter_and_cleaning() {
        assert!(is_noise("[    4.5] kvm [112]: vcpu0 Unhandled WRMSR"));
        assert!(!is_noise("[ok] test passed"));
        assert!(!is_noise("test result: ok"));
        assert_eq!(clean("\u{1b}[2J\u{1b}[0mhello\r"), "hello");
    }
}
