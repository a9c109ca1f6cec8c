//! `cargo xtask test` (every test; what CI runs) and `cargo xtask demo`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{deps, initramfs, kernel, rig, test_bins, util};

/// One line of the summary table.
struct Row {
    what: String,
    place: String,
    tests: String,
    time: String,
    result: String,
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECS: u64 = 15;

/// Times a step that runs on the host, adding its row.
fn step(rows: &mut Vec<Row>, what: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    let t = Instant::now();
    let r = f();
    rows.push(Row {
        what: what.into(),
        place: "host".into(),
        tests: r.as_ref().map(Clone::clone).unwrap_or_default(),
        time: test_bins::secs(t.elapsed()),
        result: if r.is_ok() { "ok" } else { "FAILED" }.into(),
    });
    r.map(drop)
}

/// Runs a command, echoing its output, and adds up libtest's `test result:` lines:
/// returns the tests passed and ignored.
fn run_counting(cmd: &mut Command) -> Result<(u32, u32)> {
    let desc = format!("{cmd:?}");
    let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("start {desc}"))?;
    let out = child.stdout.take().context("no stdout")?;
    let (mut passed, mut ignored) = (0u32, 0u32);
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let (p, i) = test_bins::result_counts(rest);
            (passed, ignored) = (passed + p, ignored + i);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{desc} failed with {status}");
    }
    Ok((passed, ignored))
}

/// Runs every test: formatting, lints, one build of everything (profile `rig`: release
/// optimisation, debug assertions on), the host tests, then the Linux-booting tests directly
/// on KVM or, where KVM cannot run Linux, inside two rig machines at once. Never skips them;
/// runs all of them even when some fail, and ends with a table of every step and binary.
pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut rows = Vec::new();
    step(&mut rows, "deps, guest kernel, initramfs", || {
        deps::ensure()?;
        let vmlinux = kernel::build()?;
        let initrd = initramfs::build()?;
        eprintln!("xtask test: kernel {}, initramfs {}", vmlinux.display(), initrd.display());
        Ok(String::new())
    })?;
    step(&mut rows, "cargo fmt --check, clippy -D warnings", || {
        util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
        // The `cargo xtask` launcher is a workspace of its own.
        let launcher = ["--manifest-path", "xtask/launch/Cargo.toml"];
        util::run(util::cargo().arg("fmt").args(launcher).arg("--check"))?;
        // The fuzz targets are a workspace of their own too.
        util::run(util::cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"]))?;
        util::run(util::cargo().arg("clippy").args(launcher).args([
            "--target-dir",
            "target/xtask-launch",
            "-q",
            "--",
            "-D",
            "warnings",
        ]))?;
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "-q",
            "--",
            "-D",
            "warnings",
        ]))?;
        Ok(String::new())
    })?;
    let (mut host, mut guest) = (Vec::new(), Vec::new());
    step(&mut rows, &format!("build, profile {}", test_bins::PROFILE), || {
        (host, guest) = test_bins::build()?;
        Ok(format!("{} test binaries", host.len() + guest.len()))
    })?;
    step(&mut rows, "cargo xtask install into a scratch prefix, and the .deb", check_install)?;
    // Every test runs, whatever failed before it; the failures are listed at the end.
    let t = Instant::now();
    let host_reports = test_bins::run_host(&host)?;
    let doc = run_counting(util::cargo().args([
        "test",
        "--profile",
        test_bins::PROFILE,
        "--workspace",
        "--doc",
    ]))
    .and_then(|(p, i)| {
        // The launcher's own tests (a workspace of its own).
        let (p2, i2) = run_counting(util::cargo().args([
            "test",
            "--manifest-path",
            "xtask/launch/Cargo.toml",
            "--target-dir",
            "target/xtask-launch",
        ]))?;
        Ok((p + p2, i + i2))
    });
    rows.push(Row {
        what: format!("host tests: {} binaries, doc tests, launcher", host_reports.len()),
        place: "host".into(),
        tests: counts(&host_reports, doc.as_ref().map_or((0, 0), |c| *c)),
        time: test_bins::secs(t.elapsed()),
        result: if host_reports.iter().all(|r| r.ok()) && doc.is_ok() { "ok" } else { "FAILED" }
            .into(),
    });
    // The fuzz targets, briefly (two at a time): a regression net; the long runs and what
    // they found are in README.
    let t = Instant::now();
    let fuzz = crate::fuzz::run_targets(&[], FUZZ_SECS);
    let fuzz_ok = fuzz.as_ref().is_ok_and(|r| r.iter().all(|r| r.ok));
    rows.push(Row {
        what: format!("fuzz targets, {FUZZ_SECS} s each"),
        place: "host".into(),
        tests: match &fuzz {
            Ok(r) => format!("{} targets, {} runs", r.len(), r.iter().map(|r| r.runs).sum::<u64>()),
            Err(_) => String::new(),
        },
        time: test_bins::secs(t.elapsed()),
        result: if fuzz_ok { "ok" } else { "FAILED" }.into(),
    });
    let t = Instant::now();
    let reports = test_bins::run_guest(guest)?;
    let guest_wall = t.elapsed();
    for r in &reports {
        rows.push(Row {
            what: format!("tests/{}.rs", r.name),
            place: r.place.clone(),
            tests: counts(std::slice::from_ref(r), (0, 0)),
            time: r.elapsed.map(test_bins::secs).unwrap_or_else(|| "-".into()),
            result: format!("{} (limit {})", r.result(), test_bins::secs(r.limit)),
        });
    }
    rows.push(Row {
        what: "Linux guest tests, wall".into(),
        place: String::new(),
        tests: format!("{} passed", reports.iter().map(|r| r.passed).sum::<u32>()),
        time: test_bins::secs(guest_wall),
        result: String::new(),
    });
    rows.push(Row {
        what: "total".into(),
        place: String::new(),
        tests: String::new(),
        time: test_bins::secs(started.elapsed()),
        result: String::new(),
    });
    print_table(&rows);
    if reports.iter().any(|r| r.place.starts_with("rig")) {
        println!("rig: L1 kernel from Debian's {}", rig::l1_kernel());
    }
    let mut problems: Vec<String> =
        host_reports.iter().chain(&reports).filter(|r| !r.ok()).map(|r| r.problem()).collect();
    if let Err(e) = doc {
        problems.push(format!("doc or launcher tests: {e:#}"));
    }
    match fuzz {
        Err(e) => problems.push(format!("fuzz targets: {e:#}")),
        Ok(r) => problems.extend(
            r.iter().filter(|r| !r.ok).map(|r| format!("fuzz target {} found a crash", r.target)),
        ),
    }
    if !problems.is_empty() {
        bail!("tests failed:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// "N passed[, M failed][, K ignored]" over `reports` and `more` (passed, ignored).
fn counts(reports: &[test_bins::BinReport], more: (u32, u32)) -> String {
    let passed: u32 = reports.iter().map(|r| r.passed).sum::<u32>() + more.0;
    let failed: usize = reports.iter().map(|r| r.failed.len()).sum();
    let ignored: u32 = reports.iter().map(|r| r.ignored).sum::<u32>() + more.1;
    let mut s = format!("{passed} passed");
    if failed > 0 {
        s.push_str(&format!(", {failed} failed"));
    }
    if ignored > 0 {
        s.push_str(&format!(", {ignored} ignored"));
    }
    s
}

fn print_table(rows: &[Row]) {
    let w = |f: fn(&Row) -> &str, title: &str| {
        rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0).max(title.len())
    };
    let (a, b, c, d) = (
        w(|r| &r.what, "step / test binary"),
        w(|r| &r.place, "where"),
        w(|r| &r.tests, "tests"),
        w(|r| &r.time, "time"),
    );
    println!("\nxtask test: summary");
    println!(
        "| {:a$} | {:b$} | {:c$} | {:>d$} | result |",
        "step / test binary", "where", "tests", "time"
    );
    println!(
        "|{}|{}|{}|{}|---|",
        "-".repeat(a + 2),
        "-".repeat(b + 2),
        "-".repeat(c + 2),
        "-".repeat(d + 2)
    );
    for r in rows {
        println!(
            "| {:a$} | {:b$} | {:c$} | {:>d$} | {} |",
            r.what, r.place, r.tests, r.time, r.result
        );
    }
}

/// Builds everything and boots a microVM with our VMM, printing what the agent reports.
pub fn demo() -> Result<()> {
    deps::ensure()?;
    kernel::build()?;
    initramfs::build()?;
    util::build_release_bins()?;
    let ironpod = util::target_dir().join("release/ironpod");
    crate::demo_image::ensure(&ironpod)?;
    println!("The local demo image, made from Debian's busybox-static with `ironpod import`:");
    util::run(Command::new(&ironpod).arg("images"))?;
    println!();
    // A bare VM first (boot time, guest kernel), then a container in a microVM of its own.
    let script = "set -e\n\
        echo '$ ironpod vm check --vcpus 2'\n\
        ironpod vm check --vcpus 2\n\
        echo\n\
        echo \"$ ironpod run --rm demo sh -c 'echo hello from a container; uname -r; hostname; id'\"\n\
        ironpod run --rm demo sh -c 'echo hello from a container in its own microVM; uname -r; hostname; id'\n";
    let args: Vec<String> = vec!["bash".into(), "-c".into(), script.into()];
    match util::direct_kvm() {
        Ok(()) => {
            let mut path = std::ffi::OsString::from(util::target_dir().join("release"));
            path.push(":");
            path.push(std::env::var_os("PATH").unwrap_or_default());
            util::run(Command::new("bash").args(&args[1..]).env("PATH", path)).context("the demo")
        }
        Err(why) => {
            eprintln!(
                "xtask demo: {why}: booting inside the test rig (a QEMU machine with nested KVM)"
            );
            let code = rig::run(&args, true, Duration::from_secs(600), 2048)?;
            if code != 0 {
                bail!("the demo failed in the rig (exit status {code})");
            }
            Ok(())
        }
    }?;
    println!();
    println!(
        "Built: {} ({}); guest kernel and initramfs in {}. Put them on PATH with \
         `cargo xtask install [--prefix /usr/local]` (also the systemd units of the Docker API \
         service).",
        util::target_dir().join("release").display(),
        crate::install::BINARIES.join(", "),
        util::ASSET_DIR
    );
    Ok(())
}

/// `cargo xtask install`'s copying, into a scratch prefix from this build: every file in
/// place, the binaries run, the units point at the prefix.
fn check_install() -> Result<String> {
    let prefix = std::env::temp_dir().join(format!("ironpod-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let assets = std::path::PathBuf::from(util::ASSET_DIR);
    let built = util::target_dir().join(test_bins::PROFILE);
    let checked = (|| {
        let i = crate::install::install(
            &prefix,
            &built,
            &assets.join("vmlinux"),
            &assets.join("initramfs.img"),
        )?;
        let out = Command::new(i.bin.join("ironpod")).arg("--version").output()?;
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).starts_with("ironpod ") {
            bail!("the installed ironpod does not run: {out:?}");
        }
        for f in ["vmlinux", "initramfs.img"] {
            if !i.assets.join(f).is_file() {
                bail!("{f} is not installed");
            }
        }
        let unit = std::fs::read_to_string(i.units.join("ironpod.service"))?;
        if !unit.contains(&format!("ExecStart={} system service", i.bin.join("ironpod").display()))
        {
            bail!("ironpod.service does not start the installed binary:\n{unit}");
        }
        // The Debian package of the same files.
        let deb = crate::deb::build(
            &prefix.join("deb"),
            &built,
            &assets.join("vmlinux"),
            &assets.join("initramfs.img"),
        )?;
        crate::deb::check(&deb)?;
        Ok(format!("{} binaries, assets, units; the .deb", crate::install::BINARIES.len()))
    })();
    let _ = std::fs::remove_dir_all(&prefix);
    checked
}
