//! `cargo xtask`: everything around the Rust build — Debian packages, the guest kernel and
//! initramfs, the test rig, the test and demo entry points, benchmarks.

mod bench;
mod bench_api;
mod bench_boot;
mod bench_build;
mod bench_kube;
mod bench_net;
mod bench_net_vmm;
mod bench_prep;
mod bench_pull;
mod bench_run;
mod bench_volumes;
mod cpio;
mod deb;
mod demo_image;
mod deps;
mod fuzz;
mod initramfs;
mod install;
mod kernel;
mod rig;
mod test;
mod test_bins;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Installs the Debian packages the build and the tests need.
    Deps,
    /// Builds (or takes from the cache) the guest kernel and installs it; prints its path last.
    Kernel,
    /// Builds the agent initramfs and installs it; prints its path last.
    Initramfs,
    /// Runs a command inside the test rig (QEMU machine with nested KVM).
    Rig(rig::RigArgs),
    /// Runs every test (what CI runs).
    Test,
    /// Boots a microVM with our VMM and talks to the agent.
    Demo,
    /// Builds ironpod and installs it: binaries, guest kernel and initramfs, systemd units.
    Install {
        /// Installation prefix.
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
    },
    /// Builds a Debian package of ironpod (what `install --prefix /usr` installs).
    Deb {
        /// Where the .deb is written.
        #[arg(long, default_value = "target/ironpod/deb")]
        out: std::path::PathBuf,
    },
    /// Runs the libFuzzer targets of fuzz/ (cargo-fuzz, nightly, AddressSanitizer).
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// (internal) The part of a benchmark that runs where KVM is.
    #[command(hide = true)]
    BenchDriver {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Deps => deps::ensure(),
        Cmd::Kernel => kernel::build().map(|p| println!("{}", p.display())),
        Cmd::Initramfs => initramfs::build().map(|p| println!("{}", p.display())),
        Cmd::Rig(a) => rig::run_cli(a),
        Cmd::Test => test::run(),
        Cmd::Demo => test::demo(),
        Cmd::Install { prefix } => install::run(&prefix).map(|_| ()),
        Cmd::Deb { out } => deb::run(&out).map(|_| ()),
        Cmd::Fuzz(a) => fuzz::run(a),
        Cmd::Bench { which } => bench::run(which),
        Cmd::BenchDriver { which } => bench::driver(which),
    };
    if let Err(e) = r {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
