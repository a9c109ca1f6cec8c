//! `cargo xtask` launcher. The alias in `.cargo/config.toml` runs this crate, which is its own
//! workspace and builds with old toolchains (Debian 12's cargo 1.65 / rustc 1.63), so that a
//! too-old or incomplete toolchain gets one clear message instead of a manifest or lockfile
//! error from the main workspace. When the toolchain is fine it runs
//! `cargo run --quiet --package xtask -- ARGS…` in the workspace root (on unix by exec, so exit
//! codes and signals pass straight through).
//!
//! Keep this compiling on Rust 1.63, edition 2018, without dependencies.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};

/// The workspace's `rust-version`.
const NEED: (u32, u32) = (1, 85);
/// Installs rustup with the stable toolchain and the components `cargo xtask test` needs.
const INSTALL: &str = "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
                       | sh -s -- -y --default-toolchain stable --component rustfmt,clippy";

fn main() {
    let cargo = PathBuf::from(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Recorded by build.rs from the rustc cargo compiled this crate with (the one it uses).
    let rustc_version = env!("XTASK_LAUNCH_RUSTC_VERSION");

    let rustc_ok = parse_version(rustc_version) >= Some(NEED);
    // Both checks run at once; each is skipped when the subcommand's binary is next to cargo
    // (rustup installs cargo-fmt / cargo-clippy there exactly when the component is installed).
    let fmt = ToolCheck::start(&cargo, "fmt", "cargo-fmt");
    let clippy = ToolCheck::start(&cargo, "clippy", "cargo-clippy");
    let fmt = fmt.finish();
    let clippy = clippy.finish();

    if !rustc_ok || fmt.is_err() || clippy.is_err() {
        let found_rustc = if rustc_version.is_empty() {
            format!("`{} --version` failed", env!("XTASK_LAUNCH_RUSTC"))
        } else if rustc_ok {
            rustc_version.to_string()
        } else {
            format!("{} (too old)", rustc_version)
        };
        // Under rustup (its proxies set RUSTUP_TOOLCHAIN) rustup itself fixes it; otherwise
        // (Debian's own cargo) rustup gets installed.
        let fix = if env::var_os("RUSTUP_TOOLCHAIN").is_none() {
            format!(
                "install rustup's stable toolchain with them, then run \
                 `. \"$HOME/.cargo/env\"` in this shell:\n  {}",
                INSTALL
            )
        } else if rustc_ok {
            "add them with:\n  rustup component add rustfmt clippy".to_string()
        } else {
            "install it with:\n  rustup toolchain install stable --component rustfmt,clippy \
             && rustup default stable"
                .to_string()
        };
        eprintln!(
            "error: `cargo xtask` needs Rust >= {}.{} with the rustfmt and clippy components; \
             found {}, cargo fmt: {}, cargo clippy: {} (cargo: {}).\n{}",
            NEED.0,
            NEED.1,
            found_rustc,
            describe(&fmt),
            describe(&clippy),
            cargo.display(),
            fix
        );
        process::exit(1);
    }

    // cargo sets CARGO_MANIFEST_DIR for `cargo run`; the compile-time value is the fallback.
    let launch_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = launch_dir.join("../..");

    let mut cmd = Command::new(&cargo);
    cmd.args(["run", "--quiet", "--package", "xtask", "--"])
        .args(env::args_os().skip(1))
        .current_dir(&root);
    clean_env(&mut cmd);
    run(cmd, &cargo);
}

/// `(major, minor)` from `rustc 1.85.0 (…)`, `rustc 1.86.0-nightly (…)`, `rustc 1.63.0`.
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let v = s.split_whitespace().nth(1)?;
    let mut parts = v.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

enum ToolCheck {
    Present,
    Running(Child),
    Failed(String),
}

impl ToolCheck {
    fn start(cargo: &Path, sub: &str, bin: &str) -> ToolCheck {
        if let Some(dir) = cargo.parent() {
            if !dir.as_os_str().is_empty() && dir.join(bin).is_file() {
                return ToolCheck::Present;
            }
        }
        let spawned = Command::new(cargo)
            .args([sub, "--version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => ToolCheck::Running(child),
            Err(e) => ToolCheck::Failed(e.to_string()),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self {
            ToolCheck::Present => Ok(()),
            ToolCheck::Failed(e) => Err(e),
            ToolCheck::Running(child) => match child.wait_with_output() {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let line = err.lines().map(str::trim).find(|l| !l.is_empty());
                    Err(line.unwrap_or("failed").to_string())
                }
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

fn describe(r: &Result<(), String>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("missing ({})", e),
    }
}

/// Drops what `cargo run` set for this launcher, so xtask's environment is what it was when the
/// alias ran xtask directly (cargo sets its own values for xtask again).
fn clean_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k == "CARGO_CRATE_NAME"
            || k == "CARGO_BIN_NAME"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "OUT_DIR"
        {
            cmd.env_remove(&key);
        }
    }
    // cargo prepends this launcher's target directories to the library path.
    let var =
        if cfg!(target_os = "macos") { "DYLD_FALLBACK_LIBRARY_PATH" } else { "LD_LIBRARY_PATH" };
    let target = env::current_exe().ok().and_then(|e| e.parent()?.parent().map(Path::to_path_buf));
    if let (Some(paths), Some(target)) = (env::var_os(var), target) {
        let kept: Vec<PathBuf> =
            env::split_paths(&paths).filter(|p| !p.starts_with(&target)).collect();
        if kept.is_empty() {
            cmd.env_remove(var);
        } else if let Ok(joined) = env::join_paths(kept) {
            cmd.env(var, joined);
        }
    }
}

#[cfg(unix)]
fn run(mut cmd: Command, cargo: &Path) {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    fail(cargo, err);
}

#[cfg(not(unix))]
fn run(mut cmd: Command, cargo: &Path) {
    match cmd.status() {
        Ok(status) => process::exit(status.code().unwrap_or(1)),
        Err(e) => fail(cargo, e),
    }
}

fn fail(cargo: &Path, err: std::io::Error) {
    eprintln!("error: could not run {}: {}", cargo.display(), err);
    process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions() {
        assert_eq!(parse_version("rustc 1.95.0 (59807616e 2026-04-14)"), Some((1, 95)));
        assert_eq!(parse_version("rustc 1.85.0-nightly (abc 2024-12-01)"), Some((1, 85)));
        assert_eq!(parse_version("rustc 1.86.0-beta.3 (abc 2025-02-01)"), Some((1, 86)));
        assert_eq!(parse_version("rustc 1.63.0"), Some((1, 63)));
        assert_eq!(parse_version("rustc 2.0.0"), Some((2, 0)));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("rustc"), None);
    }
}
