//! Test executables, built once with cargo profile `rig` (release optimisation with debug
//! assertions: under the rig's emulation a debug VMM is several times slower), each run
//! under a time limit of its own with markers around it. The host's run in turn on the
//! host; the Linux-guest ones (package `ironpod-tests`) run directly where KVM runs Linux,
//! else split over two rig machines at once (each L1 is one emulated CPU on one host core),
//! balanced by measured duration. Results come from the markers and libtest's own lines, so
//! a stall names the binary and the test it was in.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{rig, util};

/// The cargo profile every test is built with.
pub const PROFILE: &str = "rig";

/// Seconds each Linux-guest test binary took in the rig (profile `rig`, two L1s at once,
/// measured 2026-12-03). Used to balance the machines and to derive each binary's time
/// limit; a binary not listed here counts as [`UNMEASURED_SECS`].
const MEASURED_SECS: &[(&str, u64)] = &[
    // The package's library and its `cri-bench` and `hostile-pod` binaries (no tests of
    // their own).
    ("ironpod_tests", 1),
    ("cri-bench", 1),
    ("hostile-pod", 1),
    ("udp-echo", 1),
    ("boot", 42),
    // measured 2026-12-06, one L1: 72 s for twelve RUN steps (a microVM each, held for its
    // commit), a cached rebuild, a failing RUN, two --timestamp builds, and podman 4.3
    // building the same RUN steps (40 s of it).
    ("build", 80),
    ("containers", 185),
    // +21 s: the kube manifest through the CRI on a CNI network of its own.
    ("cri", 100),
    // measured 2026-12-05, one L1: 90 s the docker CLI, 60 s restarts and health, 130 s
    // compose, 120 s twenty clients starting pods at once.
    ("docker_api", 420),
    ("flood", 60),
    // measured 2026-12-06, one L1: 483 s for a two-container pod with a pod of volumes
    // (subPaths, hostPath, memory emptyDir, logs -f, get -w), a Deployment behind a Service
    // (another namespace's pod, rolling update and undo), restart policies, probes and the
    // controller's restart; +25 s for a pod restarted by its image's HEALTHCHECK.
    ("kube", 515),
    ("net", 15),
    ("network", 65),
    ("pods", 12),
    ("shim", 100),
    ("templates", 60),
    ("volumes", 25),
];
/// What a test binary not measured yet counts as (host test binaries take seconds).
const UNMEASURED_SECS: u64 = 200;
/// Rig machines that run at once (one per host core).
const MACHINES: usize = 2;
/// L1's memory (MiB): its tmpfs overlay holds every pod's disks and state.
const L1_MEM_MIB: u64 = 4096;
/// What one L1 needs besides its binaries: boot, module loading, power-off.
const L1_OVERHEAD: Duration = Duration::from_secs(120);
/// The package whose tests boot Linux guests.
const GUEST_PACKAGE: &str = "ironpod-tests";

const BEGIN: &str = "IRONPOD-TEST-BEGIN ";
const END: &str = "IRONPOD-TEST-END ";

/// One test executable.
pub struct TestBin {
    /// Its name in reports: the test target's (`containers` for tests/tests/containers.rs),
    /// prefixed with the package for host tests.
    pub name: String,
    exe: PathBuf,
    /// Where it runs (its package's directory, as `cargo test` does).
    dir: PathBuf,
    measured: Duration,
}

impl TestBin {
    /// How long it may run: three times its measured duration, and at least three minutes
    /// more than it — generous, yet a stall ends well inside CI's limit and is named.
    pub fn limit(&self) -> Duration {
        (self.measured * 3).max(self.measured + Duration::from_secs(180))
    }
}

/// Builds every target of the workspace with [`PROFILE`] in one cargo run (one feature
/// resolution, so nothing is built twice) and returns the test executables: the host's and
/// the Linux-guest ones.
pub fn build() -> Result<(Vec<TestBin>, Vec<TestBin>)> {
    util::run(util::cargo().args([
        "build",
        "--profile",
        PROFILE,
        "--workspace",
        "--all-targets",
        "-q",
    ]))?;
    // Builds nothing more; lists the test executables.
    let out = util::output(util::cargo().args([
        "test",
        "--profile",
        PROFILE,
        "--workspace",
        "--no-run",
        "--message-format=json",
        "-q",
    ]))?;
    // After the listing (which would link it again as the workspace build does).
    util::build_static_vmm(PROFILE)?;
    // The hostile program the rig tests run in a pod (the demo image has no C library).
    util::build_static(PROFILE, GUEST_PACKAGE, "hostile-pod")?;
    // The UDP answerer of the kube tests' UDP Service.
    util::build_static(PROFILE, GUEST_PACKAGE, "udp-echo")?;
    let (mut host, mut guest) = (Vec::new(), Vec::new());
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(target), Some(manifest)) =
            (v["executable"].as_str(), v["target"]["name"].as_str(), v["manifest_path"].as_str())
        else {
            continue;
        };
        let dir =
            PathBuf::from(manifest).parent().context("manifest has no directory")?.to_path_buf();
        let package = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let is_guest = v["package_id"].as_str().is_some_and(|id| id.contains(GUEST_PACKAGE))
            && dir == util::root().join("tests");
        let secs = if is_guest {
            MEASURED_SECS.iter().find(|(n, _)| *n == target).map_or(UNMEASURED_SECS, |m| m.1)
        } else {
            UNMEASURED_SECS
        };
        let bin = TestBin {
            name: if is_guest { target.to_string() } else { format!("{package}/{target}") },
            exe: PathBuf::from(exe),
            dir,
            measured: Duration::from_secs(secs),
        };
        if is_guest {
            guest.push(bin)
        } else {
            host.push(bin)
        }
    }
    if guest.is_empty() || host.is_empty() {
        bail!(
            "the workspace produced no test executables (host: {}, guest: {})",
            host.len(),
            guest.len()
        );
    }
    Ok((host, guest))
}

/// Splits `bins` into `n` groups of about equal measured time: longest first, each to the
/// group with the least so far.
fn balance(mut bins: Vec<TestBin>, n: usize) -> Vec<Vec<TestBin>> {
    bins.sort_by(|a, b| b.measured.cmp(&a.measured).then(a.name.cmp(&b.name)));
    let mut groups: Vec<Vec<TestBin>> = (0..n).map(|_| Vec::new()).collect();
    for b in bins {
        let least = (0..n)
            .min_by_key(|&i| groups[i].iter().map(|b| b.measured).sum::<Duration>())
            .unwrap_or(0);
        groups[least].push(b);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// The bash script that runs one group in turn, each binary in its directory under
/// `timeout`, with markers around it, libtest called with `args`. `cleanup`: after a binary
/// that ran over its limit, kill whatever of ironpod it left running (only inside a
/// throwaway rig machine, never on a real host) or that aborted (a test's watchdog), so the
/// binaries after it start clean.
fn script(group: &[TestBin], args: &str, cleanup: bool) -> String {
    let mut s = String::from("exec 2>&1\n");
    for b in group {
        let limit = b.limit().as_secs();
        s.push_str(&format!(
            "echo '{BEGIN}{name}'\ncd '{dir}' && timeout -k 15 {limit} '{exe}' {args}\n\
             rc=$?\necho \"{END}{name} $rc\"\n",
            name = b.name,
            dir = b.dir.display(),
            exe = b.exe.display(),
        ));
        if cleanup {
            s.push_str(
                "if [ $rc = 124 ] || [ $rc = 137 ] || [ $rc = 134 ]; then\n  \
                 for p in ironpod-vmm virtiofsd containerd containerd-shim-ironpod-v2 ironpod \
                 ironpod-monitor ironpod-kubelet; do pkill -KILL -x \"$p\"; done\nfi\n",
            );
        }
    }
    s.push_str("exit 0\n");
    s
}

/// How one test binary ended.
pub enum Outcome {
    /// Every test passed.
    Passed,
    /// Tests failed (or the binary itself did): its exit status.
    Failed(i32),
    /// Killed after its time limit, in this test (if one had started).
    OverLimit(Option<String>),
    /// Aborted (status 134: a test's watchdog found it over `TEST_LIMIT`), in this test.
    Aborted(Option<String>),
    /// Its machine stopped while it ran, in this test: why.
    Lost(Option<String>, String),
    /// Never started: why.
    NotRun(String),
}

/// What one test binary did.
pub struct BinReport {
    /// Test target name.
    pub name: String,
    /// Where it ran (`rig L1-a`, `host`).
    pub place: String,
    /// Wall time, if it ended.
    pub elapsed: Option<Duration>,
    /// Its time limit.
    pub limit: Duration,
    /// Tests passed, failed, ignored (from libtest's result line).
    pub passed: u32,
    /// Names of failed tests.
    pub failed: Vec<String>,
    /// Ignored tests.
    pub ignored: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// Tests passed and ignored in what follows libtest's `test result: ` (`ok. 4 passed; 0
/// failed; 1 ignored; …`).
pub fn result_counts(rest: &str) -> (u32, u32) {
    let count = |what: &str| {
        rest.split(';')
            .find_map(|p| p.trim().strip_suffix(what)?.trim().rsplit(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (count("passed"), count("ignored"))
}

/// Follows one machine's output and turns it into [`BinReport`]s.
struct Tracker {
    place: String,
    reports: Vec<BinReport>,
    /// Index of the running binary, when it started, and the test it is in.
    current: Option<(usize, Instant, Option<String>)>,
    in_failures: bool,
}

impl Tracker {
    fn new(place: &str, group: &[TestBin]) -> Tracker {
        let reports = group
            .iter()
            .map(|b| BinReport {
                name: b.name.clone(),
                place: place.to_string(),
                elapsed: None,
                limit: b.limit(),
                passed: 0,
                failed: Vec::new(),
                ignored: 0,
                outcome: Outcome::NotRun("an earlier binary's machine stopped".into()),
            })
            .collect();
        Tracker { place: place.to_string(), reports, current: None, in_failures: false }
    }

    fn line(&mut self, line: &str) {
        let t = line.trim_end();
        if let Some(name) = t.strip_prefix(BEGIN) {
            if let Some(i) = self.reports.iter().position(|r| r.name == name.trim()) {
                self.current = Some((i, Instant::now(), None));
                self.in_failures = false;
            }
            return;
        }
        if let Some(rest) = t.strip_prefix(END) {
            let status = rest.split_whitespace().nth(1).and_then(|s| s.parse::<i32>().ok());
            if let Some((i, started, test)) = self.current.take() {
                let r = &mut self.reports[i];
                let elapsed = started.elapsed();
                r.elapsed = Some(elapsed);
                r.outcome = match status {
                    Some(0) => Outcome::Passed,
                    Some(124 | 137) if elapsed + Duration::from_secs(5) >= r.limit => {
                        Outcome::OverLimit(test)
                    }
                    Some(134) => Outcome::Aborted(test),
                    Some(code) => Outcome::Failed(code),
                    None => Outcome::Failed(-1),
                };
            }
            return;
        }
        let Some((i, _, test)) = &mut self.current else { return };
        let r = &mut self.reports[*i];
        if let Some(rest) = t.strip_prefix("test ") {
            if let Some((name, _)) = rest.split_once(" ...") {
                *test = Some(name.to_string());
                self.in_failures = false;
            } else if let Some(rest) = rest.strip_prefix("result: ") {
                self.in_failures = false;
                let (passed, ignored) = result_counts(rest);
                r.passed += passed;
                r.ignored += ignored;
            }
        } else if t == "failures:" {
            self.in_failures = true;
        } else if self.in_failures {
            if let Some(name) = t.strip_prefix("    ") {
                if !name.is_empty() && !name.contains(' ') && !r.failed.iter().any(|f| f == name) {
                    r.failed.push(name.to_string());
                }
            }
        }
    }

    /// The reports, with the running binary (if any) marked lost for `why`.
    fn finish(mut self, why: &str) -> Vec<BinReport> {
        if let Some((i, started, test)) = self.current.take() {
            let r = &mut self.reports[i];
            r.elapsed = Some(started.elapsed());
            r.outcome = Outcome::Lost(test, format!("{} {why}", self.place));
        }
        self.reports
    }
}

/// libtest's arguments for the Linux-guest tests: one at a time (they share the machine's
/// KVM, network namespaces and process table), their output as it comes.
const GUEST_ARGS: &str = "--test-threads=1 --nocapture";

/// Runs the host's test binaries here, in turn (each runs its tests on parallel threads).
pub fn run_host(bins: &[TestBin]) -> Result<Vec<BinReport>> {
    run_here("host", bins, "")
}

/// Runs `bins` on this machine with `args`, echoing their output.
fn run_here(place: &str, bins: &[TestBin], args: &str) -> Result<Vec<BinReport>> {
    let mut tracker = Tracker::new(place, bins);
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script(bins, args, false))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start bash")?;
    let out = child.stdout.take().context("no stdout")?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
        let line = line?;
        println!("{line}");
        tracker.line(&line);
    }
    child.wait()?;
    Ok(tracker.finish("ended early"))
}

/// Runs the Linux-guest binaries: directly (in turn) where KVM runs Linux, else over
/// [`MACHINES`] rig machines at once, each machine's output printed as it comes, prefixed
/// with its name.
pub fn run_guest(bins: Vec<TestBin>) -> Result<Vec<BinReport>> {
    if util::direct_kvm().is_ok() {
        eprintln!("xtask test: hardware KVM here: the Linux guest tests run directly, in turn");
        return run_here("host (KVM)", &bins, GUEST_ARGS);
    }
    let why = util::direct_kvm().err().unwrap_or_default();
    let groups = balance(bins, MACHINES);
    eprintln!(
        "xtask test: {why}, so the Linux guest tests run inside {} rig machines at once",
        groups.len()
    );
    let results: Vec<Result<Vec<BinReport>>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let place = format!("rig L1-{}", (b'a' + i as u8) as char);
                s.spawn(move || run_in_rig(&place, g))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a rig thread panicked")))
            .collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Runs one group in a rig machine of its own.
fn run_in_rig(place: &str, group: &[TestBin]) -> Result<Vec<BinReport>> {
    let budget = group.iter().map(TestBin::limit).sum::<Duration>() + L1_OVERHEAD;
    let names: Vec<&str> = group.iter().map(|b| b.name.as_str()).collect();
    eprintln!("xtask test: {place}: {} (limit {} s in all)", names.join(", "), budget.as_secs());
    let mut tracker = Tracker::new(place, group);
    let tag = place.rsplit(' ').next().unwrap_or(place).to_string();
    let cmd = ["bash".to_string(), "-c".to_string(), script(group, GUEST_ARGS, true)];
    let exit = rig::run_observed(&cmd, PROFILE, budget, L1_MEM_MIB, |line| {
        println!("[{tag}] {line}");
        tracker.line(line);
    })?;
    eprintln!("xtask test: {place} ran for {:.1} s", exit.elapsed.as_secs_f64());
    let why = if exit.timed_out {
        format!("ran over its limit of {} s", budget.as_secs())
    } else {
        "stopped unexpectedly".to_string()
    };
    Ok(tracker.finish(&why))
}

/// Formats a duration as seconds.
pub fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

impl BinReport {
    /// Whether it passed.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Passed) && self.failed.is_empty()
    }

    /// One line saying what went wrong (for the error at the end).
    pub fn problem(&self) -> String {
        let test = |t: &Option<String>| t.as_deref().map_or(String::new(), |t| format!(" in {t}"));
        match &self.outcome {
            Outcome::Passed => String::new(),
            Outcome::Failed(code) if self.failed.is_empty() => {
                format!("{} ({}) exited with status {code}", self.name, self.place)
            }
            Outcome::Failed(_) => {
                format!("{} ({}): failed: {}", self.name, self.place, self.failed.join(", "))
            }
            Outcome::OverLimit(t) => format!(
                "{} ({}) ran over its limit of {}{}",
                self.name,
                self.place,
                secs(self.limit),
                test(t)
            ),
            Outcome::Aborted(t) => {
                format!("{} ({}) aborted (a hung test?){}", self.name, self.place, test(t))
            }
            Outcome::Lost(t, why) => format!("{}: {why}{}", self.name, test(t)),
            Outcome::NotRun(why) => format!("{} did not run: {why}", self.name),
        }
    }

    /// The result column of the summary table.
    pub fn result(&self) -> &'static str {
        match self.outcome {
            Outcome::Passed => "ok",
            Outcome::Failed(_) => "FAILED",
            Outcome::OverLimit(_) => "OVER LIMIT",
            Outcome::Aborted(_) => "ABORTED",
            Outcome::Lost(..) => "LOST",
            Outcome::NotRun(_) => "NOT RUN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(name: &str, secs: u64) -> TestBin {
        TestBin {
            name: name.into(),
            exe: PathBuf::from(format!("/x/{name}")),
            dir: PathBuf::from("/w"),
            measured: Duration::from_secs(secs),
        }
    }

    #[test]
    fn balance_evens_out_measured_time() {
        let g = balance(vec![bin("a", 300), bin("b", 200), bin("c", 200), bin("d", 60)], 2);
        let sums: Vec<u64> =
            g.iter().map(|g| g.iter().map(|b| b.measured.as_secs()).sum()).collect();
        assert_eq!(sums, vec![360, 400]);
        assert_eq!(balance(vec![bin("a", 1)], 2).len(), 1);
    }

    #[test]
    fn limits_are_generous_but_finite() {
        assert_eq!(bin("a", 20).limit(), Duration::from_secs(200));
        assert_eq!(bin("a", 300).limit(), Duration::from_secs(900));
    }

    #[test]
    fn tracker_reads_libtest_output_and_markers() {
        let group = [bin("one", 10), bin("two", 10), bin("three", 10)];
        let mut t = Tracker::new("rig L1-a", &group);
        for l in [
            "IRONPOD-TEST-BEGIN one",
            "running 3 tests",
            "test a_ok ... hello",
            "ok",
            "test b_fail ... partial",
            "no newlineFAILED",
            "failures:",
            "",
            "failures:",
            "    b_fail",
            "",
            "test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out",
            "IRONPOD-TEST-END one 101",
            "IRONPOD-TEST-BEGIN two",
            "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "IRONPOD-TEST-END two 0",
            "IRONPOD-TEST-BEGIN three",
            "test stuck_one ... ",
        ] {
            t.line(l);
        }
        let r = t.finish("ran over its limit of 900 s");
        assert_eq!((r[0].passed, r[0].ignored, r[0].failed.clone()), (2, 1, vec!["b_fail".into()]));
        assert!(matches!(r[0].outcome, Outcome::Failed(101)));
        assert_eq!(r[0].problem(), "one (rig L1-a): failed: b_fail");
        assert!(r[1].ok() && r[1].passed == 4);
        assert_eq!(r[2].problem(), "three: rig L1-a ran over its limit of 900 s in stuck_one");
    }

    #[test]
    fn an_aborted_binary_names_the_test_that_hung() {
        let group = [bin("one", 10)];
        let mut t = Tracker::new("rig L1-b", &group);
        for l in [
            "IRONPOD-TEST-BEGIN one",
            "test a_ok ... ok",
            "test hangs ... ",
            "IRONPOD-TEST-END one 134",
        ] {
            t.line(l);
        }
        let r = t.finish("stopped");
        assert_eq!(r[0].result(), "ABORTED");
        assert_eq!(r[0].problem(), "one (rig L1-b) aborted (a hung test?) in hangs");
    }

    #[test]
    fn the_script_marks_each_binary_and_limits_it() {
        let s = script(&[bin("one", 20)], GUEST_ARGS, true);
        assert!(s.contains(
            "echo 'IRONPOD-TEST-BEGIN one'\ncd '/w' && timeout -k 15 200 '/x/one' --test-threads=1"
        ));
        assert!(s.contains("echo \"IRONPOD-TEST-END one $rc\""));
        assert!(s.contains("pkill -KILL -x \"$p\""));
        assert!(!script(&[bin("one", 20)], "", false).contains("pkill"));
    }
}
