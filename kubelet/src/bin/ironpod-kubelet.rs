//! `ironpod-kubelet --root ROOT --namespace NS --name NAME --uid UID`: runs one pod (see
//! the `ironpod_kubelet` crate). Started detached by the controller.

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: ironpod-kubelet --root ROOT --namespace NS --name NAME --uid UID");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    ironpod_pods::init_tracing();
    let (mut root, mut ns, mut name, mut uid) = (None::<PathBuf>, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next().map(PathBuf::from),
            "--namespace" => ns = args.next(),
            "--name" => name = args.next(),
            "--uid" => uid = args.next(),
            _ => return usage(),
        }
    }
    let (Some(root), Some(ns), Some(name), Some(uid)) = (root, ns, name, uid) else {
        return usage();
    };
    // One malloc arena: the kubelet's helper threads would each keep one resident.
    // SAFETY: mallopt with integer arguments, before this process starts threads.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    ExitCode::from(ironpod_kubelet::run(&root, &ns, &name, &uid).clamp(0, 255) as u8)
}
