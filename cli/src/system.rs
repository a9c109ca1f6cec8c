//! `ironpod system …`: the service that serves the Docker Engine API.

use std::path::Path;
use std::time::Duration;

use crate::Failure;

/// Arguments of `ironpod system service`.
#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    /// Where to listen (`unix:///PATH`); a socket passed by systemd takes its place.
    #[arg(long, default_value = ironpod_service::listener::DEFAULT_SOCKET)]
    socket: String,
    /// Seconds without a client connection before the service exits (0: never).
    #[arg(short, long, default_value_t = 0)]
    time: u64,
    /// Group allowed to use the socket (name or id; default: root only).
    #[arg(long)]
    group: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9323 (off unless
    /// given; anyone who reaches ADDR can read them, so keep it on loopback).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// The host address Kubernetes Services' node ports listen on (`ironpod kube`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    node_address: std::net::Ipv4Addr,
}

/// `ironpod system service`: runs until SIGINT/SIGTERM or `--time` idle seconds.
pub fn service(root: &Path, a: ServiceArgs) -> Result<i32, Failure> {
    let opts = ironpod_service::Options {
        root: root.to_path_buf(),
        socket: a.socket,
        group: a.group,
        idle: (a.time > 0).then(|| Duration::from_secs(a.time)),
        metrics: a.metrics_addr,
        controllers: ironpod_controllers::Options { node_address: a.node_address },
    };
    ironpod_service::run(opts).map_err(|e| Failure::Runtime(e.to_string()))?;
    Ok(0)
}
