//! `ironpod volume create|ls|rm|inspect`.

use std::path::Path;

use ironpod_state::State;
use ironpod_volumes::VolumeStore;

use crate::Failure;

/// `ironpod volume …`.
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum VolumeCommand {
    /// Creates a named volume (nothing happens if it exists); prints its name.
    Create {
        /// Name ([a-zA-Z0-9][a-zA-Z0-9_.-]+); a random one if not given.
        name: Option<String>,
    },
    /// Lists volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Removes volumes and their data; refused for a volume any container mounts.
    #[command(visible_alias = "remove")]
    Rm {
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Shows volumes as JSON.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

fn rt(e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(e.to_string())
}

/// A random 64-hex-digit volume name (what Docker gives an unnamed volume).
fn random_name() -> Result<String, Failure> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).map_err(rt)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Runs a volume command.
pub fn run(root: &Path, cmd: VolumeCommand) -> Result<i32, Failure> {
    let store = VolumeStore::new(root);
    match cmd {
        VolumeCommand::Create { name } => {
            let name = match name {
                Some(n) => n,
                None => random_name()?,
            };
            println!("{}", store.create(&name).map_err(rt)?.name);
            Ok(0)
        }
        VolumeCommand::Ls { quiet } => {
            let vols = store.list().map_err(rt)?;
            if !quiet {
                println!("{:<10}VOLUME NAME", "DRIVER");
            }
            for v in vols {
                if quiet {
                    println!("{}", v.name);
                } else {
                    println!("{:<10}{}", v.driver, v.name);
                }
            }
            Ok(0)
        }
        VolumeCommand::Rm { volumes } => {
            let records = State::open(root).and_then(|s| s.list()).map_err(rt)?;
            let mut code = 0;
            for v in volumes {
                match store.remove(&v, &ironpod_pods::pod::volume_users(&v, &records)) {
                    Ok(()) => println!("{v}"),
                    Err(e) => {
                        eprintln!("ironpod: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Inspect { volumes } => {
            let mut out = Vec::new();
            let mut code = 0;
            for v in volumes {
                match store.get(&v) {
                    Ok(vol) => out.push(vol),
                    Err(e) => {
                        eprintln!("ironpod: {e}");
                        code = 1;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).map_err(rt)?);
            Ok(code)
        }
    }
}
