//! `ironpod-monitor`: the per-pod monitor process that `ironpod run` starts (see
//! `ironpod_pods::monitor`). A small binary of its own: it starts fast and stays small
//! while its pod runs.
//!
//! Usage: `ironpod-monitor --root ROOT --ready-fd FD --vcpus N --memory-mib M [--cpus C] [--network NAME] [--volume[-ro] DIR]... [--template] [--wait-attach] CONTAINER_ID`, with the
//! launch data (JSON) on stdin.

use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: ironpod-monitor --root ROOT --ready-fd FD --vcpus N --memory-mib M [--cpus C] [--network NAME] [--volume[-ro] DIR]... [--template] [--wait-attach] CONTAINER_ID");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    ironpod_pods::init_tracing();
    let (mut root, mut ready_fd, mut wait_attach, mut id) =
        (None::<PathBuf>, None::<i32>, false, None::<String>);
    let (mut vcpus, mut memory, mut network) = (None::<u8>, None::<u64>, None::<String>);
    let (mut volumes, mut cpus, mut template) = (Vec::new(), None::<f64>, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next().map(PathBuf::from),
            "--ready-fd" => ready_fd = args.next().and_then(|v| v.parse().ok()),
            "--wait-attach" => wait_attach = true,
            "--template" => template = true,
            "--vcpus" => vcpus = args.next().and_then(|v| v.parse().ok()),
            "--memory-mib" => memory = args.next().and_then(|v| v.parse().ok()),
            "--network" => network = args.next(),
            "--cpus" => match args.next().and_then(|v| v.parse().ok()) {
                Some(c) => cpus = Some(c),
                None => return usage(),
            },
            "--volume" | "--volume-ro" => match args.next() {
                Some(p) => volumes.push(ironpod_volumes::HostDir {
                    path: PathBuf::from(p),
                    read_only: a == "--volume-ro",
                }),
                None => return usage(),
            },
            s if !s.starts_with('-') && id.is_none() => id = Some(s.to_string()),
            _ => return usage(),
        }
    }
    let (Some(root), Some(fd), Some(id), Some(vcpus), Some(memory)) =
        (root, ready_fd, id, vcpus, memory)
    else {
        return usage();
    };
    if fd < 3 || !ironpod_protocol::valid_id(&id) {
        return usage();
    }
    // SAFETY: `ironpod run` handed us this fd for the readiness reports only.
    let ready = unsafe { std::fs::File::from_raw_fd(fd) };
    ExitCode::from(
        ironpod_pods::monitor::run(
            &root,
            &id,
            &ironpod_pods::launch::PodShape {
                vcpus,
                memory_mib: memory,
                cpus,
                network,
                volumes,
                template,
            },
            wait_attach,
            ready,
        )
        .clamp(0, 255) as u8,
    )
}
