//! `kube apply` and `kube delete`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironpod_kube::object::{Kind, Object, KINDS};
use ironpod_kube::selector::LabelSelector;
use ironpod_kube::store::finalized_by_controller;
use ironpod_kube::{parse_manifest, StoreError};

use super::{kind_and_names, open, store_err, warn_no_controller, NamespaceArgs};
use crate::Failure;

/// Arguments of `kube apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// A manifest file, a directory of them (`.yaml`, `.yml`, `.json`), or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Also the manifests in subdirectories.
    #[arg(short = 'R', long)]
    recursive: bool,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// Arguments of `kube delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// With -f: the manifests in subdirectories too.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Every object of the kind (in the namespace).
    #[arg(long)]
    all: bool,
    /// Only the objects with these labels.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// A missing object is no error.
    #[arg(long)]
    ignore_not_found: bool,
    /// Wait until the objects are gone (their pods stopped), as kubectl does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// KIND NAME… or KIND/NAME…
    args: Vec<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

fn manifest_files(arg: &str, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
    let p = Path::new(arg);
    let meta = std::fs::metadata(p)
        .map_err(|e| Failure::Other(format!("error: the path \"{arg}\" does not exist: {e}")))?;
    if !meta.is_dir() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| Failure::Other(format!("error: {arg}: {e}")))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            if recursive {
                manifest_files(&e.to_string_lossy(), true, out)?;
            }
        } else if e
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| ["yaml", "yml", "json"].contains(&x))
        {
            out.push(e);
        }
    }
    Ok(())
}

/// Reads every object of the manifests named, all checked before any is used.
fn read_objects(
    files: &[String],
    recursive: bool,
    ns: &NamespaceArgs,
) -> Result<Vec<Object>, Failure> {
    let mut objects = Vec::new();
    for f in files {
        let texts = if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::Other(format!("error: stdin: {e}")))?;
            vec![(s, "STDIN".to_string())]
        } else {
            let mut paths = Vec::new();
            manifest_files(f, recursive, &mut paths)?;
            let mut texts = Vec::new();
            for p in paths {
                let t = std::fs::read_to_string(&p)
                    .map_err(|e| Failure::Other(format!("error: {}: {e}", p.display())))?;
                texts.push((t, p.display().to_string()));
            }
            texts
        };
        for (t, source) in texts {
            objects.extend(
                parse_manifest(&t, &source).map_err(|e| Failure::Other(format!("error: {e}")))?,
            );
        }
    }
    for o in &mut objects {
        let k = o.kind();
        if !k.namespaced() {
            continue;
        }
        match (&o.metadata.namespace, &ns.namespace) {
            (Some(a), Some(b)) if a != b => {
                return Err(Failure::Other(format!(
                    "error: the namespace from the provided object \"{a}\" does not match the namespace \"{b}\". You must pass '--namespace={a}' to perform this operation."
                )))
            }
            (None, Some(b)) => o.metadata.namespace = Some(b.clone()),
            _ => {}
        }
    }
    // What others refer to first (namespaces, ConfigMaps, Secrets), otherwise in order.
    objects.sort_by_key(|o| KINDS.iter().position(|k| *k == o.kind()));
    Ok(objects)
}

/// `kube apply`.
pub fn apply(root: &Path, a: ApplyArgs) -> Result<i32, Failure> {
    let objects = read_objects(&a.files, a.recursive, &a.ns)?;
    if objects.is_empty() {
        return Err(Failure::Other("error: no objects passed to apply".into()));
    }
    let mut store = open(root)?;
    let mut failed = false;
    for o in objects {
        let reference = o.reference();
        match store.apply(o) {
            Ok((done, _)) => println!("{reference} {}", done.word()),
            Err(e) => {
                eprintln!("{}", store_err(e));
                failed = true;
            }
        }
    }
    warn_no_controller(root);
    Ok(i32::from(failed))
}

/// `kube delete`.
pub fn delete(root: &Path, a: DeleteArgs) -> Result<i32, Failure> {
    let mut store = open(root)?;
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if !a.files.is_empty() {
        if !a.args.is_empty() {
            return Err(Failure::Other("error: give either -f or KIND NAME, not both".into()));
        }
        for o in read_objects(&a.files, a.recursive, &a.ns)? {
            let ns = o.metadata.namespace().to_string();
            targets.push((o.kind(), ns, o.metadata.name.clone()));
        }
    } else if a.all || a.selector.is_some() {
        let [k] = a.args.as_slice() else {
            return Err(Failure::Other("error: with --all or -l, name one kind only".into()));
        };
        let k = super::kind(k)?;
        let sel = a
            .selector
            .as_deref()
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| Failure::Other(format!("error: {e}")))?;
        for o in store.list(k, Some(a.ns.get())).map_err(store_err)? {
            if sel.as_ref().is_none_or(|s| s.matches(&o.object.metadata.labels)) {
                targets.push((k, a.ns.get().to_string(), o.name().to_string()));
            }
        }
        if targets.is_empty() {
            println!("No resources found");
            return Ok(0);
        }
    } else {
        let pairs = kind_and_names(&a.args)?;
        if pairs.is_empty() {
            return Err(Failure::Other(
                "error: resource(s) were provided, but no name was specified".into(),
            ));
        }
        for (k, n) in pairs {
            targets.push((k, a.ns.get().to_string(), n));
        }
    }
    let mut failed = false;
    let mut waiting = Vec::new();
    for (k, ns, name) in targets {
        match store.delete(k, &ns, &name) {
            Ok(old) => {
                println!("{} \"{name}\" deleted", k.singular());
                if finalized_by_controller(k) {
                    waiting.push((k, ns, name, old.uid().to_string()));
                }
            }
            Err(StoreError::NotFound { .. }) if a.ignore_not_found => {}
            Err(e) => {
                eprintln!("{}", store_err(e));
                failed = true;
            }
        }
    }
    if a.wait && !waiting.is_empty() {
        if !ironpod_controllers::running(root) {
            warn_no_controller(root);
        } else {
            for (k, ns, name, uid) in waiting {
                while store.get(k, &ns, &name).map_err(store_err)?.is_some_and(|s| s.uid() == uid) {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    Ok(i32::from(failed))
}
