//! `ironpod`: the docker-shaped command line.
//!
//! Owns: the commands and their flags (clap), and what they print (tables, JSON, exit
//! codes). Everything a pod does is `ironpod-pods` (with `ironpod-net`, `ironpod-volumes`,
//! `ironpod-state`, `ironpod-images` below it); `ironpod system service` is
//! `ironpod-service`. Nothing here is needed by the containerd shim or the service.

mod build;
mod build_tty;
mod containers;
mod copy;
mod events;
mod exec;
mod images;
mod inspect;
mod kube;
mod lifecycle;
mod network;
mod run;
mod system;
mod terminal;
mod vm;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Containers in KVM microVMs.
#[derive(Parser, Debug)]
#[command(name = "ironpod", version, about)]
struct Cli {
    /// State root (images, pods).
    #[arg(long, global = true, env = "IRONPOD_ROOT", default_value = ironpod_images::DEFAULT_ROOT)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

// `defer`: a subcommand's flags are built only when it runs — building every command's
// flags on each start was half of `ironpod --version`'s CPU time. The same on every
// subcommand enum below.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Command {
    /// Runs a command in a new container (its own microVM).
    Run(Box<run::RunArgs>),
    /// Attaches to a running container's input and output.
    Attach {
        /// Container.
        container: String,
    },
    /// Lists containers.
    Ps(containers::PsArgs),
    /// Shows a container's output.
    Logs(containers::LogsArgs),
    /// Runs a command in a running container.
    Exec(exec::ExecArgs),
    /// Stops containers (stop signal, then SIGKILL).
    Stop(lifecycle::StopArgs),
    /// Sends a signal to containers.
    Kill(lifecycle::KillArgs),
    /// Removes containers.
    Rm(lifecycle::RmArgs),
    /// Waits for containers to stop and prints their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Starts containers that were created or have exited (in the background).
    Start {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stops containers and starts them again.
    Restart(lifecycle::StopArgs),
    /// Gives a container another name.
    Rename {
        /// Container.
        container: String,
        /// New name.
        name: String,
    },
    /// Shows what happens to containers, images, networks and volumes.
    Events(events::EventsArgs),
    /// Shows containers as JSON.
    Inspect {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Shows the processes of a container.
    Top {
        /// Container.
        container: String,
    },
    /// Shows containers' resource use.
    Stats(inspect::StatsArgs),
    /// Lists a container's published ports, or the host address of one.
    Port {
        /// Container.
        container: String,
        /// Pod port (PORT[/tcp|udp]).
        port: Option<String>,
    },
    /// Network commands.
    Network {
        #[command(subcommand)]
        command: network::NetworkCommand,
    },
    /// Volume commands.
    Volume {
        #[command(subcommand)]
        command: volume::VolumeCommand,
    },
    /// Creates a new image from a container's changes.
    Commit(inspect::CommitArgs),
    /// Builds an image from a Dockerfile (every RUN step in a microVM of its own).
    Build(Box<build::BuildArgs>),
    /// The build cache.
    Builder {
        #[command(subcommand)]
        command: BuilderCommand,
    },
    /// Copies files between the host and a container.
    Cp(copy::CpArgs),
    /// Lists how a container's files differ from its image.
    Diff {
        /// Container.
        container: String,
    },
    /// The service that serves the Docker Engine API.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Kubernetes objects on this host (kubectl-shaped): apply, get, describe, logs, exec…
    Kube {
        #[command(subcommand)]
        command: kube::KubeCommand,
    },
    /// MicroVM maintenance.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Pulls an image from a registry.
    Pull(images::PullArgs),
    /// Pushes an image to a registry.
    Push(images::PushArgs),
    /// Stores credentials for a registry.
    Login(images::LoginArgs),
    /// Forgets credentials for a registry.
    Logout {
        /// Registry host[:port].
        registry: String,
    },
    /// Creates a one-layer image from a root filesystem tarball (plain or gzip).
    Import(images::ImportArgs),
    /// Lists images.
    Images(images::ImagesArgs),
    /// Image commands.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Adds a name to an image.
    Tag {
        /// Existing image.
        source: String,
        /// New name.
        target: String,
    },
    /// Removes images (names; unreferenced content is deleted).
    Rmi {
        /// Untag images that pods still use (their content stays until the pods are gone).
        #[arg(short, long)]
        force: bool,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Writes images to an OCI layout tar archive (stdout unless -o).
    Save(images::SaveArgs),
    /// Loads images from an OCI layout tar archive (stdin unless -i).
    Load(images::LoadArgs),
    /// Shows how an image was built.
    History {
        /// Image.
        image: String,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum SystemCommand {
    /// Serves the Docker Engine API (1.41) on a unix socket, for the docker CLI and compose.
    Service(system::ServiceArgs),
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum BuilderCommand {
    /// Removes the build cache (what no name and no container keeps).
    Prune {
        /// Do not ask.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum VmCommand {
    /// Boots a VM, waits for the agent, reports, shuts it down.
    Check(vm::CheckArgs),
    /// Pod templates (the snapshots pods start from).
    Template {
        #[command(subcommand)]
        command: vm::TemplateCommand,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum ImageCommand {
    /// Shows manifest, config and names of images as JSON.
    Inspect {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Lists images.
    Ls(images::ImagesArgs),
}

fn main() -> ExitCode {
    ironpod_pods::init_tracing();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            // Docker's exit code for bad flags.
            return ExitCode::from(125);
        }
        Err(e) => e.exit(),
    };
    tracing::debug!("arguments parsed");
    let root = cli.root;
    let is_run = matches!(cli.command, Command::Run(_) | Command::Exec(_));
    let status = match cli.command {
        Command::Run(a) => run::run(&root, *a),
        Command::Attach { container } => run::attach(&root, &container),
        Command::Ps(a) => containers::ps(&root, a),
        Command::Logs(a) => containers::logs_cmd(&root, a),
        Command::Exec(a) => exec::exec(&root, a),
        Command::Stop(a) => lifecycle::stop(&root, a),
        Command::Kill(a) => lifecycle::kill(&root, a),
        Command::Rm(a) => lifecycle::rm(&root, a),
        Command::Wait { containers: c } => lifecycle::wait(&root, &c),
        Command::Inspect { containers: c } => inspect::inspect(&root, &c),
        Command::Rename { container, name } => lifecycle::rename(&root, &container, &name),
        Command::Start { containers } => lifecycle::start(&root, &containers),
        Command::Restart(a) => lifecycle::restart(&root, a),
        Command::Events(a) => events::events(&root, a),
        Command::Top { container } => inspect::top(&root, &container),
        Command::Stats(a) => inspect::stats(&root, a),
        Command::Port { container, port } => inspect::port(&root, &container, port.as_deref()),
        Command::Network { command } => network::run(&root, command),
        Command::Volume { command } => volume::run(&root, command),
        Command::Commit(a) => inspect::commit(&root, a),
        Command::Build(a) => build::build(&root, *a),
        Command::Builder { command: BuilderCommand::Prune { force } } => build::prune(&root, force),
        Command::Diff { container } => inspect::diff(&root, &container),
        Command::Cp(a) => copy::cp(&root, a),
        Command::System { command: SystemCommand::Service(a) } => system::service(&root, a),
        Command::Kube { command } => kube::run(&root, command),
        other => old_command(&root, other).map(|()| 0).map_err(Failure::Other),
    };
    match status {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(Failure::Usage(e)) => {
            eprintln!("ironpod: {}", terminal::printable_lines(&e));
            ExitCode::from(125)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("ironpod: {}", terminal::printable_lines(&e));
            ExitCode::from(if is_run { 125 } else { 1 })
        }
        Err(Failure::Other(e)) => {
            eprintln!("ironpod: {}", terminal::printable_lines(&e));
            ExitCode::FAILURE
        }
    }
}

/// How a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments (exit 125, as Docker).
    Usage(String),
    /// The runtime failed (exit 125 for run/exec, 1 otherwise).
    Runtime(String),
    /// Any other failure (exit 1).
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Runtime(m) | Failure::Other(m) => f.write_str(m),
        }
    }
}

fn old_command(root: &std::path::Path, command: Command) -> Result<(), String> {
    let root = root.to_path_buf();
    match command {
        Command::Vm { command: VmCommand::Check(a) } => vm::check(a),
        Command::Vm { command: VmCommand::Template { command } } => vm::template(&root, command),
        Command::Import(a) => images::import(&root, a),
        Command::Images(a) | Command::Image { command: ImageCommand::Ls(a) } => {
            images::list(&root, a)
        }
        Command::Image { command: ImageCommand::Inspect { images: refs } } => {
            images::inspect(&root, &refs)
        }
        Command::Tag { source, target } => images::tag(&root, &source, &target),
        Command::Rmi { force, images: refs } => images::rmi(&root, &refs, force),
        Command::History { image } => images::history(&root, &image),
        Command::Save(a) => images::save(&root, a),
        Command::Pull(a) => images::pull(&root, a),
        Command::Push(a) => images::push(&root, a),
        Command::Login(a) => images::login(&root, a),
        Command::Logout { registry } => images::logout(&root, &registry),
        Command::Load(a) => images::load(&root, a),
        _ => Err("internal: command not dispatched".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_command_is_well_formed() {
        // Builds the deferred subcommands too.
        Cli::command().debug_assert();
    }

    #[test]
    fn deferred_subcommands_keep_global_flags() {
        let cli = Cli::try_parse_from(["ironpod", "run", "--root", "/x", "--rm", "demo", "true"])
            .expect("parse");
        assert_eq!(cli.root, PathBuf::from("/x"));
        assert!(matches!(cli.command, Command::Run(_)));
        let cli = Cli::try_parse_from(["ironpod", "--root", "/y", "vm", "template", "ls"])
            .expect("parse");
        assert_eq!(cli.root, PathBuf::from("/y"));
        assert!(Cli::try_parse_from(["ironpod", "run", "--no-such-flag", "demo"]).is_err());
    }
}
