// Records the version of the rustc that cargo uses (the one compiling this crate). Cargo
// rebuilds this crate and reruns this script whenever that rustc changes.
use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = match Command::new(&rustc).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => String::new(),
    };
    println!("cargo:rustc-env=XTASK_LAUNCH_RUSTC={}", rustc.to_string_lossy());
    println!("cargo:rustc-env=XTASK_LAUNCH_RUSTC_VERSION={}", version);
}
