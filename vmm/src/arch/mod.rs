//! x86_64 specifics: memory layout, boot protocols, vCPU state, CPUID, MP table.

pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
