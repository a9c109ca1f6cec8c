//! Images a build makes step by step. Each step's image is its parent's plus, for a step
//! that changes files, one layer; every step has a new run configuration and one more
//! history entry (`empty_layer` when it made no layer), as Docker's builder writes them.
//! Step images are kept by the build cache (key → image) until it is pruned, not by names:
//! they are found by digest (`resolve`) but not listed.

use std::path::Path;

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde_json::{json, Value};

use crate::import::validate;
use crate::{Digest, ImageError, ImageName, ImageStore, ImageSummary};
use crate::{MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_MANIFEST};

/// One step's image.
#[derive(Debug, Clone)]
pub struct BuildStep<'a> {
    /// The image it builds on (`None`: `FROM scratch`).
    pub parent: Option<&'a Digest>,
    /// The layer it adds, an uncompressed tar (`None`: it changes only the configuration).
    pub layer: Option<&'a Path>,
    /// The run configuration (the image config's `config` object), whole.
    pub config: Value,
    /// Its time (RFC 3339): the image's `created` and the history entry's.
    pub created: String,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// The image's author (MAINTAINER), if any.
    pub author: Option<String>,
    /// The cache key the image is kept under.
    pub cache_key: &'a str,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt(format!("{what}: {e}"))
}

impl ImageStore {
    /// The whole config of the image with this manifest, as stored (Docker's extensions
    /// such as `Healthcheck`, `OnBuild` and `Shell` included).
    pub fn raw_config(&self, manifest: &Digest) -> Result<Value, ImageError> {
        let m = self.manifest(manifest)?;
        let d = Digest::from_oci(m.config().digest())?;
        serde_json::from_slice(&self.blobs.read(&d)?)
            .map_err(|e| corrupt(&format!("config {d}"), e))
    }

    /// The image id (its config's digest) of the image with this manifest digest.
    pub fn image_id(&self, manifest: &Digest) -> Result<Digest, ImageError> {
        Digest::from_oci(self.manifest(manifest)?.config().digest())
    }

    /// The image the build step with cache key `key` made, if it is still stored.
    pub fn cached_step(&self, key: &str) -> Result<Option<Digest>, ImageError> {
        let Some(m) = self.db.cached(key)? else { return Ok(None) };
        let d = Digest::parse(&m)?;
        Ok(self.manifest(&d).is_ok().then_some(d))
    }

    /// Stores a step's image and keeps it under its cache key; returns its manifest digest.
    pub fn add_step(&self, step: &BuildStep<'_>) -> Result<Digest, ImageError> {
        if let Some(tar) = step.layer {
            validate(tar)?;
        }
        let _l = self.lock(false)?;
        let (mut config, mut manifest) = match step.parent {
            Some(p) => {
                let m = self.manifest(p)?;
                let manifest = serde_json::to_value(&m).map_err(|e| corrupt("manifest", e))?;
                (self.raw_config(p)?, manifest)
            }
            None => (
                json!({
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                }),
                json!({"schemaVersion": 2, "layers": []}),
            ),
        };
        config["created"] = step.created.clone().into();
        config["config"] = step.config.clone();
        if let Some(a) = &step.author {
            config["author"] = a.clone().into();
        }
        let mut entry = json!({ "created": step.created, "created_by": step.created_by });
        if let Some(a) = &step.author {
            entry["author"] = a.clone().into();
        }
        if let Some(tar) = step.layer {
            let (diff_id, blob, size) = self.store_layer(tar)?;
            config["rootfs"]["diff_ids"]
                .as_array_mut()
                .ok_or_else(|| ImageError::Corrupt("parent config has no rootfs.diff_ids".into()))?
                .push(diff_id.to_string().into());
            manifest["layers"]
                .as_array_mut()
                .ok_or_else(|| ImageError::Corrupt("parent manifest has no layers".into()))?
                .push(json!({"mediaType": MEDIA_LAYER_GZIP, "digest": blob.to_string(), "size": size}));
        } else {
            entry["empty_layer"] = true.into();
        }
        match config["history"].as_array_mut() {
            Some(h) => h.push(entry),
            None => config["history"] = json!([entry]),
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|e| corrupt("config", e))?;
        let _: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| corrupt("step config", e))?;
        let config_digest = self.blobs.put(&config_bytes)?;
        manifest["mediaType"] = MEDIA_MANIFEST.into();
        manifest["config"] = json!({"mediaType": MEDIA_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()});
        if let Some(m) = manifest.as_object_mut() {
            m.remove("annotations");
        }
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| corrupt("manifest", e))?;
        let _: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| corrupt("step manifest", e))?;
        let digest = self.blobs.put(&manifest_bytes)?;
        self.db.put_cached(step.cache_key, &digest)?;
        Ok(digest)
    }

    /// Names the image with this manifest digest `name` (a build's `-t`).
    pub fn tag_manifest(&self, manifest: &Digest, name: &str) -> Result<ImageSummary, ImageError> {
        let t = ImageName::parse(name)?;
        if t.digest().is_some() {
            return Err(ImageError::InvalidName(format!("{name}: a tag cannot contain a digest")));
        }
        let _l = self.lock(false)?;
        self.manifest(manifest)?;
        self.db.set_ref(&t.full(), manifest)?;
        let s = self.summary_of(manifest)?;
        self.event("tag", &s.id, &crate::names::familiar(&t.full()));
        Ok(s)
    }

    /// Forgets every build step; deletes what nothing else keeps (named images and what
    /// containers use stay). Returns (steps forgotten, deleted blob digests, bytes freed).
    pub fn prune_build_cache(&self) -> Result<(usize, Vec<String>, u64), ImageError> {
        let _l = self.lock(true)?;
        let n = self.db.clear_cache()?;
        // Sizes of the blobs before they go (what `docker builder prune` reports).
        let before: std::collections::HashMap<String, u64> =
            std::fs::read_dir(self.root.join("blobs/sha256"))
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            Some((
                                format!("sha256:{}", e.file_name().to_str()?),
                                e.metadata().ok()?.len(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
        let deleted = self.gc_locked()?;
        let freed = deleted.iter().filter_map(|d| before.get(d)).sum();
        Ok((n, deleted, freed))
    }
}

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;
