//! ironpod's runtime library: starting microVMs and talking to the agent inside them. The
//! `ironpod` CLI is a thin front end over it (the containerd shim will be another).

pub mod agent_client;
pub mod assets;
pub mod attach;
pub mod commit;
pub mod logs;
pub mod monitor;
pub mod pod;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod vm;
