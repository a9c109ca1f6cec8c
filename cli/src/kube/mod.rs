//! `ironpod kube`: a kubectl-shaped front end over the Kubernetes objects of this host
//! (the object store, `ironpod-kube`; the controllers of `ironpod system service` run them).
//! Output columns, messages and exit codes follow kubectl's.

mod apply;
mod describe;
mod get;
mod ops;
mod table;

use std::path::Path;

use ironpod_kube::object::Kind;
use ironpod_kube::{KubeStore, StoreError};

use crate::Failure;

/// `ironpod kube` commands.
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum KubeCommand {
    /// Creates or updates objects from manifests (YAML or JSON; files, directories, -).
    Apply(apply::ApplyArgs),
    /// Deletes objects named in manifests, or by kind and name.
    Delete(apply::DeleteArgs),
    /// Lists objects.
    Get(get::GetArgs),
    /// Shows an object in detail, with its events.
    Describe(describe::DescribeArgs),
    /// Shows a pod container's output.
    Logs(ops::LogsArgs),
    /// Runs a command in a pod's container.
    Exec(ops::ExecArgs),
    /// Sets the replicas of a Deployment, ReplicaSet or ReplicationController.
    Scale(ops::ScaleArgs),
    /// Manages a Deployment's rollout.
    Rollout {
        #[command(subcommand)]
        command: ops::RolloutCommand,
    },
}

use get::selector_text as get_selector_text;

/// Runs a `kube` command.
pub fn run(root: &Path, c: KubeCommand) -> Result<i32, Failure> {
    match c {
        KubeCommand::Apply(a) => apply::apply(root, a),
        KubeCommand::Delete(a) => apply::delete(root, a),
        KubeCommand::Get(a) => get::get(root, a),
        KubeCommand::Describe(a) => describe::describe(root, a),
        KubeCommand::Logs(a) => ops::logs(root, a),
        KubeCommand::Exec(a) => ops::exec(root, a),
        KubeCommand::Scale(a) => ops::scale(root, a),
        KubeCommand::Rollout { command } => ops::rollout(root, command),
    }
}

/// Namespace flags shared by the commands.
#[derive(clap::Args, Debug, Clone)]
pub struct NamespaceArgs {
    /// The namespace (default: `default`, or the manifest's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

impl NamespaceArgs {
    fn get(&self) -> &str {
        self.namespace.as_deref().unwrap_or(ironpod_kube::meta::DEFAULT_NAMESPACE)
    }
}

fn open(root: &Path) -> Result<KubeStore, Failure> {
    KubeStore::open(root).map_err(|e| Failure::Other(e.to_string()))
}

/// kubectl's error lines for store errors.
fn store_err(e: StoreError) -> Failure {
    Failure::Other(match e {
        StoreError::NotFound { .. } => format!("Error from server (NotFound): {e}"),
        StoreError::Exists { .. } => format!("Error from server (AlreadyExists): {e}"),
        StoreError::Conflict(_) => format!("Error from server (Conflict): {e}"),
        StoreError::Invalid(_) => format!("Error from server (Invalid): {e}"),
        e => format!("error: {e}"),
    })
}

/// A kind named on the command line.
fn kind(s: &str) -> Result<Kind, Failure> {
    Kind::parse(s).ok_or_else(|| {
        Failure::Other(format!("error: the server doesn't have a resource type \"{s}\""))
    })
}

/// `KIND/NAME` or `KIND NAME…` arguments as (kind, names).
fn kind_and_names(args: &[String]) -> Result<Vec<(Kind, String)>, Failure> {
    let mut out = Vec::new();
    match args.first() {
        None => Err(Failure::Other("error: you must specify the type of resource".into())),
        Some(first) if first.contains('/') => {
            for a in args {
                let (k, n) = a.split_once('/').ok_or_else(|| {
                    Failure::Other(format!("error: there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kube get resource/<resource_name>' instead of 'kube get resource resource/<resource_name>'): {a}"))
                })?;
                out.push((kind(k)?, n.to_string()));
            }
            Ok(out)
        }
        Some(first) => {
            let k = kind(first)?;
            Ok(args[1..].iter().map(|n| (k, n.clone())).collect())
        }
    }
}

/// Says so on stderr when no controller runs: the objects are stored, nothing runs them.
fn warn_no_controller(root: &Path) {
    if !ironpod_controllers::running(root) {
        eprintln!(
            "warning: no ironpod controller is running for {}: the objects are stored, but no pod \
             will run until one is: start it with `ironpod system service` (or `systemctl start \
             ironpod.socket ironpod.service`)",
            root.display()
        );
    }
}
