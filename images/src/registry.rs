//! Pull and push over the OCI distribution API (oci-client underneath): anonymous, basic and
//! bearer-token auth (the `WWW-Authenticate` challenge flow), TLS with extra CA certificates,
//! plain HTTP only when asked or for localhost. Everything a registry sends is checked:
//! manifests must parse and match their digest, blobs are streamed into the store and
//! published only when digest and size match.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{ImageIndex, ImageManifest};

use crate::blobs::MAX_METADATA;
use crate::progress::{Progress, ProgressSink};
use crate::{auth, Digest, ImageError, ImageName, ImageStore, ImageSummary};

/// Largest manifest or index accepted from a registry.
const MAX_MANIFEST: usize = 4 << 20;
/// Blobs larger than this are pushed in chunks (PATCH), smaller ones in one PUT.
const CHUNKED_PUSH_ABOVE: u64 = 8 << 20;
/// Parallel blob transfers.
const PARALLEL: usize = 3;

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Allow plain HTTP (and skip certificate checks) for this registry.
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// `os/arch` to pick from an index (default linux/amd64).
    pub platform: Option<String>,
    /// Progress output: bars on a terminal, plain lines otherwise, nothing when quiet.
    pub quiet: bool,
    /// How long the registry may send nothing, within a reply or a transfer, before the
    /// request fails ([`STALL_TIMEOUT`] when `None`).
    pub stall_timeout: Option<Duration>,
    /// (user, password) for this transfer instead of the stored credentials (the Docker
    /// API's `X-Registry-Auth`).
    pub credentials: Option<(String, String)>,
    /// Progress as events instead of output.
    pub progress: Option<ProgressSink>,
}

/// How long a registry may send nothing before a request fails: a registry that accepts a
/// connection and then hangs fails the pull instead of holding it (and the store's lock)
/// forever. Long enough for a slow registry to start sending a large blob.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to a registry may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl RegistryOptions {
    fn stall(&self) -> Duration {
        self.stall_timeout.unwrap_or(STALL_TIMEOUT)
    }
}

/// A registry error with its causes ("error sending request" alone does not say that the
/// connection was refused or timed out).
fn reg_err(e: impl std::error::Error) -> ImageError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    ImageError::Registry(text)
}

fn is_localhost(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// A client speaking HTTPS, or plain HTTP to `reg` when `plain_http`.
fn client(reg: &str, opts: &RegistryOptions, plain_http: bool) -> Result<Client, ImageError> {
    let mut cfg = ClientConfig::default();
    if plain_http {
        cfg.protocol = ClientProtocol::HttpsExcept(vec![reg.to_string()]);
    }
    cfg.accept_invalid_certificates = opts.insecure;
    if let Some(ca) = &opts.ca_file {
        let data = std::fs::read(ca).map_err(|e| ImageError::io(ca, e))?;
        cfg.extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
    }
    cfg.platform_resolver = None;
    cfg.read_timeout = Some(opts.stall());
    cfg.connect_timeout = Some(CONNECT_TIMEOUT);
    Ok(Client::new(cfg))
}

fn runtime() -> Result<tokio::runtime::Runtime, ImageError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| ImageError::Registry(format!("cannot start the I/O runtime: {e}")))
}

fn auth_for(
    store: &ImageStore,
    registry: &str,
    opts: &RegistryOptions,
) -> Result<RegistryAuth, ImageError> {
    if let Some((u, p)) = &opts.credentials {
        return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
    }
    Ok(match auth::load(&store.root)?.get(registry) {
        Some((u, p)) => RegistryAuth::Basic(u, p),
        None => RegistryAuth::Anonymous,
    })
}

fn pick_platform(index: &ImageIndex, want: &str) -> Result<String, ImageError> {
    let (os, arch) = want
        .split_once('/')
        .ok_or_else(|| ImageError::Registry(format!("platform {want:?} is not os/arch")))?;
    index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
        })
        .map(|m| m.digest().to_string())
        .ok_or_else(|| ImageError::Registry(format!("the image has no {want} variant")))
}

impl ImageStore {
    /// Pulls `reference` from its registry into the store and names it.
    pub fn pull(
        &self,
        reference: &str,
        opts: &RegistryOptions,
    ) -> Result<ImageSummary, ImageError> {
        let name = ImageName::parse(reference)?;
        let registry = name.reference().resolve_registry().to_string();
        let s = with_fallback(&registry, opts, |c, plain| {
            self.pull_with(c, plain, &name, reference, opts)
        })?;
        self.event(
            "pull",
            &crate::names::familiar(&name.full()),
            &crate::names::familiar(&name.full()),
        );
        Ok(s)
    }

    fn pull_with(
        &self,
        client: Client,
        plain_http: bool,
        name: &ImageName,
        reference: &str,
        opts: &RegistryOptions,
    ) -> Result<ImageSummary, ImageError> {
        let r: Reference = name.reference().clone();
        let auth = auth_for(self, r.registry(), opts)?;
        let progress = Progress::new(opts.quiet, opts.progress.clone());
        let _l = self.lock(false)?;
        let rt = runtime()?;
        let http = http_client(opts)?;
        let manifest_digest = rt.block_on(async {
            let fetch = ManifestFetch { oci: &client, http: &http, plain_http, auth: &auth };
            let mut bytes = fetch.get(&r).await?;
            check_manifest_bytes(&bytes, r.digest())?;
            // An index: choose the platform's manifest and fetch it by digest.
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                ImageError::Registry(format!("manifest of {reference} is not JSON: {e}"))
            })?;
            if v.get("manifests").is_some() {
                let index: ImageIndex = serde_json::from_slice(&bytes)
                    .map_err(|e| ImageError::Registry(format!("bad index: {e}")))?;
                let d = pick_platform(&index, opts.platform.as_deref().unwrap_or("linux/amd64"))?;
                let by_digest = r.clone_with_digest(d.clone());
                bytes = fetch.get(&by_digest).await?;
                check_manifest_bytes(&bytes, Some(&d))?;
            }
            let manifest: ImageManifest = serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::Registry(format!("bad image manifest: {e}")))?;
            let mut wanted =
                vec![(Digest::from_oci(manifest.config().digest())?, manifest.config().size())];
            if manifest.config().size() > MAX_METADATA {
                return Err(ImageError::Registry(format!(
                    "the image config of {} bytes is too large (limit {MAX_METADATA})",
                    manifest.config().size()
                )));
            }
            for l in manifest.layers() {
                wanted.push((Digest::from_oci(l.digest())?, l.size()));
            }
            // What is announced must fit before anything is fetched (each blob is held to
            // its announced size as it streams).
            let needed: u64 = wanted
                .iter()
                .filter(|(d, _)| !self.blobs.contains(d))
                .fold(0u64, |a, (_, s)| a.saturating_add(*s));
            if let Some(free) = crate::blobs::free_bytes(&self.root) {
                if needed > free {
                    return Err(ImageError::Registry(format!(
                        "{reference} needs {needed} bytes, and {free} are free"
                    )));
                }
            }
            let progress = Arc::new(progress);
            let jobs =
                wanted.into_iter().filter(|(d, _)| !self.blobs.contains(d)).map(|(d, size)| {
                    let (client, r, progress) = (&client, &r, progress.clone());
                    async move {
                        let bar = progress.start("Downloading", &d, size);
                        let mut stream = client
                            .pull_blob_stream(r, d.to_string().as_str())
                            .await
                            .map_err(reg_err)?;
                        let mut pending = self.blobs.begin()?;
                        let mut got = 0u64;
                        while let Some(chunk) = stream.stream.try_next().await.map_err(reg_err)? {
                            got += chunk.len() as u64;
                            if got > size {
                                return Err(ImageError::DigestMismatch {
                                    expected: format!("{d} ({size} bytes)"),
                                    actual: format!("more than {size} bytes"),
                                });
                            }
                            pending.write_all(&chunk).map_err(|e| ImageError::io(&self.root, e))?;
                            progress.advance(&bar, got);
                        }
                        // fsync + rename off the async workers, so other downloads go on meanwhile.
                        tokio::task::block_in_place(|| {
                            self.blobs.commit(pending, Some((&d, size)))
                        })?;
                        progress.done(&d, "Downloaded", Some(bar));
                        Ok::<_, ImageError>(())
                    }
                });
            futures_util::stream::iter(jobs)
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<_>>()
                .await?;
            self.blobs.put(&bytes)
        })?;
        self.db.set_ref(&name.full(), &manifest_digest)?;
        self.db.add_source(&manifest_digest, r.registry(), r.repository())?;
        self.summary_of(&manifest_digest)
    }

    /// Pushes a local image to the registry its name points at; returns the manifest digest.
    pub fn push(&self, reference: &str, opts: &RegistryOptions) -> Result<Digest, ImageError> {
        let name = ImageName::parse(reference)?;
        let registry = name.reference().resolve_registry().to_string();
        let d = with_fallback(&registry, opts, |c, _| self.push_with(c, &name, reference, opts))?;
        self.event(
            "push",
            &crate::names::familiar(&name.full()),
            &crate::names::familiar(&name.full()),
        );
        Ok(d)
    }

    fn push_with(
        &self,
        client: Client,
        name: &ImageName,
        reference: &str,
        opts: &RegistryOptions,
    ) -> Result<Digest, ImageError> {
        let r: Reference = name.reference().clone();
        let d = self.resolve(reference)?;
        let bytes = self.blobs.read(&d)?;
        let m = self.manifest(&d)?;
        let auth = auth_for(self, r.registry(), opts)?;
        let progress = Progress::new(opts.quiet, opts.progress.clone());
        let _l = self.lock(false)?;
        let sources = self.db.sources_in(r.registry())?;
        let rt = runtime()?;
        rt.block_on(async {
            client.auth(&r, &auth, RegistryOperation::Push).await.map_err(reg_err)?;
            let mut blobs: Vec<(Digest, u64)> = m
                .layers()
                .iter()
                .map(|l| Ok((Digest::from_oci(l.digest())?, l.size())))
                .collect::<Result<_, ImageError>>()?;
            blobs.push((Digest::from_oci(m.config().digest())?, m.config().size()));
            for (bd, size) in blobs {
                let ds = bd.to_string();
                if client.blob_exists(&r, &ds).await.map_err(reg_err)? {
                    progress.done(&bd, "Layer already exists", None);
                    continue;
                }
                // Cross-repository mount from a repository of the same registry that has it.
                let mut mounted = false;
                for repo in sources.iter().filter(|repo| *repo != r.repository()) {
                    let src =
                        Reference::with_digest(r.registry().to_string(), repo.clone(), ds.clone());
                    if client.mount_blob(&r, &src, &ds).await.is_ok()
                        && client.blob_exists(&r, &ds).await.unwrap_or(false)
                    {
                        progress.done(&bd, &format!("Mounted from {repo}"), None);
                        mounted = true;
                        break;
                    }
                }
                if mounted {
                    continue;
                }
                let bar = progress.start("Uploading", &bd, size);
                let data = tokio::fs::read(self.blobs.path(&bd))
                    .await
                    .map_err(|e| ImageError::io(&self.blobs.path(&bd), e))?;
                if size > CHUNKED_PUSH_ABOVE {
                    let chunks: Vec<
                        Result<bytes::Bytes, oci_client::errors::OciDistributionError>,
                    > = data
                        .chunks(4 << 20)
                        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                        .collect();
                    let resp = client
                        .push_blob_stream_chunked(&r, futures_util::stream::iter(chunks))
                        .await
                        .map_err(reg_err)?;
                    if resp.blob_digest != ds {
                        return Err(ImageError::DigestMismatch {
                            expected: ds,
                            actual: resp.blob_digest,
                        });
                    }
                } else {
                    client.push_blob(&r, data, &ds).await.map_err(reg_err)?;
                }
                progress.done(&bd, "Pushed", Some(bar));
            }
            let media = m
                .media_type()
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| crate::MEDIA_MANIFEST.to_string());
            let ct = media
                .parse()
                .map_err(|_| ImageError::Corrupt(format!("bad media type {media}")))?;
            client.push_manifest_raw(&r, bytes, ct).await.map_err(reg_err)?;
            Ok::<_, ImageError>(())
        })?;
        self.db.add_source(&d, r.registry(), r.repository())?;
        Ok(d)
    }
}

/// Checks credentials against a registry the way `docker login` does: an authenticated
/// `GET /v2/` (basic auth), or, when the registry answers with a bearer challenge, a token
/// request to its realm with those credentials.
pub fn check_login(
    registry: &str,
    user: &str,
    password: &str,
    opts: &RegistryOptions,
) -> Result<(), ImageError> {
    let attempt = |plain_http: bool| -> Result<(), ImageError> {
        let scheme = if plain_http { "http" } else { "https" };
        let http = http_client(opts)?;
        let rt = runtime()?;
        rt.block_on(async {
            let resp = http
                .get(format!("{scheme}://{registry}/v2/"))
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(reg_err)?;
            if resp.status().is_success() {
                return Ok(());
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if resp.status().as_u16() == 401 && challenge.to_ascii_lowercase().starts_with("bearer")
            {
                let c = client(registry, opts, plain_http)?;
                let probe = Reference::with_tag(
                    registry.to_string(),
                    "library/ironpod-login-check".into(),
                    "latest".into(),
                );
                let auth = RegistryAuth::Basic(user.to_string(), password.to_string());
                return c
                    .auth(&probe, &auth, RegistryOperation::Pull)
                    .await
                    .map(|_| ())
                    .map_err(|e| ImageError::Registry(format!("login to {registry} failed: {e}")));
            }
            Err(ImageError::Registry(format!("login to {registry} failed: {}", resp.status())))
        })
    };
    match attempt(false) {
        Ok(()) => Ok(()),
        Err(https) if opts.insecure || is_localhost(registry) => {
            attempt(true).map_err(|http| match (&https, &http) {
                (ImageError::Registry(a), ImageError::Registry(b))
                    if a.contains("error sending request")
                        && !b.contains("error sending request") =>
                {
                    http
                }
                _ => ImageError::Registry(format!("over HTTPS: {https}; over HTTP: {http}")),
            })
        }
        Err(e) => Err(e),
    }
}

/// Runs `op` over HTTPS; for localhost or `--insecure` registries, retries over plain HTTP
/// when HTTPS fails (as Docker does for insecure registries), reporting both errors if both
/// fail.
fn with_fallback<T>(
    registry: &str,
    opts: &RegistryOptions,
    op: impl Fn(Client, bool) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    match op(client(registry, opts, false)?, false) {
        Ok(v) => Ok(v),
        Err(ImageError::Registry(https)) if opts.insecure || is_localhost(registry) => {
            match op(client(registry, opts, true)?, true) {
                Ok(v) => Ok(v),
                Err(ImageError::Registry(http)) => {
                    // HTTPS that never connected, to a registry that answered over HTTP:
                    // only the HTTP answer is news.
                    let unreachable = |m: &str| m.contains("error sending request");
                    Err(ImageError::Registry(if unreachable(&https) && !unreachable(&http) {
                        http
                    } else {
                        format!("over HTTPS: {https}; over HTTP: {http}")
                    }))
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// What fetching a manifest needs: the distribution client for its auth flow (it answers a
/// registry's challenge and keeps the token), and a plain HTTP client that reads the body
/// as it comes, so a registry cannot make us buffer more than [`MAX_MANIFEST`].
struct ManifestFetch<'a> {
    oci: &'a Client,
    http: &'a reqwest::Client,
    plain_http: bool,
    auth: &'a RegistryAuth,
}

impl ManifestFetch<'_> {
    /// The manifest or index `r` names, at most [`MAX_MANIFEST`] bytes.
    async fn get(&self, r: &Reference) -> Result<Vec<u8>, ImageError> {
        let token = self.oci.auth(r, self.auth, RegistryOperation::Pull).await.map_err(reg_err)?;
        let reference = r.digest().or(r.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{reference}",
            if self.plain_http { "http" } else { "https" },
            r.resolve_registry(),
            r.repository()
        );
        let mut req = self.http.get(&url).header("Accept", ACCEPT.join(", "));
        req = match (token, self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            (None, _) => req,
        };
        let mut resp = req.send().await.map_err(reg_err)?;
        let status = resp.status();
        let limit = if status.is_success() { MAX_MANIFEST } else { 4096 };
        if resp.content_length().is_some_and(|l| l > limit as u64) && status.is_success() {
            return Err(ImageError::Registry(format!(
                "manifest of {} bytes is too large",
                resp.content_length().unwrap_or(0)
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(reg_err)? {
            if body.len() + chunk.len() > limit {
                if !status.is_success() {
                    break;
                }
                return Err(ImageError::Registry(format!(
                    "manifest of more than {MAX_MANIFEST} bytes is too large"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(ImageError::Registry(format!(
                "{url}: {status}: {}",
                // The registry's words, without anything a terminal would act on.
                String::from_utf8_lossy(&body)
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect::<String>()
                    .trim()
            )));
        }
        Ok(body)
    }
}

/// A reqwest client with the TLS settings of `opts`.
fn http_client(opts: &RegistryOptions) -> Result<reqwest::Client, ImageError> {
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(opts.insecure)
        .read_timeout(opts.stall())
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(ca) = &opts.ca_file {
        let pem = std::fs::read(ca).map_err(|e| ImageError::io(ca, e))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(reg_err)?;
        b = b.tls_certs_merge([cert]);
    }
    b.build().map_err(reg_err)
}

/// A manifest from a registry: bounded in size, and matching the digest it was asked by.
fn check_manifest_bytes(bytes: &[u8], want: Option<&str>) -> Result<(), ImageError> {
    if bytes.len() > MAX_MANIFEST {
        return Err(ImageError::Registry(format!(
            "manifest of {} bytes is too large",
            bytes.len()
        )));
    }
    if let Some(w) = want {
        let got = Digest::of(bytes);
        if got.to_string() != w {
            return Err(ImageError::DigestMismatch {
                expected: w.to_string(),
                actual: got.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_that_stops_answering_fails_the_pull() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Takes every connection and never answers.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                held.push(s);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let opts = RegistryOptions {
            insecure: true,
            quiet: true,
            stall_timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let e = store.pull(&format!("127.0.0.1:{port}/stuck:1"), &opts).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
        assert!(e.contains("timed out"), "{e}");
    }
}
