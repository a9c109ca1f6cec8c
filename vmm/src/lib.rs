//! ironpod-vmm: a KVM virtual machine monitor for one pod.
pub mod config;
pub mod bus;
pub mod virtio;
pub mod arch;
pub mod devices;
pub mod signals;
pub mod vcpu;
pub mod vmm;
