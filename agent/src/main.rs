//! `ironpod-agent`: PID 1 inside an ironpod microVM.
//!
//! As PID 1 it mounts the pseudo filesystems, reaps orphans, and serves the host protocol
//! (`ironpod-protocol`) on vsock port 1024. A panic or a fatal error ends the VM (sync +
//! reboot, which the VMM turns into a clean exit) instead of leaving a guest without an init.
//! Run as any other PID (`--listen-unix PATH`) it serves the same protocol on a unix socket,
//! which is how its handlers are tested on a host.

use std::path::PathBuf;

mod container;
mod handlers;
mod init;
mod listener;
mod log;
mod net;
mod reaper;
mod reseed;
mod session;

fn usage() -> ! {
    eprintln!("usage: ironpod-agent [--listen-unix PATH] [--vsock-port PORT]");
    std::process::exit(2);
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--container-init") {
        log::trace("child: started");
        container::child::main();
    }
    let pid1 = std::process::id() == 1;
    let mut unix: Option<PathBuf> = None;
    let mut port = ironpod_protocol::AGENT_VSOCK_PORT;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen-unix" => unix = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--vsock-port" => {
                port = args.next().and_then(|p| p.parse().ok()).unwrap_or_else(|| usage())
            }
            "--version" => {
                println!("ironpod-agent {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            // The kernel passes unknown command-line words to init; ignore them.
            _ if pid1 => {}
            _ => usage(),
        }
    }
    if pid1 {
        init::install_panic_hook();
        if let Err(e) = init::setup() {
            log::line(&format!("early setup failed: {e}"));
            init::end_vm();
        }
        // Descriptors enough for many sessions and deep copies at once (the kernel's 1024
        // for init would not be); containers get their own limits from their spec.
        if let Err(e) = init::raise_nofile() {
            log::line(&format!("descriptor limit: {e}"));
        }
        if let Err(e) = net::loopback_up() {
            log::line(&format!("loopback: {}", e.message));
        }
        log::trace("agent: set up");
        // The pod's disks get mounted while the host connects.
        if let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline") {
            if let Err(e) = std::thread::Builder::new().name("premount".into()).spawn(move || {
                container::premount(&cmdline);
                log::trace("agent: disks mounted");
            }) {
                log::line(&format!("cannot start the disk mounter: {e}"));
            }
        }
    }
    reaper::start(pid1);
    let listener = match &unix {
        Some(path) => listener::Listener::unix(path),
        None => listener::Listener::vsock(port),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            log::line(&format!("cannot listen: {e}"));
            if pid1 {
                init::end_vm();
            }
            std::process::exit(1);
        }
    };
    log::line(&format!(
        "ironpod-agent {} ready on {}",
        env!("CARGO_PKG_VERSION"),
        listener.describe()
    ));
    listener.serve(pid1);
}
