//! `ironpod network create|ls|rm|inspect|connect|disconnect|prune`.

use std::path::Path;

use ironpod_net::{self as network, NetworkStore};

use crate::Failure;

/// `ironpod network …`.
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum NetworkCommand {
    /// Creates a network: pods on it reach each other by address and name.
    Create(CreateArgs),
    /// Lists networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Removes networks that no running pod uses.
    #[command(visible_alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Puts a container that has not started on a network (a pod has one network card,
    /// chosen when its VM starts).
    Connect {
        /// Another name the container answers to there; repeatable.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Takes a container that has not started off a network.
    Disconnect {
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Removes the networks no running pod uses.
    Prune {
        /// Only networks with this label (KEY or KEY=VALUE); repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Shows networks and their pods as JSON.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

/// Arguments of `ironpod network create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// IPv4 subnet (A.B.C.D/N); by default the first free 10.89.N.0/24.
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway address (the bridge's); by default the subnet's first address.
    #[arg(long)]
    gateway: Option<String>,
    /// No egress: pods reach each other only, nothing outside the network.
    #[arg(long)]
    internal: bool,
    /// Let pods reach private address ranges beyond the host (10/8, 172.16/12, 192.168/16,
    /// 100.64/10); blocked by default. The host itself and link-local addresses (cloud
    /// metadata) stay out of reach either way.
    #[arg(long = "allow-private", conflicts_with = "internal")]
    allow_private: bool,
    /// Labels (`KEY=VALUE`).
    #[arg(short, long = "label")]
    labels: Vec<String>,
    /// Driver (only `bridge`).
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Name.
    name: String,
}

fn rt(e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(e.to_string())
}

/// Runs a network command.
pub fn run(root: &Path, cmd: NetworkCommand) -> Result<i32, Failure> {
    match cmd {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                return Err(Failure::Usage(format!(
                    "network driver {:?} is not supported (only bridge)",
                    a.driver
                )));
            }
            let labels = crate::run::parse_labels(&a.labels);
            let mut store = NetworkStore::open(root).map_err(rt)?;
            let net = store
                .create(&network::NewNetwork {
                    name: &a.name,
                    subnet: a.subnet.as_deref(),
                    gateway: a.gateway.as_deref(),
                    internal: a.internal,
                    allow_private: a.allow_private,
                    labels,
                })
                .map_err(rt)?;
            println!("{}", net.id);
            Ok(0)
        }
        NetworkCommand::Ls { quiet } => {
            let store = NetworkStore::open(root).map_err(rt)?;
            let nets = store.list().map_err(rt)?;
            if quiet {
                for n in nets {
                    println!("{}", n.name);
                }
                return Ok(0);
            }
            println!("{:<14}{:<20}{:<10}{:<18}GATEWAY", "NETWORK ID", "NAME", "DRIVER", "SUBNET");
            for n in nets {
                println!(
                    "{:<14}{:<20}{:<10}{:<18}{}",
                    &n.id[..12],
                    n.name,
                    "bridge",
                    n.subnet,
                    n.gateway
                );
            }
            println!("{:<14}{:<20}{:<10}{:<18}", "-", "none", "null", "-");
            Ok(0)
        }
        NetworkCommand::Rm { networks } => {
            let mut code = 0;
            for n in networks {
                match network::remove(root, &n) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("ironpod: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkCommand::Connect { aliases, network: key, container } => {
            let store = NetworkStore::open(root).map_err(rt)?;
            let net = store.find(&key).map_err(rt)?;
            let r = crate::containers::find(root, &container)?;
            ironpod_pods::lifecycle::set_network(root, &r, Some(&net.name), aliases).map_err(rt)?;
            Ok(0)
        }
        NetworkCommand::Disconnect { network: key, container } => {
            let store = NetworkStore::open(root).map_err(rt)?;
            let net = store.find(&key).map_err(rt)?;
            let r = crate::containers::find(root, &container)?;
            let o: ironpod_pods::spec::RunOptions =
                serde_json::from_str(&r.options).unwrap_or_default();
            if o.network_name() != Some(net.name.as_str()) {
                return Err(rt(format!(
                    "container {} is not connected to network {}",
                    r.name, net.name
                )));
            }
            ironpod_pods::lifecycle::set_network(root, &r, None, Vec::new()).map_err(rt)?;
            Ok(0)
        }
        NetworkCommand::Prune { labels } => {
            let gone = network::prune(root, |n| {
                labels.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => n.labels.get(k).is_some_and(|have| have == v),
                    None => n.labels.contains_key(l),
                })
            })
            .map_err(rt)?;
            for n in gone {
                println!("{}", n.name);
            }
            Ok(0)
        }
        NetworkCommand::Inspect { networks } => {
            let store = NetworkStore::open(root).map_err(rt)?;
            let state = ironpod_state::State::open(root).map_err(rt)?;
            let mut out = Vec::new();
            let mut code = 0;
            for key in networks {
                let n = match store.find(&key) {
                    Ok(n) => n,
                    Err(e) => {
                        eprintln!("ironpod: {e}");
                        code = 1;
                        continue;
                    }
                };
                let mut pods = serde_json::Map::new();
                for l in store.leases(&n.name).map_err(rt)? {
                    let name = state.find(&l.container).map(|r| r.name).unwrap_or_default();
                    pods.insert(
                        l.container.clone(),
                        serde_json::json!({ "Name": name, "IPv4Address": l.address.to_string() }),
                    );
                }
                out.push(serde_json::json!({
                    "Name": n.name,
                    "Id": n.id,
                    "Created": n.created,
                    "Driver": "bridge",
                    "Internal": n.internal,
                    "Options": { "ironpod.allow-private": n.allow_private.to_string() },
                    "IPAM": { "Config": [{ "Subnet": n.subnet, "Gateway": n.gateway }] },
                    "Labels": n.labels,
                    "Namespace": n.namespace(),
                    "Containers": pods,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out).map_err(rt)?);
            Ok(code)
        }
    }
}
