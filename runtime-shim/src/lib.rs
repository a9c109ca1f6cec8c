//! ironpod's runtime library: starting microVMs and talking to the agent inside them. The
//! `ironpod` CLI is a thin front end over it (the containerd shim will be another).

pub mod agent_client;
pub mod assets;
pub mod attach;
pub mod commit;
pub mod logs;
pub mod monitor;
pub mod monitor_handle;
pub mod netns;
pub mod network;
pub mod pod;
pub mod podnet;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod state;
pub mod vm;
pub mod vmm_api;
pub mod volumes;

/// Logs to stderr, quiet unless `RUST_LOG` asks: errors reach the user as one line.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
}
