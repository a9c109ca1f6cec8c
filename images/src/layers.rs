//! Read-only layer disks: every layer becomes an erofs image once, cached by layer digest
//! under `<root>/layers/`, and shared by every pod that uses it (attached read-only, never
//! copied).
//!
//! Why erofs rather than ext4: `mkfs.erofs` builds a compact, read-only image straight from a
//! directory without sizing it first (ext4 needs a size guess and wastes the slack), the guest
//! mounts it without a journal, and overlayfs takes it as a lower layer as is.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::read::GzDecoder;

use crate::{unpack, Digest, ImageError, ImageStore};

/// Makes `dir` (and missing parents) mode 0700, and makes sure it is a directory of ours.
fn private_dir(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ImageError::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| ImageError::io(dir, e))
}

impl ImageStore {
    /// The layer disks of an image, bottom layer first, building any that are missing.
    pub fn layer_disks(&self, reference: &str) -> Result<Vec<PathBuf>, ImageError> {
        let d = self.resolve(reference)?;
        self.layer_disks_of(&d)
    }

    /// The layer disks of the image with this manifest digest (named or only leased).
    pub fn layer_disks_of(&self, manifest: &Digest) -> Result<Vec<PathBuf>, ImageError> {
        let _l = self.lock(false)?;
        let m = self.manifest(manifest)?;
        let mut out = Vec::new();
        for l in m.layers() {
            let digest = Digest::from_oci(l.digest())?;
            out.push(self.layer_disk(&digest, l.media_type().as_ref())?);
        }
        Ok(out)
    }

    /// The layers of the image with this manifest digest, bottom first.
    pub fn layers_of(&self, manifest: &Digest) -> Result<Vec<Digest>, ImageError> {
        let m = self.manifest(manifest)?;
        m.layers().iter().map(|l| Digest::from_oci(l.digest())).collect()
    }

    /// A layer's tar, decompressed (gzip, zstd or plain, told by its first bytes).
    pub fn open_layer(&self, layer: &Digest) -> Result<Box<dyn std::io::Read>, ImageError> {
        crate::import::open_tar(&self.blobs.path(layer))
    }

    fn layer_disk(&self, layer: &Digest, media_type: &str) -> Result<PathBuf, ImageError> {
        let dir = self.root.join("layers");
        fs::create_dir_all(&dir).map_err(|e| ImageError::io(&dir, e))?;
        let disk = dir.join(format!("{}.erofs", layer.hex()));
        if disk.is_file() {
            return Ok(disk);
        }
        // One builder per layer at a time, across processes.
        let _build =
            crate::lock::StoreLock::acquire(&dir.join(format!("{}.lock", layer.hex())), true)?;
        if disk.is_file() {
            return Ok(disk);
        }
        let blob = self.blobs.path(layer);
        let file = fs::File::open(&blob).map_err(|_| ImageError::MissingBlob(layer.to_string()))?;
        let reader: Box<dyn std::io::Read> = if media_type.ends_with("+zstd") {
            Box::new(zstd::Decoder::new(file).map_err(|e| ImageError::io(&blob, e))?)
        } else if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Box::new(GzDecoder::new(BufReader::new(file)))
        } else if media_type.ends_with(".tar") || media_type.ends_with("tar") {
            Box::new(BufReader::new(file))
        } else {
            return Err(ImageError::Corrupt(format!(
                "layer {layer}: unsupported media type {media_type}"
            )));
        };
        let work =
            self.root.join("tmp").join(format!("unpack-{}-{}", layer.hex(), std::process::id()));
        let _ = fs::remove_dir_all(&work);
        // The work directory is the owner's alone: while the tree is being made it holds
        // files with the image's owners and set-id bits.
        private_dir(&work)?;
        let tree = work.join("tree");
        fs::create_dir(&tree).map_err(|e| ImageError::io(&tree, e))?;
        let result = (|| {
            // A layer may take at most half the free space (its tree and its disk both need
            // room), and never more than the fixed caps.
            let limits = unpack::Limits::for_space(
                crate::blobs::free_bytes(&work),
                crate::blobs::free_inodes(&work),
            );
            unpack::unpack(reader, &tree, &limits)?;
            let tmp_disk = work.join("disk.erofs");
            let out = Command::new("mkfs.erofs")
                .arg("--quiet")
                .arg("--preserve-mtime")
                .arg(&tmp_disk)
                .arg(&tree)
                .output()
                .map_err(|e| ImageError::io(Path::new("mkfs.erofs"), e))?;
            if !out.status.success() {
                return Err(ImageError::Corrupt(format!(
                    "mkfs.erofs failed for layer {layer}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            fs::File::open(&tmp_disk)
                .and_then(|f| f.sync_all())
                .map_err(|e| ImageError::io(&tmp_disk, e))?;
            fs::rename(&tmp_disk, &disk).map_err(|e| ImageError::io(&disk, e))
        })();
        let _ = fs::remove_dir_all(&work);
        result.map(|()| disk)
    }
}
