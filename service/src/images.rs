//! Image routes: `GET /images/json` (Docker's list, with `all`, `digests` and filters), and
//! the index of images the container routes look names and labels up in.

use std::collections::HashMap;
use std::path::Path;

use axum::extract::{Query, State};
use axum::Json;
use bollard_stubs::models::ImageSummary;
use ironpod_images::time::parse_rfc3339;
use ironpod_images::{Digest, ImageStore};
use ironpod_state::Record;
use serde::{Deserialize, Serialize};

use crate::error::{blocking, ApiError, ApiResult};
use crate::filters::{glob, Filters};
use crate::Ctx;

/// One image as the routes need it.
#[derive(Debug, Clone)]
pub struct IndexedImage {
    /// Config digest (`sha256:…`), Docker's image id.
    pub id: String,
    /// Manifest digest.
    pub manifest: String,
    /// Familiar names (`demo:latest`).
    pub names: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Sum of the layers' sizes.
    pub size: u64,
    /// The config's labels.
    pub labels: HashMap<String, String>,
}

/// Every image of the store, read once per request.
pub struct ImageIndex(Vec<IndexedImage>);

impl ImageIndex {
    /// Reads the store under `root`.
    pub fn load(root: &Path) -> ApiResult<Self> {
        let store = ImageStore::open(root).map_err(ApiError::internal)?;
        let mut out = Vec::new();
        for s in store.list().map_err(ApiError::internal)? {
            let labels = Digest::parse(&s.manifest)
                .and_then(|d| store.config_of(&d))
                .ok()
                .and_then(|c| c.config().as_ref().and_then(|c| c.labels().clone()))
                .map(|l| l.into_iter().collect())
                .unwrap_or_default();
            out.push(IndexedImage {
                created: parse_rfc3339(&s.created).unwrap_or(0) as i64,
                id: s.id,
                manifest: s.manifest,
                names: s.names,
                size: s.size,
                labels,
            });
        }
        Ok(ImageIndex(out))
    }

    /// Every image.
    pub fn all(&self) -> &[IndexedImage] {
        &self.0
    }

    /// The image with this manifest digest.
    pub fn by_manifest(&self, manifest: &str) -> Option<&IndexedImage> {
        self.0.iter().find(|i| i.manifest == manifest)
    }

    /// An image by name (`demo`, `demo:v1`) or id (prefix, with or without `sha256:`).
    pub fn find(&self, reference: &str) -> Option<&IndexedImage> {
        let with_tag = if reference.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/')) {
            reference.to_string()
        } else {
            format!("{reference}:latest")
        };
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        self.0.iter().find(|i| i.names.contains(&with_tag)).or_else(|| {
            (hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| {
                    self.0.iter().find(|i| i.id.trim_start_matches("sha256:").starts_with(hex))
                })
                .flatten()
        })
    }

    /// Docker's `ancestor` filter: the container was made from `reference`'s image.
    pub fn is_ancestor(&self, reference: &str, r: &Record) -> bool {
        r.image == reference || self.find(reference).is_some_and(|i| i.manifest == r.image_digest)
    }
}

/// Query of `GET /images/json`. `all` (show intermediate images) changes nothing here:
/// every stored image is a top-level one; `digests` neither: repo digests are always listed.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

/// `ImageSummary` as API 1.41 clients read it: with `VirtualSize` (Docker 20.10's CLI shows
/// it as SIZE), which later API versions dropped.
#[derive(Debug, Serialize)]
pub struct ImageSummary141 {
    #[serde(flatten)]
    summary: ImageSummary,
    #[serde(rename = "VirtualSize")]
    virtual_size: i64,
}

/// A reference as Docker names it in messages: with `:latest` when it has no tag or digest.
pub fn with_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || last.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// `repo` of `repo:tag`.
pub fn repository(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => r,
        _ => name,
    }
}

fn reference_matches(pattern: &str, names: &[String]) -> bool {
    names.iter().any(|n| glob(pattern, n) || glob(pattern, repository(n)))
}

/// `GET /images/json`.
pub async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ImageSummary141>>> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["dangling", "label", "reference", "before", "since"])?;
    let dangling = f.flag("dangling")?;
    let root = ctx.root.clone();
    blocking(move || {
        let index = ImageIndex::load(&root)?;
        let time_of = |key: &str| -> ApiResult<Option<i64>> {
            match f.get(key) {
                [] => Ok(None),
                [r] => index
                    .find(r)
                    .map(|i| Some(i.created))
                    .ok_or_else(|| ApiError::not_found(format!("No such image: {r}"))),
                _ => Err(ApiError::bad_request(format!("only one '{key}' filter is allowed"))),
            }
        };
        let (before, since) = (time_of("before")?, time_of("since")?);
        let mut out: Vec<ImageSummary141> = index
            .0
            .iter()
            .filter(|i| dangling.is_none_or(|d| d == i.names.is_empty()))
            .filter(|i| f.labels_match("label", |k| i.labels.get(k).map(String::as_str)))
            .filter(|i| {
                f.get("reference").is_empty()
                    || f.get("reference").iter().any(|p| reference_matches(p, &i.names))
            })
            .filter(|i| before.is_none_or(|t| i.created < t) && since.is_none_or(|t| i.created > t))
            .map(|i| ImageSummary141 {
                summary: ImageSummary {
                    id: i.id.clone(),
                    parent_id: String::new(),
                    repo_tags: i.names.clone(),
                    repo_digests: i
                        .names
                        .iter()
                        .map(|n| format!("{}@{}", repository(n), i.manifest))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    created: i.created,
                    size: i.size as i64,
                    shared_size: -1,
                    labels: i.labels.clone(),
                    containers: -1,
                    manifests: None,
                    descriptor: None,
                },
                virtual_size: i.size as i64,
            })
            .collect();
        out.sort_by_key(|i| std::cmp::Reverse(i.summary.created));
        Ok(Json(out))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(names: &[&str], id: &str) -> IndexedImage {
        IndexedImage {
            id: format!("sha256:{id}"),
            manifest: format!("sha256:m{id}"),
            names: names.iter().map(|s| s.to_string()).collect(),
            created: 0,
            size: 1,
            labels: HashMap::new(),
        }
    }

    #[test]
    fn finding_images() {
        let idx = ImageIndex(vec![
            image(&["demo:latest", "demo:v1"], "abcdef01"),
            image(&["x/y:1"], "12345678"),
        ]);
        assert_eq!(idx.find("demo").unwrap().id, "sha256:abcdef01");
        assert_eq!(idx.find("demo:v1").unwrap().id, "sha256:abcdef01");
        assert_eq!(idx.find("x/y:1").unwrap().id, "sha256:12345678");
        assert_eq!(idx.find("sha256:1234").unwrap().id, "sha256:12345678");
        assert_eq!(idx.find("abcd").unwrap().id, "sha256:abcdef01");
        assert!(idx.find("demo:v2").is_none());
        assert!(idx.find("abc").is_none(), "too short for an id prefix");
    }

    #[test]
    fn references() {
        let names = vec!["demo:latest".to_string(), "library/x:1".to_string()];
        assert!(reference_matches("demo", &names));
        assert!(reference_matches("demo:latest", &names));
        assert!(reference_matches("de*", &names));
        assert!(reference_matches("library/*", &names));
        assert!(!reference_matches("x", &names));
        assert_eq!(repository("localhost:5000/a:b"), "localhost:5000/a");
        assert_eq!(repository("localhost:5000/a"), "localhost:5000/a");
        assert_eq!(with_tag("demo"), "demo:latest");
        assert_eq!(with_tag("localhost:5000/a"), "localhost:5000/a:latest");
        assert_eq!(with_tag("a:v1"), "a:v1");
    }
}
