//! `commit`: a container's changes (an uncompressed OCI layer tar that came from the guest)
//! become a new image: the base image's layers plus this one, with an updated config.

use std::fs::{self, File};
use std::io::{self, Read, Write};

use flate2::write::GzEncoder;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use sha2::{Digest as _, Sha256};

use crate::blobs::HashingWriter;
use crate::import::validate;
use crate::{
    time, Digest, ImageError, ImageName, ImageStore, ImageSummary, MEDIA_CONFIG, MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
};

/// What a commit records besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitInfo {
    /// History comment (`-m`).
    pub comment: Option<String>,
    /// Author (`-a`).
    pub author: Option<String>,
    /// The command that made the changes, for the history's `created_by`.
    pub created_by: String,
    /// Config fields taken from the container (Docker's commit keeps the container's
    /// configuration): `Env`, `Cmd`, `Entrypoint`, `WorkingDir`, `User`, when set.
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// How long a layer may take to arrive: a floor, plus one second per MiB announced (a
/// guest that trickles its layer is cut off; the store is not locked meanwhile).
fn stream_deadline(size: u64) -> std::time::Duration {
    std::time::Duration::from_secs(300 + size / (1 << 20))
}

/// Whether `s` is a sha256 digest in lowercase hex (what the agent must announce).
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ImageStore {
    /// Reads a layer tar from `layer` (which must be `size` bytes with sha256 `sha256_hex`,
    /// as the agent announced, and no more than `max_size`), checks it, and stores the image
    /// `base` + this layer as `name`.
    ///
    /// Everything the guest announced is checked before use: the digest's form before it
    /// names anything, the size against `max_size` and the free space of the store. The layer
    /// is received and checked into the store's scratch directory before the store is
    /// locked, within a deadline, so a guest that stalls holds up nothing but its commit.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        base: &Digest,
        mut layer: impl Read,
        size: u64,
        sha256_hex: &str,
        max_size: u64,
        name: &str,
        info: &CommitInfo,
    ) -> Result<ImageSummary, ImageError> {
        let name = ImageName::parse(name)?;
        if name.digest().is_some() {
            return Err(ImageError::InvalidName(format!(
                "{}: a commit target cannot contain a digest",
                name.full()
            )));
        }
        let tmp_dir = self.root.join("tmp");
        let received = self.receive_layer(&mut layer, size, sha256_hex, max_size, &tmp_dir)?;
        let result = (|| {
            // Only now, the store.
            let _l = self.lock(false)?;
            let (diff_id, layer_digest, layer_size) = self.store_layer(received.path())?;
            // 4. Config and manifest.
            let base_manifest = self.manifest(base)?;
            let (_, base_config) = self.config(&base_manifest)?;
            let mut config = serde_json::to_value(&base_config)
                .map_err(|e| ImageError::Corrupt(e.to_string()))?;
            let created = time::now_rfc3339();
            config["created"] = created.clone().into();
            if let Some(a) = &info.author {
                config["author"] = a.clone().into();
            }
            if !config["config"].is_object() {
                config["config"] = serde_json::json!({});
            }
            for (k, v) in &info.config {
                config["config"][k] = v.clone();
            }
            let diff_ids = config["rootfs"]["diff_ids"]
                .as_array_mut()
                .ok_or_else(|| ImageError::Corrupt("base config has no rootfs.diff_ids".into()))?;
            diff_ids.push(diff_id.to_string().into());
            let mut entry =
                serde_json::json!({ "created": created, "created_by": info.created_by });
            if let Some(c) = &info.comment {
                entry["comment"] = c.clone().into();
            }
            if let Some(a) = &info.author {
                entry["author"] = a.clone().into();
            }
            match config["history"].as_array_mut() {
                Some(h) => h.push(entry),
                None => config["history"] = serde_json::json!([entry]),
            }
            let config_bytes =
                serde_json::to_vec(&config).map_err(|e| ImageError::Corrupt(e.to_string()))?;
            let _: ImageConfiguration = serde_json::from_slice(&config_bytes)
                .map_err(|e| ImageError::Corrupt(format!("committed config: {e}")))?;
            let config_digest = self.blobs.put(&config_bytes)?;
            let mut manifest = serde_json::to_value(&base_manifest)
                .map_err(|e| ImageError::Corrupt(e.to_string()))?;
            manifest["mediaType"] = MEDIA_MANIFEST.into();
            manifest["config"] = serde_json::json!({ "mediaType": MEDIA_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len() });
            let layers = manifest["layers"]
                .as_array_mut()
                .ok_or_else(|| ImageError::Corrupt("base manifest has no layers".into()))?;
            layers.push(serde_json::json!({ "mediaType": MEDIA_LAYER_GZIP, "digest": layer_digest.to_string(), "size": layer_size }));
            if let Some(m) = manifest.as_object_mut() {
                m.remove("annotations");
            }
            let manifest_bytes =
                serde_json::to_vec(&manifest).map_err(|e| ImageError::Corrupt(e.to_string()))?;
            let _: ImageManifest = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| ImageError::Corrupt(format!("committed manifest: {e}")))?;
            let digest = self.blobs.put(&manifest_bytes)?;
            self.db.set_ref(&name.full(), &digest)?;
            self.summary_of(&digest)
        })();
        drop(received);
        result
    }

    /// Receives a layer tar from `layer` into a file in `dir` (which must be `size` bytes
    /// with sha256 `sha256_hex`, no more than `max_size`, and arrive within a deadline),
    /// and checks its members (no absolute paths, no `..`). Nothing is locked meanwhile.
    pub fn receive_layer(
        &self,
        mut layer: impl Read,
        size: u64,
        sha256_hex: &str,
        max_size: u64,
        dir: &std::path::Path,
    ) -> Result<ReceivedLayer, ImageError> {
        if !is_sha256_hex(sha256_hex) {
            return Err(ImageError::Corrupt(format!(
                "the agent announced a malformed layer digest {:?}",
                sha256_hex.chars().take(80).collect::<String>()
            )));
        }
        if size > max_size {
            return Err(ImageError::Corrupt(format!(
                "the agent announced a {size}-byte layer: more than the {max_size} bytes a commit may take"
            )));
        }
        fs::create_dir_all(dir).map_err(|e| ImageError::io(dir, e))?;
        if let Some(free) = crate::blobs::free_bytes(dir) {
            if size > free {
                return Err(ImageError::io(
                    dir,
                    io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!("a {size}-byte layer does not fit in the {free} bytes free"),
                    ),
                ));
            }
        }
        let tmp = dir.join(format!("layer-{}-{}.tar", std::process::id(), &sha256_hex[..12]));
        let received = ReceivedLayer { path: tmp.clone() };
        let deadline = std::time::Instant::now() + stream_deadline(size);
        let mut f = File::create(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if std::time::Instant::now() > deadline {
                return Err(ImageError::Corrupt(format!(
                    "the layer did not arrive in {} s",
                    stream_deadline(size).as_secs()
                )));
            }
            let n = layer.read(&mut buf).map_err(|e| ImageError::io(&tmp, e))?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if got > size {
                return Err(ImageError::Corrupt(format!(
                    "the layer is longer than the announced {size} bytes"
                )));
            }
            hash.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(|e| ImageError::io(&tmp, e))?;
        }
        let hex = format!("{:x}", hash.finalize());
        if got != size || hex != sha256_hex {
            return Err(ImageError::Corrupt(format!(
                "the layer arrived damaged: {got} bytes with sha256 {hex}, announced {size} bytes with sha256 {sha256_hex}"
            )));
        }
        drop(f);
        validate(&tmp)?;
        Ok(received)
    }

    /// Compresses the layer tar at `tar` into the blob store (the caller holds the store
    /// lock); returns (diff id, blob digest, blob size).
    pub(crate) fn store_layer(
        &self,
        tar: &std::path::Path,
    ) -> Result<(Digest, Digest, u64), ImageError> {
        let pending = self.blobs.begin()?;
        let mut tee = HashingWriter::new(GzEncoder::new(pending, flate2::Compression::fast()));
        let mut src = File::open(tar).map_err(|e| ImageError::io(tar, e))?;
        io::copy(&mut src, &mut tee).map_err(|e| ImageError::io(tar, e))?;
        let (diff_id, _, gz) = tee.finish();
        let pending = gz.finish().map_err(|e| ImageError::io(tar, e))?;
        let (layer_digest, layer_size) = self.blobs.commit(pending, None)?;
        Ok((diff_id, layer_digest, layer_size))
    }
}

/// A layer tar received and checked, in a file deleted when this is dropped.
#[derive(Debug)]
pub struct ReceivedLayer {
    path: std::path::PathBuf,
}

impl ReceivedLayer {
    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for ReceivedLayer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
