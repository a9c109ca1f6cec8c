//! `kube logs`, `kube exec`, `kube scale` and `kube rollout`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ironpod_controllers::deployments::{revision, HASH_LABEL};
use ironpod_kube::object::{Body, Kind};
use ironpod_kube::workload::DeploymentStatus;
use ironpod_kube::{KubeStore, Stored};
use ironpod_kubelet::paths;
use ironpod_pods::logs;

use super::{kind_and_names, open, store_err, NamespaceArgs};
use crate::Failure;

/// Arguments of `kube logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Keep printing output as it comes.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The container (default: the first).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// The container's previous run.
    #[arg(short = 'p', long)]
    previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Each line with its time.
    #[arg(long)]
    timestamps: bool,
    /// POD or pod/POD.
    pod: String,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// Arguments of `kube exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Pass stdin to the process.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// The container (default: the first).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// POD or pod/POD.
    pod: String,
    /// -- COMMAND [ARGS…]
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// Arguments of `kube scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// The new number of replicas.
    #[arg(long, required = true)]
    replicas: i64,
    /// KIND/NAME or KIND NAME.
    #[arg(required = true)]
    args: Vec<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// `kube rollout` commands.
#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Waits until the Deployment's rollout has finished.
    Status(RolloutArgs),
    /// Rolls the Deployment back to its previous revision (or --to-revision).
    Undo(RolloutArgs),
    /// Lists the Deployment's revisions.
    History(RolloutArgs),
}

/// Arguments of `kube rollout`.
#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    /// deployment/NAME (or deployment NAME).
    #[arg(required = true)]
    args: Vec<String>,
    /// With undo: the revision to go back to.
    #[arg(long)]
    to_revision: Option<i64>,
    /// With status: give up after this many seconds (0: wait as long as it takes).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    #[command(flatten)]
    ns: NamespaceArgs,
}

fn pod_name(s: &str) -> Result<&str, Failure> {
    match s.split_once('/') {
        Some((k, n)) if Kind::parse(k) == Some(Kind::Pod) => Ok(n),
        Some((k, _)) => {
            Err(Failure::Other(format!("error: {k} is not a pod: give POD or pod/POD")))
        }
        None => Ok(s),
    }
}

fn find_pod(store: &KubeStore, ns: &str, name: &str) -> Result<Stored, Failure> {
    store.get(Kind::Pod, ns, name).map_err(store_err)?.ok_or_else(|| {
        Failure::Other(format!("Error from server (NotFound): pods \"{name}\" not found"))
    })
}

/// The container a command names, or the pod's first (said on stderr when there are more).
fn container_of(pod: &Stored, c: Option<&str>) -> Result<String, Failure> {
    let Body::Pod(spec) = &pod.object.body else { return Err(Failure::Other("not a pod".into())) };
    let all: Vec<&str> =
        spec.init_containers.iter().chain(&spec.containers).map(|c| c.name.as_str()).collect();
    match c {
        Some(c) if all.contains(&c) => Ok(c.to_string()),
        Some(c) => {
            Err(Failure::Other(format!("error: container {c} is not valid for pod {}", pod.name())))
        }
        None => {
            let first = spec.containers[0].name.clone();
            if spec.containers.len() > 1 {
                let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
                eprintln!("Defaulted container \"{first}\" out of: {}", names.join(", "));
            }
            Ok(first)
        }
    }
}

fn print_entries(data: &[u8], timestamps: bool) {
    let mut out = std::io::stdout().lock();
    for e in logs::read_entries(data).unwrap_or_default() {
        if timestamps {
            let _ = out.write_all(format!("{} ", e.time).as_bytes());
        }
        let _ = out.write_all(&e.output());
    }
    let _ = out.flush();
}

/// `kube logs`.
pub fn logs(root: &Path, a: LogsArgs) -> Result<i32, Failure> {
    let store = open(root)?;
    let pod = find_pod(&store, a.ns.get(), pod_name(&a.pod)?)?;
    let c = container_of(&pod, a.container.as_deref())?;
    let runs = paths::log_runs(root, pod.uid(), &c);
    let run = match (a.previous, runs.as_slice()) {
        (false, [.., last]) => *last,
        (true, [.., prev, _]) => *prev,
        (true, _) => {
            return Err(Failure::Other(format!(
                "Error from server (BadRequest): previous terminated container \"{c}\" in pod \"{}\" not found",
                pod.name()
            )))
        }
        (false, []) => {
            return Err(Failure::Other(format!(
                "Error from server (BadRequest): container \"{c}\" in pod \"{}\" is waiting to start: ContainerCreating",
                pod.name()
            )))
        }
    };
    let path = paths::log_path(root, pod.uid(), &c, run);
    let (data, mut follower) =
        logs::Follower::read_all(&path).map_err(|e| Failure::Other(format!("error: {e}")))?;
    let entries = logs::read_entries(&data[..]).unwrap_or_default();
    let shown = match a.tail {
        Some(n) => logs::tail(&entries, n),
        None => &entries[..],
    };
    let mut out = std::io::stdout().lock();
    for e in shown {
        if a.timestamps {
            let _ = out.write_all(format!("{} ", e.time).as_bytes());
        }
        let _ = out.write_all(&e.output());
    }
    let _ = out.flush();
    drop(out);
    if !a.follow || a.previous {
        return Ok(0);
    }
    // Until this run has ended: a newer run, the pod gone, or the container stopped.
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let more = follower.poll().unwrap_or_default();
        print_entries(&more, a.timestamps);
        let now = store.get(Kind::Pod, pod.namespace(), pod.name()).ok().flatten();
        let Some(now) = now.filter(|p| p.uid() == pod.uid()) else { break };
        let st: ironpod_kube::pod::PodStatus = now.status_as();
        let cs =
            st.init_container_statuses.iter().chain(&st.container_statuses).find(|s| s.name == c);
        let still = cs.is_some_and(|s| s.restart_count == run && s.state.running.is_some());
        if !still {
            print_entries(&follower.poll().unwrap_or_default(), a.timestamps);
            break;
        }
    }
    Ok(0)
}

/// `kube exec`.
pub fn exec(root: &Path, a: ExecArgs) -> Result<i32, Failure> {
    let store = open(root)?;
    let pod = find_pod(&store, a.ns.get(), pod_name(&a.pod)?)?;
    let c = container_of(&pod, a.container.as_deref())?;
    let info = paths::read_info(root, pod.uid());
    let run = info.as_ref().and_then(|i| Some((i.vsock.clone()?, i.containers.get(&c)?.clone())));
    let Some((uds, run)) = run else {
        return Err(Failure::Other(format!(
            "error: unable to upgrade connection: container not found (\"{c}\")"
        )));
    };
    let mut ctl = ironpod_pods::agent_client::AgentClient::open(&uds, Duration::from_secs(30))
        .map_err(|e| Failure::Other(format!("error: {e}")))?;
    // The container's variables, as its process has them in the guest (never on the host).
    let environ = ctl
        .read_file_upto(&format!("/proc/{}/environ", run.pid), 1 << 20)
        .map_err(|e| Failure::Other(format!("error: the container's environment: {e}")))?;
    let env: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let mut process = run.process.clone();
    process.set_env(Some(env));
    process.set_args(Some(a.command.clone()));
    process.set_terminal(Some(a.tty));
    let io = crate::exec::ExecIo { interactive: a.stdin, tty: a.tty, detach: false, user: None };
    let code = crate::exec::run_process(&mut ctl, &uds, &run.id, process, &io)?;
    if code != 0 {
        eprintln!("command terminated with exit code {code}");
    }
    Ok(code)
}

/// `kube scale`.
pub fn scale(root: &Path, a: ScaleArgs) -> Result<i32, Failure> {
    if a.replicas < 0 {
        return Err(Failure::Other("error: The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0".into()));
    }
    let mut store = open(root)?;
    for (k, n) in kind_and_names(&a.args)? {
        let cur = store.get(k, a.ns.get(), &n).map_err(store_err)?.ok_or_else(|| {
            Failure::Other(format!(
                "Error from server (NotFound): {} \"{n}\" not found",
                k.plural()
            ))
        })?;
        let mut o = cur.object.clone();
        match &mut o.body {
            Body::Deployment(d) => d.replicas = Some(a.replicas),
            Body::ReplicaSet(r) => r.replicas = Some(a.replicas),
            Body::ReplicationController(r) => r.replicas = Some(a.replicas),
            _ => return Err(Failure::Other(format!("error: cannot scale a {}", k.singular()))),
        }
        store.update(o, &cur).map_err(store_err)?;
        println!("{} scaled", cur.object.reference());
    }
    super::warn_no_controller(root);
    Ok(0)
}

fn deployment(store: &KubeStore, a: &RolloutArgs) -> Result<Stored, Failure> {
    let pairs = kind_and_names(&a.args)?;
    let [(k, n)] = pairs.as_slice() else {
        return Err(Failure::Other("error: name one deployment".into()));
    };
    if *k != Kind::Deployment {
        return Err(Failure::Other(format!("error: no rollout for a {}", k.singular())));
    }
    store.get(*k, a.ns.get(), n).map_err(store_err)?.ok_or_else(|| {
        Failure::Other(format!("Error from server (NotFound): deployments.apps \"{n}\" not found"))
    })
}

fn replica_sets_of(store: &KubeStore, d: &Stored) -> Result<Vec<Stored>, Failure> {
    let mut v: Vec<Stored> = store
        .list(Kind::ReplicaSet, Some(d.namespace()))
        .map_err(store_err)?
        .into_iter()
        .filter(|r| r.object.metadata.controller_uid() == Some(d.uid()))
        .collect();
    v.sort_by_key(revision);
    Ok(v)
}

/// `kube rollout`.
pub fn rollout(root: &Path, c: RolloutCommand) -> Result<i32, Failure> {
    let mut store = open(root)?;
    match c {
        RolloutCommand::Status(a) => {
            let started = std::time::Instant::now();
            let mut last = String::new();
            loop {
                let d = deployment(&store, &a)?;
                let Body::Deployment(spec) = &d.object.body else { unreachable!() };
                let st: DeploymentStatus = d.status_as();
                let want = spec.replicas.unwrap_or(1);
                let name = d.name();
                let msg = if st.observed_generation < d.object.metadata.generation.unwrap_or(0) {
                    "Waiting for deployment spec update to be observed...".to_string()
                } else if st.updated_replicas < want {
                    format!("Waiting for deployment \"{name}\" rollout to finish: {} out of {want} new replicas have been updated...", st.updated_replicas)
                } else if st.replicas > st.updated_replicas {
                    format!("Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...", st.replicas - st.updated_replicas)
                } else if st.available_replicas < st.updated_replicas {
                    format!("Waiting for deployment \"{name}\" rollout to finish: {} of {} updated replicas are available...", st.available_replicas, st.updated_replicas)
                } else {
                    println!("deployment \"{name}\" successfully rolled out");
                    return Ok(0);
                };
                if msg != last {
                    println!("{msg}");
                    last = msg;
                }
                if a.timeout > 0 && started.elapsed() > Duration::from_secs(a.timeout) {
                    return Err(Failure::Other(
                        "error: timed out waiting for the condition".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        RolloutCommand::History(a) => {
            let d = deployment(&store, &a)?;
            println!("{}", d.object.reference());
            println!("REVISION  CHANGE-CAUSE");
            for r in replica_sets_of(&store, &d)? {
                let cause = r
                    .object
                    .metadata
                    .annotations
                    .get("kubernetes.io/change-cause")
                    .cloned()
                    .unwrap_or_else(|| "<none>".into());
                println!("{:<10}{cause}", revision(&r));
            }
            Ok(0)
        }
        RolloutCommand::Undo(a) => {
            let d = deployment(&store, &a)?;
            let rss = replica_sets_of(&store, &d)?;
            let current = rss.last().map(revision).unwrap_or(0);
            let target = match a.to_revision {
                Some(r) => rss.iter().find(|s| revision(s) == r).ok_or_else(|| {
                    Failure::Other(format!(
                        "error: unable to find specified revision {r} in history"
                    ))
                })?,
                None => rss.iter().rev().find(|s| revision(s) < current).ok_or_else(|| {
                    Failure::Other("error: no rollout history found for deployment".into())
                })?,
            };
            let Body::ReplicaSet(rs) = &target.object.body else { unreachable!() };
            let mut template = rs.template.clone();
            template.metadata.labels.remove(HASH_LABEL);
            let mut o = d.object.clone();
            if let Body::Deployment(spec) = &mut o.body {
                if spec.template == template {
                    println!(
                        "{} skipped rollback (current template already matches revision {})",
                        d.object.reference(),
                        revision(target)
                    );
                    return Ok(0);
                }
                spec.template = template;
            }
            store.update(o, &d).map_err(store_err)?;
            println!("{} rolled back", d.object.reference());
            super::warn_no_controller(root);
            Ok(0)
        }
    }
}
