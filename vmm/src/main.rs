//! `ironpod-vmm --config vm.json`: boots one microVM and exits when the guest does.
//!
//! Exit status: 0 when the guest resets or powers off, 1 when the VM fails (triple fault, KVM
//! error, device setup), 2 for a bad configuration, 128+N when stopped by signal N.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ironpod_vmm::config::{LateConfig, VmConfig};
use ironpod_vmm::vmm::{Vm, VmExit};

/// ironpod's KVM virtual machine monitor: one microVM per process.
#[derive(Parser, Debug)]
#[command(name = "ironpod-vmm", version, about)]
struct Args {
    /// VM configuration file (JSON, see vmm/README.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Set the VM up, then read more disks and command-line words as one JSON line on stdin
    /// before booting (stdin closed first: exit 0 without booting).
    #[arg(long)]
    late_config: bool,
    /// Run without the seccomp filters (debugging only: ironpod never uses it).
    #[arg(long)]
    no_seccomp: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A write past RLIMIT_FSIZE (the jail's limit; a guest flooding a console file) fails
    // with EFBIG instead of ending the VM.
    // SAFETY: signal(2) setting SIGXFSZ to be ignored, before any thread starts.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let config = match VmConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ironpod-vmm: {e}");
            return ExitCode::from(2);
        }
    };
    let mut vm = match Vm::new(config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("ironpod-vmm: {e}");
            return ExitCode::from(1);
        }
    };
    if args.late_config {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => {
                eprintln!("ironpod-vmm: read the late configuration: {e}");
                return ExitCode::from(2);
            }
        }
        let late = match LateConfig::parse(&line, vm.config()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ironpod-vmm: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = vm.add_late(late) {
            eprintln!("ironpod-vmm: {e}");
            return ExitCode::from(1);
        }
    }
    match vm.run(!args.no_seccomp) {
        Ok(exit) => {
            match &exit {
                VmExit::Clean => {}
                VmExit::Failed(reason) => eprintln!("ironpod-vmm: {reason}"),
                VmExit::Signal(s) => eprintln!("ironpod-vmm: stopped by signal {s}"),
            }
            ExitCode::from(exit.code() as u8)
        }
        Err(e) => {
            eprintln!("ironpod-vmm: {e}");
            ExitCode::from(1)
        }
    }
}
