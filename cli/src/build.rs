//! `ironpod build`: a Dockerfile built into an image, every RUN step in a microVM of its
//! own (`ironpod-build`). Output and exit codes as `docker build`'s classic builder.

use std::path::{Path, PathBuf};

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use indicatif::ProgressDrawTarget;
use ironpod_build::builder::{self, BuildOptions, Pull};

use crate::build_tty::TtyView;
use crate::Failure;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// Step lines and the steps' output, as they come.
    Plain,
    /// A live view on the terminal: a line per step with its time, the running step's
    /// last output lines, a failed step's output kept.
    Tty,
    /// `tty` when standard output is a terminal (and not `-q`), else `plain`.
    Auto,
}

/// `ironpod build` flags.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (NAME[:TAG]); may be given more than once.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// A build argument (K=V, or K to take its value from the environment).
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// The stage to build (and the ones it needs).
    #[arg(long)]
    target: Option<String>,
    /// Make every step again (the new steps are cached all the same).
    #[arg(long)]
    no_cache: bool,
    /// Pull the base images even when they are here.
    #[arg(long)]
    pull: bool,
    /// A label on the image (K=V).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The network RUN steps use: `none`, or a network's name (default: the default one).
    #[arg(long)]
    network: Option<String>,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    progress: Progress,
    /// Only print the image id.
    #[arg(short, long)]
    quiet: bool,
    /// Every time in the image and its new layers no later than this (seconds since the
    /// epoch; default: $SOURCE_DATE_EPOCH when set), for images that are the same bytes
    /// on every rebuild.
    #[arg(long)]
    timestamp: Option<u64>,
    /// The build context: a directory.
    context: PathBuf,
}

fn labels(v: &[String]) -> Result<Vec<(String, String)>, String> {
    v.iter()
        .map(|l| match l.split_once('=') {
            Some(("", _)) => Err(format!("invalid label {l:?}: the key is empty")),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Ok((l.clone(), String::new())),
        })
        .collect()
}

/// `ironpod build`.
pub fn build(root: &Path, a: BuildArgs) -> Result<i32, Failure> {
    let usage = Failure::Usage;
    if a.context.to_string_lossy().contains("://") || a.context == Path::new("-") {
        return Err(usage(format!(
            "{}: the context must be a directory here (URLs and standard input are not read)",
            a.context.display()
        )));
    }
    let timestamp = match a.timestamp {
        Some(t) => Some(t),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => Some(v.parse::<u64>().map_err(|_| {
                usage(format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))
            })?),
            _ => None,
        },
    };
    let network =
        match a.network.as_deref() {
            None | Some("default") | Some("bridge") => None,
            Some("host") => return Err(usage(
                "--network=host: RUN steps run in microVMs; use default, none or a network's name"
                    .into(),
            )),
            Some(n) => Some(n.to_string()),
        };
    let opts = BuildOptions {
        context: a.context.clone(),
        // Docker's `-f` is relative to the current directory.
        dockerfile: match &a.file {
            Some(f) => {
                Some(std::path::absolute(f).map_err(|e| usage(format!("{}: {e}", f.display())))?)
            }
            None => None,
        },
        tags: a.tags.clone(),
        build_args: builder::parse_build_args(&a.build_args).map_err(usage)?,
        target: a.target.clone(),
        no_cache: a.no_cache,
        pull: if a.pull { Pull::Always } else { Pull::Missing },
        labels: labels(&a.labels).map_err(usage)?,
        network,
        timestamp,
        quiet: a.quiet,
    };
    for t in &opts.tags {
        ironpod_images::ImageName::parse(t)
            .map_err(|e| usage(format!("invalid tag {t:?}: {e}")))?;
    }
    let terminal = std::io::stdout().is_terminal();
    let tty = match a.progress {
        Progress::Tty if !terminal => {
            return Err(usage("--progress tty: standard output is not a terminal".into()))
        }
        Progress::Tty => true,
        Progress::Auto => terminal && !a.quiet,
        Progress::Plain => false,
    };
    let built = if tty {
        let mut view = TtyView::new(ProgressDrawTarget::stdout(), Box::new(std::io::stdout()));
        let built = builder::build(root, opts, &mut view);
        view.finish(built.is_err());
        built
    } else {
        builder::build(root, opts, &mut std::io::stdout())
    };
    match built {
        Ok(_) => Ok(0),
        Err(e) => Err(Failure::Other(e.to_string())),
    }
}

/// `ironpod builder prune [-f]`: forgets every build step's image; what no name and no
/// container keeps is deleted.
pub fn prune(root: &Path, force: bool) -> Result<i32, Failure> {
    if !force {
        eprint!(
            "WARNING! This will remove all build cache. Are you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let store =
        ironpod_images::ImageStore::open(root).map_err(|e| Failure::Other(e.to_string()))?;
    let (steps, deleted, freed) =
        store.prune_build_cache().map_err(|e| Failure::Other(e.to_string()))?;
    if !deleted.is_empty() {
        println!("Deleted build cache objects:");
        for d in &deleted {
            println!("{d}");
        }
    }
    println!("Total reclaimed space: {} ({steps} steps forgotten)", crate::images::human(freed));
    Ok(0)
}
