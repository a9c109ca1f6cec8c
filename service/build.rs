//! Records the compiler and the source revision (and its date) for `GET /version`.
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .unwrap_or_default()
    };
    let mut commit = git(&["rev-parse", "--short=7", "HEAD"]);
    if commit.trim().is_empty() {
        commit = "unknown".into();
    }
    // The commit's date stands for the build time (a build stays reproducible).
    let date = git(&["log", "-1", "--format=%cI"]);
    println!("cargo:rustc-env=IRONPOD_RUSTC_VERSION={}", version.trim());
    println!("cargo:rustc-env=IRONPOD_GIT_COMMIT={}", commit.trim());
    println!("cargo:rustc-env=IRONPOD_GIT_DATE={}", date.trim());
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
