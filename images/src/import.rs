//! `ironpod import`: a root filesystem tarball becomes a one-layer OCI image.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::blobs::{BlobStore, HashingWriter};
use crate::{time, Digest, ImageError, ImageName, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_MANIFEST};

/// Opens a tarball, transparently decompressing gzip.
pub(crate) fn open_tar(path: &Path) -> Result<Box<dyn Read>, ImageError> {
    let mut f = File::open(path).map_err(|e| ImageError::io(path, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| ImageError::io(path, e))?;
    drop(f);
    let f = BufReader::new(File::open(path).map_err(|e| ImageError::io(path, e))?);
    match &magic[..n.min(4)] {
        [0x1f, 0x8b, ..] => Ok(Box::new(GzDecoder::new(f))),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Ok(Box::new(zstd::Decoder::with_buffer(f).map_err(|e| ImageError::io(path, e))?))
        }
        _ => Ok(Box::new(f)),
    }
}

/// A path inside a layer must stay inside it: relative, and without `..`.
fn check_member_path(p: &Path, what: &str) -> Result<(), ImageError> {
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(ImageError::BadTar(format!(
                    "{what} {} climbs out of the root with '..'",
                    p.display()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ImageError::BadTar(format!("{what} {} is absolute", p.display())))
            }
        }
    }
    Ok(())
}

/// Reads the whole archive once: every member path and hard-link target must be safe, and
/// the archive must be complete.
pub(crate) fn validate(path: &Path) -> Result<u64, ImageError> {
    let mut archive = tar::Archive::new(open_tar(path)?);
    let mut count = 0u64;
    let entries = archive.entries().map_err(|e| ImageError::BadTar(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::BadTar(format!("entry {count}: {e}")))?;
        let p = entry.path().map_err(|e| ImageError::BadTar(e.to_string()))?.into_owned();
        check_member_path(&p, "member")?;
        if entry.header().entry_type() == tar::EntryType::Link {
            if let Some(target) =
                entry.link_name().map_err(|e| ImageError::BadTar(e.to_string()))?
            {
                check_member_path(&target, "hard link target")?;
            }
        }
        io::copy(&mut entry, &mut io::sink()).map_err(|e| {
            ImageError::BadTar(format!("{}: truncated or unreadable: {e}", p.display()))
        })?;
        count += 1;
    }
    Ok(count)
}

/// Imports `tarball` as a one-layer image whose run configuration gets the Dockerfile
/// instructions `changes` ([`crate::change`]); returns the manifest digest.
pub fn import(
    blobs: &BlobStore,
    tarball: &Path,
    name: &ImageName,
    changes: &[String],
) -> Result<Digest, ImageError> {
    let mut run_config = serde_json::Map::new();
    run_config.insert(
        "Env".into(),
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
    );
    for c in changes {
        crate::change::apply(&mut run_config, c)?;
    }
    validate(tarball)?;
    // Layer: gzip of the tar; diff_id: digest of the uncompressed tar.
    let mut src = open_tar(tarball)?;
    let pending = blobs.begin()?;
    let mut tee = HashingWriter::new(GzEncoder::new(pending, flate2::Compression::default()));
    io::copy(&mut src, &mut tee)
        .map_err(|e| ImageError::BadTar(format!("{}: {e}", tarball.display())))?;
    let (diff_id, _, gz) = tee.finish();
    let pending = gz.finish().map_err(|e| ImageError::io(tarball, e))?;
    let (layer, layer_size) = blobs.commit(pending, None)?;

    let created = time::now_rfc3339();
    let config = serde_json::json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": run_config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{
            "created": created,
            "created_by": format!("ironpod import {}", tarball.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()),
            "comment": format!("imported as {}", name.full()),
        }],
    });
    let config_bytes =
        serde_json::to_vec(&config).map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let _: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| ImageError::Corrupt(format!("generated config: {e}")))?;
    let config_digest = blobs.put(&config_bytes)?;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len() },
        "layers": [{ "mediaType": MEDIA_LAYER_GZIP, "digest": layer.to_string(), "size": layer_size }],
    });
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let _: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| ImageError::Corrupt(format!("generated manifest: {e}")))?;
    blobs.put(&manifest_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths() {
        assert!(check_member_path(Path::new("bin/sh"), "m").is_ok());
        assert!(check_member_path(Path::new("./etc/passwd"), "m").is_ok());
        assert!(check_member_path(Path::new("../etc/passwd"), "m").is_err());
        assert!(check_member_path(Path::new("a/../../b"), "m").is_err());
        assert!(check_member_path(Path::new("/etc/passwd"), "m").is_err());
    }
}
