//! `ironpod vm …`: microVM maintenance commands.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_vmm::config::SerialOutput;

/// Arguments of `ironpod vm check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(32..=1048576))]
    memory: u64,
    /// Guest kernel (default: $IRONPOD_KERNEL or /usr/local/share/ironpod/vmlinux).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs (default: $IRONPOD_INITRAMFS or /usr/local/share/ironpod/initramfs.img).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Console: off, stdout, or a file (default: the VM's runtime directory).
    #[arg(long)]
    serial: Option<String>,
    /// Seconds to wait for the agent.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Run this check's VMM unconfined (no jail, no seccomp filters, no host cgroup), to
    /// measure what confinement costs. Pods never run so.
    #[arg(long)]
    unconfined: bool,
}

#[derive(serde::Serialize)]
struct CheckReport {
    ready_ms: u128,
    agent_version: String,
    kernel_release: String,
    cpus_online: u32,
    memory_total_kib: u64,
    vmm_overhead_kib: Option<u64>,
    shutdown_ms: u128,
    vmm_exit_code: Option<i32>,
}

/// `ironpod vm check`.
pub fn check(args: CheckArgs) -> Result<(), String> {
    let mut spec = VmSpec::with_defaults_or(args.kernel.clone(), args.initrd.clone())
        .map_err(|e| e.to_string())?;
    spec.vcpus = args.vcpus;
    spec.memory_mib = args.memory;
    spec.jail = !args.unconfined;
    spec.serial = args.serial.as_deref().map(|s| match s {
        "off" => SerialOutput::Off,
        "stdout" => SerialOutput::Stdout,
        p => SerialOutput::File(p.into()),
    });
    let mut vm = RunningVm::start(&spec).map_err(|e| e.to_string())?;
    let mut agent = vm.wait_agent(Duration::from_secs(args.timeout)).map_err(|e| e.to_string())?;
    agent.ping().map_err(|e| e.to_string())?;
    let ready = vm.started().elapsed();
    let info = agent.info().map_err(|e| e.to_string())?;
    let overhead = vm.vmm_overhead_kib();
    let t = Instant::now();
    let status = vm.shutdown(&mut agent, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let report = CheckReport {
        ready_ms: ready.as_millis(),
        agent_version: agent.agent_version().to_string(),
        kernel_release: info.kernel_release,
        cpus_online: info.cpus_online,
        memory_total_kib: info.memory_total_kib,
        vmm_overhead_kib: overhead,
        shutdown_ms: t.elapsed().as_millis(),
        vmm_exit_code: status.code(),
    };
    // A closed pipe on stdout (`| head -1`) is not an error worth a panic.
    let mut text = String::new();
    if args.json {
        text = serde_json::to_string(&report).map_err(|e| e.to_string())? + "\n";
    } else {
        text.push_str(&format!("agent ready in {} ms\n", report.ready_ms));
        text.push_str(&format!("agent version: {}\n", report.agent_version));
        text.push_str(&format!("guest kernel: {}\n", report.kernel_release));
        text.push_str(&format!(
            "guest CPUs: {}, memory: {} MiB\n",
            report.cpus_online,
            report.memory_total_kib / 1024
        ));
        if let Some(k) = report.vmm_overhead_kib {
            text.push_str(&format!("VMM memory overhead (RSS without guest RAM): {k} KiB\n"));
        }
        text.push_str(&format!("shut down in {} ms\n", report.shutdown_ms));
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if !status.success() {
        return Err(format!("the VMM exited with {status} after shutdown"));
    }
    Ok(())
}

/// `ironpod vm template …`.
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum TemplateCommand {
    /// Lists the pod templates.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Removes pod templates (pods running from one keep running; the next pod of its
    /// shape makes it again).
    Rm {
        /// Templates (a key, or the start of one).
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Removes every pod template no running pod uses.
    Prune,
}

/// `ironpod vm template …`.
pub fn template(root: &std::path::Path, command: TemplateCommand) -> Result<(), String> {
    use ironpod_pods::template::admin;
    match command {
        TemplateCommand::Ls { json } => {
            let all = admin::list(root).map_err(|e| e.to_string())?;
            if json {
                let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
                println!("{text}");
                return Ok(());
            }
            println!(
                "{:<24}  {:>5}  {:>8}  {:<5}  {:<5}  {:>8}  {:<18}  IN USE",
                "TEMPLATE", "VCPUS", "MEMORY", "CARD", "SHARE", "SIZE", "CREATED"
            );
            let yes = |b: bool| if b { "yes" } else { "no" };
            for t in all {
                let age = t
                    .created
                    .and_then(|c| c.elapsed().ok())
                    .map(|d| format!("{} ago", ironpod_state::describe::human(d.as_secs())))
                    .unwrap_or_else(|| "?".into());
                let used = match (t.current, t.users) {
                    (false, n) => format!("{n} (stale)"),
                    (true, n) => n.to_string(),
                };
                println!(
                    "{:<24}  {:>5}  {:>5}MiB  {:<5}  {:<5}  {:>8}  {:<18}  {used}",
                    t.key,
                    t.vcpus,
                    t.memory_mib,
                    yes(t.card),
                    yes(t.share),
                    crate::images::human(t.disk_bytes),
                    age,
                );
            }
            Ok(())
        }
        TemplateCommand::Rm { keys } => {
            let mut failed = Vec::new();
            for k in keys {
                match admin::remove(root, &k) {
                    Ok(full) => println!("{full}"),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(failed.join("\n"))
            }
        }
        TemplateCommand::Prune => {
            for k in admin::prune(root).map_err(|e| e.to_string())? {
                println!("{k}");
            }
            Ok(())
        }
    }
}
