//! `ironpod`: the command-line front end.

mod images;
mod vm;

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

#[derive(Subcommand, Debug)]
enum Command {
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
enum VmCommand {
    /// Boots a VM, waits for the agent, reports, shuts it down.
    Check(vm::CheckArgs),
}

#[derive(Subcommand, Debug)]
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
    tracing_subscriber::fmt()
        .with_env_filter(
            // Libraries stay quiet unless RUST_LOG asks: errors reach the user as one line.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let root = cli.root;
    let result = match cli.command {
        Command::Vm { command: VmCommand::Check(a) } => vm::check(a),
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironpod: {e}");
            ExitCode::FAILURE
        }
    }
}
