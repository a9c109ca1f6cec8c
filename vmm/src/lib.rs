//! ironpod-vmm: a KVM virtual machine monitor for one pod.
pub mod api;
pub mod arch;
pub mod bus;
pub mod config;
mod control;
pub mod devices;
pub mod host;
pub mod memory;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
pub mod tiny_guest;
pub mod vcpu;
pub mod virtio;
pub mod vmm;
