//! `ironpod save` / `ironpod load`: images as an OCI image layout in a tar archive — the
//! format `skopeo copy oci-archive:` and `ctr images import` read and write.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::Path;

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::{names, Digest, ImageError, ImageName, ImageStore};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Largest index.json / oci-layout accepted.
const MAX_METADATA: u64 = 4 << 20;

fn append(
    b: &mut tar::Builder<BufWriter<File>>,
    path: &str,
    data: &mut dyn Read,
    size: u64,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data)
}

impl ImageStore {
    /// Writes the images `refs` to `out` as an OCI layout tar (through a temporary file).
    pub fn save(&self, refs: &[String], out: &Path) -> Result<(), ImageError> {
        self.save_archive(refs, out)?;
        for r in refs {
            let id = self.resolve(r).ok().and_then(|d| self.summary_of(&d).ok()).map(|s| s.id);
            self.event("save", &id.unwrap_or_default(), r);
        }
        Ok(())
    }

    fn save_archive(&self, refs: &[String], out: &Path) -> Result<(), ImageError> {
        let _l = self.lock(false)?;
        let mut manifests = Vec::new();
        let mut blobs: BTreeMap<String, Digest> = BTreeMap::new();
        for r in refs {
            let d = self.resolve(r)?;
            let m = self.manifest(&d)?;
            let size = std::fs::metadata(self.blobs.path(&d))
                .map_err(|e| ImageError::io(&self.blobs.path(&d), e))?
                .len();
            let full = ImageName::parse(r)
                .ok()
                .filter(|n| self.db.get_ref(&n.full()).ok().flatten().is_some())
                .map(|n| n.full());
            let mut desc = serde_json::json!({
                "mediaType": m.media_type().as_ref().map(|t| t.to_string()).unwrap_or_else(|| crate::MEDIA_MANIFEST.to_string()),
                "digest": d.to_string(),
                "size": size,
                "platform": {"architecture": "amd64", "os": "linux"},
            });
            if let Some(full) = full {
                let tag = full
                    .rsplit_once(':')
                    .map(|(_, t)| t.to_string())
                    .unwrap_or_else(|| "latest".into());
                desc["annotations"] = serde_json::json!({ REF_NAME: tag, CONTAINERD_NAME: full });
            }
            manifests.push(desc);
            blobs.insert(d.to_string(), d.clone());
            let c = Digest::from_oci(m.config().digest())?;
            blobs.insert(c.to_string(), c);
            for l in m.layers() {
                let ld = Digest::from_oci(l.digest())?;
                blobs.insert(ld.to_string(), ld);
            }
        }
        let index = serde_json::json!({ "schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests });
        let index = serde_json::to_vec(&index).map_err(|e| ImageError::Corrupt(e.to_string()))?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;

        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::process::id()
        ));
        let io_err = |e| ImageError::io(out, e);
        let result = (|| {
            let mut b = tar::Builder::new(BufWriter::new(File::create(&tmp).map_err(io_err)?));
            append(&mut b, "oci-layout", &mut &layout[..], layout.len() as u64).map_err(io_err)?;
            append(&mut b, "index.json", &mut &index[..], index.len() as u64).map_err(io_err)?;
            for d in blobs.values() {
                let p = self.blobs.path(d);
                let f = File::open(&p).map_err(|_| ImageError::MissingBlob(d.to_string()))?;
                let size = f.metadata().map_err(|e| ImageError::io(&p, e))?.len();
                append(&mut b, &format!("blobs/sha256/{}", d.hex()), &mut BufReader::new(f), size)
                    .map_err(io_err)?;
            }
            let w = b.into_inner().map_err(io_err)?;
            let f = w.into_inner().map_err(|e| io_err(e.into_error()))?;
            f.sync_all().map_err(io_err)?;
            std::fs::rename(&tmp, out).map_err(io_err)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Loads every image of an OCI layout tar; returns the names it set (familiar form), or
    /// the image ids of unnamed images.
    pub fn load(&self, archive: &Path) -> Result<Vec<String>, ImageError> {
        let names = self.load_archive(archive)?;
        for n in &names {
            let id = self.resolve(n).ok().and_then(|d| self.summary_of(&d).ok()).map(|s| s.id);
            self.event("load", &id.unwrap_or_else(|| n.clone()), n);
        }
        Ok(names)
    }

    fn load_archive(&self, archive: &Path) -> Result<Vec<String>, ImageError> {
        let _l = self.lock(false)?;
        let f = File::open(archive).map_err(|e| ImageError::io(archive, e))?;
        let mut ar = tar::Archive::new(BufReader::new(f));
        let mut index: Option<Vec<u8>> = None;
        for entry in ar.entries().map_err(|e| ImageError::BadTar(e.to_string()))? {
            let mut e = entry.map_err(|e| ImageError::BadTar(e.to_string()))?;
            let path = e
                .path()
                .map_err(|er| ImageError::BadTar(er.to_string()))?
                .to_string_lossy()
                .into_owned();
            let path = path.trim_start_matches("./").to_string();
            if e.header().entry_type().is_dir() {
                continue;
            }
            if path == "index.json" {
                if e.size() > MAX_METADATA {
                    return Err(ImageError::BadTar("index.json is too large".into()));
                }
                let mut v = Vec::new();
                e.read_to_end(&mut v).map_err(|er| ImageError::BadTar(er.to_string()))?;
                index = Some(v);
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let want = Digest::parse(&format!("sha256:{hex}"))
                    .map_err(|_| ImageError::BadTar(format!("unexpected blob path {path}")))?;
                if self.blobs.contains(&want) {
                    continue;
                }
                let size = e.size();
                let mut p = self.blobs.begin()?;
                io::copy(&mut e, &mut p)
                    .map_err(|er| ImageError::BadTar(format!("{path}: {er}")))?;
                self.blobs.commit(p, Some((&want, size)))?;
            } else if path == "oci-layout" || path == "manifest.json" || path == "repositories" {
                // Layout marker; docker-save compatibility files are not needed.
            } else {
                return Err(ImageError::BadTar(format!(
                    "unexpected member {path} in an OCI layout"
                )));
            }
        }
        let index = index
            .ok_or_else(|| ImageError::BadTar("no index.json: not an OCI image layout".into()))?;
        let index: ImageIndex = serde_json::from_slice(&index)
            .map_err(|e| ImageError::BadTar(format!("index.json: {e}")))?;
        let mut loaded = Vec::new();
        for desc in index.manifests() {
            let d = Digest::from_oci(desc.digest())?;
            let bytes = self.blobs.read(&d)?;
            let m: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
                ImageError::BadTar(format!("manifest {d} is not an image manifest: {e}"))
            })?;
            // Every referenced blob must be here before the image gets a name.
            let c = Digest::from_oci(m.config().digest())?;
            self.blobs.read(&c)?;
            for l in m.layers() {
                let ld = Digest::from_oci(l.digest())?;
                if !self.blobs.contains(&ld) {
                    return Err(ImageError::MissingBlob(ld.to_string()));
                }
            }
            let ann = desc.annotations().clone().unwrap_or_default();
            let name = ann.get(CONTAINERD_NAME).cloned().or_else(|| {
                ann.get(REF_NAME).filter(|r| r.contains(':') || r.contains('/')).cloned()
            });
            match name {
                Some(n) => {
                    let n = ImageName::parse(&n)?;
                    self.db.set_ref(&n.full(), &d)?;
                    loaded.push(names::familiar(&n.full()));
                }
                None => {
                    return Err(ImageError::BadTar(format!(
                        "manifest {d} has no image name annotation ({CONTAINERD_NAME} or a full {REF_NAME})"
                    )))
                }
            }
        }
        Ok(loaded)
    }
}
