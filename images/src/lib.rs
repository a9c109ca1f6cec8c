//! ironpod's image store: immutable, content-addressed blobs (sha256-verified on every write,
//! written to a temporary file, fsynced and renamed into place), references (`name:tag` →
//! manifest digest) in an SQLite database, and the operations on images that need no
//! registry: import a root filesystem tarball, list, inspect, tag, remove with garbage
//! collection, history.
//!
//! Concurrency: several `ironpod` processes may use one store. Writers (import, tag) hold a
//! shared lock on `store.lock` for their whole operation; garbage collection holds it
//! exclusively, so a blob that was just written but not yet referenced is never collected.
//! SQLite serialises the reference updates themselves.

mod archive;
pub mod auth;
mod blobs;
pub mod change;
mod commit;
mod db;
pub use db::{add_column, open_sqlite};
mod error;
mod import;
mod layers;
mod lock;
mod names;
pub mod private;
pub mod progress;
mod registry;
mod steps;
pub mod time;
pub mod unpack;

use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Serialize;

pub use blobs::{free_bytes, BlobStore, Digest};
pub use commit::{CommitInfo, ReceivedLayer};
pub use error::ImageError;
pub use names::{familiar, ImageName};
pub use registry::{check_login, RegistryOptions};
pub use steps::BuildStep;

/// Default state root.
pub const DEFAULT_ROOT: &str = "/var/lib/ironpod";

/// Media type of OCI manifests.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of OCI image configs.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of gzip layers.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One line of `ironpod images`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageSummary {
    /// Names pointing at this image.
    pub names: Vec<String>,
    /// Image id: the config digest.
    pub id: String,
    /// Manifest digest.
    pub manifest: String,
    /// Creation time (RFC 3339) from the config.
    pub created: String,
    /// Sum of compressed layer sizes.
    pub size: u64,
}

/// Everything `ironpod image inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDetails {
    /// Summary.
    #[serde(flatten)]
    pub summary: ImageSummary,
    /// The manifest.
    pub manifest_json: ImageManifest,
    /// The config, whole (Docker's extensions such as `Healthcheck`, `OnBuild` and `Shell`
    /// included).
    pub config: serde_json::Value,
}

/// The image store under a state root.
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    db: db::Db,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        private::private_dir(root).map_err(|e| ImageError::io(root, e))?;
        let blobs = BlobStore::open(root)?;
        let db = db::Db::open(&root.join("images.db"))?;
        Ok(ImageStore { root: root.to_path_buf(), blobs, db })
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn lock(&self, exclusive: bool) -> Result<lock::StoreLock, ImageError> {
        lock::StoreLock::acquire(&self.root.join("store.lock"), exclusive)
    }

    /// Imports a root filesystem tarball (plain or gzip) as a one-layer image named `name`.
    pub fn import(&self, tarball: &Path, name: &str) -> Result<ImageSummary, ImageError> {
        self.import_with(tarball, name, &[])
    }

    /// Like [`ImageStore::import`], with Dockerfile instructions (`CMD […]`, `ENV K=V`, …)
    /// applied to the image's configuration, as `docker import --change`.
    pub fn import_with(
        &self,
        tarball: &Path,
        name: &str,
        changes: &[String],
    ) -> Result<ImageSummary, ImageError> {
        let name = ImageName::parse(name)?;
        let _l = self.lock(false)?;
        let manifest = import::import(&self.blobs, tarball, &name, changes)?;
        self.db.set_ref(&name.full(), &manifest)?;
        let s = self.summary_of(&manifest)?;
        self.event("import", &s.id, &names::familiar(&name.full()));
        Ok(s)
    }

    fn manifest(&self, digest: &Digest) -> Result<ImageManifest, ImageError> {
        let bytes = self.blobs.read(digest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("manifest {digest}: {e}")))
    }

    fn config(&self, m: &ImageManifest) -> Result<(Digest, ImageConfiguration), ImageError> {
        let d = Digest::from_oci(m.config().digest())?;
        let bytes = self.blobs.read(&d)?;
        let c = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("config {d}: {e}")))?;
        Ok((d, c))
    }

    fn summary_of(&self, manifest: &Digest) -> Result<ImageSummary, ImageError> {
        let m = self.manifest(manifest)?;
        let (cd, c) = self.config(&m)?;
        let mut names: Vec<String> =
            self.db.names_for(manifest)?.iter().map(|n| names::familiar(n)).collect();
        names.sort();
        Ok(ImageSummary {
            names,
            id: cd.to_string(),
            manifest: manifest.to_string(),
            created: c.created().clone().unwrap_or_default(),
            size: m.layers().iter().map(|l| l.size()).sum(),
        })
    }

    /// Resolves a reference (name, name:tag, or an image/manifest id prefix) to a manifest.
    pub fn resolve(&self, reference: &str) -> Result<Digest, ImageError> {
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            let mut found = Vec::new();
            // A whole manifest digest (what pods and builds pass) needs no blob read.
            if hex.len() == 64 {
                let whole = format!("sha256:{hex}");
                let named = self.db.all_refs()?.into_iter().map(|(_, m)| m);
                if named.chain(self.db.cached_manifests()?).any(|m| m == whole) {
                    return Digest::parse(&whole);
                }
            }
            let named = self.db.all_refs()?.into_iter().map(|(_, m)| m);
            // Images of build steps are found by their digests too (as Docker's
            // intermediate images are), though no name shows them.
            for m in named.chain(self.db.cached_manifests()?) {
                let manifest = Digest::parse(&m)?;
                let Ok(id) = self.manifest(&manifest).and_then(|m| self.config(&m)) else {
                    continue;
                };
                let id = id.0;
                let matches = manifest.hex().starts_with(hex) || id.hex().starts_with(hex);
                if matches && !found.contains(&manifest) {
                    found.push(manifest);
                }
            }
            match found.len() {
                1 => return Ok(found.remove(0)),
                n if n > 1 => return Err(ImageError::Ambiguous(reference.into())),
                _ => {}
            }
        }
        let name =
            ImageName::parse(reference).map_err(|_| ImageError::NotFound(reference.into()))?;
        match self.db.get_ref(&name.full())? {
            Some(d) => Digest::parse(&d),
            None => Err(ImageError::NotFound(reference.into())),
        }
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let mut manifests: Vec<String> = self.db.all_refs()?.into_iter().map(|(_, m)| m).collect();
        manifests.sort();
        manifests.dedup();
        let mut out = Vec::new();
        for m in manifests {
            out.push(self.summary_of(&Digest::parse(&m)?)?);
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.names.cmp(&b.names)));
        Ok(out)
    }

    /// Manifest, config and summary of one image.
    pub fn inspect(&self, reference: &str) -> Result<ImageDetails, ImageError> {
        let d = self.resolve(reference)?;
        let m = self.manifest(&d)?;
        let config = self.raw_config(&d)?;
        Ok(ImageDetails { summary: self.summary_of(&d)?, manifest_json: m, config })
    }

    /// The config of the image with this manifest digest (named or only leased).
    pub fn config_of(&self, manifest: &Digest) -> Result<ImageConfiguration, ImageError> {
        Ok(self.config(&self.manifest(manifest)?)?.1)
    }

    /// The image's `config.Healthcheck` (a Docker extension of the OCI config, which
    /// [`ImageConfiguration`] does not keep), if it has one.
    pub fn healthcheck_of(
        &self,
        manifest: &Digest,
    ) -> Result<Option<serde_json::Value>, ImageError> {
        let m = self.manifest(manifest)?;
        let d = Digest::from_oci(m.config().digest())?;
        let raw: serde_json::Value = serde_json::from_slice(&self.blobs.read(&d)?)
            .map_err(|e| ImageError::Corrupt(format!("config {d}: {e}")))?;
        Ok(Some(raw["config"]["Healthcheck"].clone()).filter(|h| h.is_object()))
    }

    /// Adds the name `target` for the image `source`.
    pub fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let _l = self.lock(false)?;
        let d = self.resolve(source)?;
        let t = ImageName::parse(target)?;
        if t.digest().is_some() {
            return Err(ImageError::InvalidName(format!(
                "{target}: a tag cannot contain a digest"
            )));
        }
        self.db.set_ref(&t.full(), &d)?;
        let id = self.summary_of(&d).map(|s| s.id).unwrap_or_else(|_| d.to_string());
        self.event("tag", &id, &names::familiar(&t.full()));
        Ok(())
    }

    /// Logs an image event (`id`: the image id or reference; `name`: a familiar name).
    pub(crate) fn event(&self, action: &str, id: &str, name: &str) {
        let e = ironpod_events::Event::now("image", action, id).with("name", name);
        let _ = ironpod_events::record(&self.root, &e);
    }

    /// Removes a name (or, given an id, every name of that image); blobs no longer reachable
    /// from any name or lease are deleted. An image in use (leased) is only untagged when
    /// `force` is set, and its content stays until the last lease is released.
    /// Returns (untagged names, deleted blob digests).
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
    ) -> Result<(Vec<String>, Vec<String>), ImageError> {
        let _l = self.lock(true)?;
        let d = self.resolve(reference)?;
        let by_name = ImageName::parse(reference).ok().and_then(|n| {
            self.db
                .get_ref(&n.full())
                .ok()
                .flatten()
                .filter(|m| *m == d.to_string())
                .map(|_| n.full())
        });
        let untag = match by_name {
            Some(n) => vec![n],
            None => self.db.names_for(&d)?,
        };
        let holders = self.db.lease_holders(&d)?;
        let last_name = untag.len() >= self.db.names_for(&d)?.len();
        if !holders.is_empty() && last_name && !force {
            return Err(ImageError::InUse {
                image: reference.to_string(),
                holders: holders.join(", "),
            });
        }
        let id = self.summary_of(&d).map(|s| s.id).unwrap_or_else(|_| d.to_string());
        for n in &untag {
            self.db.delete_ref(n)?;
            self.event("untag", &id, &names::familiar(n));
        }
        let deleted = self.gc_locked()?;
        if deleted.iter().any(|x| *x == d.to_string()) {
            self.event(
                "delete",
                &id,
                &untag.first().map(|n| names::familiar(n)).unwrap_or_default(),
            );
        }
        Ok((untag.iter().map(|n| names::familiar(n)).collect(), deleted))
    }

    /// Marks an image as used by `holder` (a pod): its content is kept, even if every name
    /// is removed, until [`ImageStore::release`]. Returns the manifest digest.
    pub fn lease(&self, holder: &str, reference: &str) -> Result<Digest, ImageError> {
        let _l = self.lock(false)?;
        let d = self.resolve(reference)?;
        self.db.add_lease(holder, &d)?;
        Ok(d)
    }

    /// Ends every lease of `holder`; content nothing else reaches goes at the next GC.
    pub fn release(&self, holder: &str) -> Result<usize, ImageError> {
        let _l = self.lock(false)?;
        self.db.remove_leases(holder)
    }

    /// The config's history entries, newest first.
    pub fn history(&self, reference: &str) -> Result<Vec<oci_spec::image::History>, ImageError> {
        let d = self.resolve(reference)?;
        let (_, c) = self.config(&self.manifest(&d)?)?;
        let mut h = c.history().clone().unwrap_or_default();
        h.reverse();
        Ok(h)
    }

    /// Deletes every blob no name reaches, and stale temporary files.
    pub fn gc(&self) -> Result<Vec<String>, ImageError> {
        let _l = self.lock(true)?;
        self.gc_locked()
    }

    fn gc_locked(&self) -> Result<Vec<String>, ImageError> {
        let mut live = std::collections::HashSet::new();
        let named = self.db.all_refs()?.into_iter().map(|(_, m)| m);
        let cached = self.db.cached_manifests()?;
        for m in named.chain(self.db.leased()?).chain(cached) {
            let md = Digest::parse(&m)?;
            live.insert(md.to_string());
            if let Ok(man) = self.manifest(&md) {
                live.insert(man.config().digest().to_string());
                for l in man.layers() {
                    live.insert(l.digest().to_string());
                }
            }
        }
        let deleted = self.blobs.sweep(|d| live.contains(&d.to_string()))?;
        // Layer disks of deleted layers go too.
        for d in &deleted {
            let hex = d.trim_start_matches("sha256:");
            let layers = self.root.join("layers");
            let _ = std::fs::remove_file(layers.join(format!("{hex}.erofs")));
            let _ = std::fs::remove_file(layers.join(format!("{hex}.lock")));
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
