//! Snapshots of a running VM: the state KVM holds ([`kvm_state`]), to be saved with the
//! devices' state and the guest memory, and restored into a new VMM process.

pub mod kvm_state;
pub mod memory_file;
pub mod state_file;
pub mod vm;

#[cfg(test)]
mod tests;
