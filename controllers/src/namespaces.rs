//! Namespaces: a deleted namespace deletes everything in it, then its pods' network, then
//! itself.

use std::path::Path;

use ironpod_kube::object::{Kind, KINDS};
use ironpod_kube::KubeStore;

use crate::ControllerError;

/// One pass over the namespaces being deleted.
pub fn sync(store: &mut KubeStore, root: &Path) -> Result<(), ControllerError> {
    for ns in store.list(Kind::Namespace, None)? {
        if ns.deleting() {
            crate::each("namespace", ns.name(), || delete_one(store, root, &ns));
        }
    }
    Ok(())
}

fn delete_one(
    store: &mut KubeStore,
    root: &Path,
    ns: &ironpod_kube::Stored,
) -> Result<(), ControllerError> {
    let name = ns.name().to_string();
    let mut left = 0;
    for k in KINDS.into_iter().filter(|k| k.namespaced()) {
        for o in store.list(k, Some(&name))? {
            left += 1;
            if !o.deleting() {
                store.delete(k, &name, o.name())?;
            }
        }
    }
    if left > 0 {
        return Ok(());
    }
    if let Some(net) = ironpod_kubelet::runner::podvm::namespace_network_of(root, &name) {
        match ironpod_net::remove(root, &net) {
            Ok(_) | Err(ironpod_net::NetworkError::NotFound(_)) => {}
            Err(e) => return Err(ControllerError::Other(format!("remove its network: {e}"))),
        }
    }
    store.finalize(Kind::Namespace, "", &name, ns.uid())?;
    Ok(())
}
