//! `POST /build`: Docker's classic builder protocol. The body is the build context as a tar
//! (plain or gzip), stored and unpacked under the state root (hardened: nothing lands
//! outside, sizes are capped by the free space); the build is `ironpod-build`'s, every RUN
//! step in a microVM; the answer streams `{"stream": …}` lines, `{"aux": {"ID": …}}` at
//! the end, or an `errorDetail` line when the build fails.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use ironpod_build::builder::{self, BuildOptions, Pull};
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::image_files::spool;
use crate::transfer::{json_lines, Lines};
use crate::Ctx;

/// The query, as the docker CLI sends it.
#[derive(Debug, Default)]
struct BuildQuery {
    tags: Vec<String>,
    dockerfile: Option<String>,
    build_args: BTreeMap<String, String>,
    labels: Vec<(String, String)>,
    target: Option<String>,
    no_cache: bool,
    pull: bool,
    network: Option<String>,
    quiet: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE")
}

/// Reads the query; what it cannot honour is refused, never ignored.
fn parse_query(raw: &str) -> Result<BuildQuery, ApiError> {
    let bad = |m: String| ApiError::bad_request(m);
    let mut q = BuildQuery::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "t" => q.tags.push(v),
            "dockerfile" if !v.is_empty() => q.dockerfile = Some(v),
            "buildargs" if !v.is_empty() => {
                let m: BTreeMap<String, Option<String>> =
                    serde_json::from_str(&v).map_err(|e| bad(format!("buildargs: {e}")))?;
                q.build_args.extend(m.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            }
            "labels" if !v.is_empty() => {
                let m: BTreeMap<String, String> =
                    serde_json::from_str(&v).map_err(|e| bad(format!("labels: {e}")))?;
                q.labels.extend(m);
            }
            "target" if !v.is_empty() => q.target = Some(v),
            "nocache" => q.no_cache = truthy(&v),
            "pull" => q.pull = truthy(&v) || v.contains(':'),
            "q" => q.quiet = truthy(&v),
            "networkmode" => {
                q.network = match v.as_str() {
                    "" | "default" | "bridge" => None,
                    "host" => {
                        return Err(bad("networkmode=host: RUN steps run in microVMs".into()))
                    }
                    n => Some(n.to_string()),
                }
            }
            "version" if v == "2" => return Err(bad(
                "BuildKit is not served here: build with the classic builder (DOCKER_BUILDKIT=0)"
                    .into(),
            )),
            "remote" if !v.is_empty() => {
                return Err(bad("remote build contexts are not fetched: send the context".into()))
            }
            "platform" if !v.is_empty() && v != "linux/amd64" && v != "linux" => {
                return Err(bad(format!("platform {v}: ironpod builds linux/amd64 images")))
            }
            "cachefrom" if !v.is_empty() && v != "[]" && v != "null" => {
                return Err(bad("cachefrom: only this service's own cache is used".into()))
            }
            "memory" | "memswap" | "cpushares" | "cpuperiod" | "cpuquota" | "shmsize"
                if !v.is_empty() && v != "0" =>
            {
                return Err(bad(format!("{k}: RUN steps run in microVMs of the default size")))
            }
            "squash" if truthy(&v) => return Err(bad("squash is not supported".into())),
            "extrahosts" | "cpusetcpus" | "cpusetmems" | "cgroupparent" | "isolation"
                if !v.is_empty() && v != "default" =>
            {
                return Err(bad(format!(
                    "{k}: RUN steps run in microVMs of their own; not supported"
                )))
            }
            "ulimits" if !v.is_empty() && v != "null" && v != "[]" => {
                return Err(bad("ulimits: not supported for RUN steps".into()))
            }
            // What the classic builder's defaults say, or does not change the result here
            // (intermediate containers are always removed).
            _ => {}
        }
    }
    Ok(q)
}

/// A `dockerfile` parameter must name a file inside the context (relative: the builder
/// reads it there, links followed inside).
fn inside(rel: &str) -> Result<PathBuf, ApiError> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(ApiError::bad_request(format!(
            "dockerfile {rel:?} must be a path inside the context"
        )));
    }
    Ok(p.to_path_buf())
}

/// The most of a build's output waiting for a slow client (and the longest line kept
/// whole).
const OUTPUT_BUFFERED: usize = 1 << 20;
/// How long a build waits for a client that reads none of its output.
const CLIENT_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Sends what the builder prints, a line per `stream` message.
struct StreamLines<'a> {
    lines: &'a Lines,
    pending: Vec<u8>,
}

impl Write for StreamLines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A step that prints faster than the client reads waits for it; a client that
        // hung up, or reads nothing for minutes, stops the build rather than have it run
        // (and its VM stay) for no one.
        if !self.lines.wait_for_room(OUTPUT_BUFFERED, CLIENT_IDLE) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away or stopped reading",
            ));
        }
        self.pending.extend_from_slice(buf);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.lines.send(json!({"stream": String::from_utf8_lossy(&line)}));
        }
        if self.pending.len() > OUTPUT_BUFFERED {
            // A line without an end goes in pieces, cut between characters.
            let cut = match std::str::from_utf8(&self.pending) {
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                _ => self.pending.len(),
            };
            let piece: Vec<u8> = self.pending.drain(..cut).collect();
            self.lines.send(json!({"stream": String::from_utf8_lossy(&piece)}));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.lines.send(json!({"stream": String::from_utf8_lossy(&rest)}));
        }
        Ok(())
    }
}

/// Unpacks the context tar (plain or gzip) in `file` into the empty directory `dir`.
fn unpack_context(file: &mut std::fs::File, dir: &Path) -> Result<(), ApiError> {
    let mut magic = [0u8; 2];
    file.rewind().map_err(ApiError::internal)?;
    let n = file.read(&mut magic).map_err(ApiError::internal)?;
    file.rewind().map_err(ApiError::internal)?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(&*file)))
    } else {
        Box::new(std::io::BufReader::new(&*file))
    };
    // The docker CLI's tar, when it adds a Dockerfile from outside the context, ends
    // without the last member's padding and the end-of-archive blocks (Docker's daemon reads
    // it all the same): zeros stand in for them.
    let reader = reader.chain(std::io::repeat(0).take(3 * 512));
    let limits = ironpod_images::unpack::Limits::for_space(ironpod_images::free_bytes(dir), None);
    ironpod_images::unpack::unpack_plain(reader, dir, &limits)
        .map(drop)
        .map_err(|e| ApiError::bad_request(format!("the build context: {e}")))
}

/// `POST /build`.
pub async fn build(
    State(ctx): State<Ctx>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let q = parse_query(raw.as_deref().unwrap_or_default())?;
    for t in &q.tags {
        ironpod_images::ImageName::parse(t)
            .map_err(|e| ApiError::bad_request(format!("invalid tag {t:?}: {e}")))?;
    }
    let root = ctx.root.clone();
    let mut file = spool(&root, body, "build").await?;
    Ok(json_lines(move |lines| {
        let builds = root.join("builds");
        let dir = std::fs::create_dir_all(&builds)
            .and_then(|()| tempfile::Builder::new().prefix("context-").tempdir_in(&builds));
        let dir = match dir {
            Ok(d) => d,
            Err(e) => return lines.fail(ApiError::internal(e)),
        };
        if let Err(e) = unpack_context(&mut file, dir.path()) {
            return lines.fail(e);
        }
        drop(file);
        let dockerfile = match q.dockerfile.as_deref().map(inside).transpose() {
            Ok(d) => d,
            Err(e) => return lines.fail(e),
        };
        let opts = BuildOptions {
            context: dir.path().to_path_buf(),
            dockerfile,
            tags: q.tags.clone(),
            build_args: q.build_args.clone(),
            target: q.target.clone(),
            no_cache: q.no_cache,
            pull: if q.pull { Pull::Always } else { Pull::Missing },
            labels: q.labels.clone(),
            network: q.network.clone(),
            timestamp: None,
            quiet: q.quiet,
        };
        let mut out = StreamLines { lines, pending: Vec::new() };
        let result = builder::build(&root, opts, &mut out);
        let _ = out.flush();
        match result {
            Ok(built) => lines.send(json!({"aux": {"ID": built.id.to_string()}})),
            Err(e) => lines.fail(ApiError::bad_request(e.to_string())),
        }
    })
    .await)
}

/// `POST /build/prune` (`docker builder prune`): the build cache forgotten, what no name
/// and no container keeps deleted.
pub async fn prune(State(ctx): State<Ctx>) -> ApiResult<axum::Json<serde_json::Value>> {
    let root = ctx.root.clone();
    crate::error::blocking(move || {
        let store = ironpod_images::ImageStore::open(&root).map_err(ApiError::internal)?;
        let (_, deleted, freed) = store.prune_build_cache().map_err(ApiError::internal)?;
        Ok(axum::Json(json!({"CachesDeleted": deleted, "SpaceReclaimed": freed})))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_cli_s_query_is_read_and_what_cannot_be_honoured_refused() {
        let q = parse_query(
            "t=a%3A1&t=b&dockerfile=sub%2FDockerfile&buildargs=%7B%22V%22%3A%222%22%2C%22N%22%3Anull%7D&labels=%7B%22k%22%3A%22v%22%7D&nocache=1&pull=0&rm=1&forcerm=0&memory=0&cachefrom=%5B%5D&networkmode=default&platform=&target=final&q=1",
        )
        .unwrap();
        assert_eq!(q.tags, ["a:1", "b"]);
        assert_eq!(q.dockerfile.as_deref(), Some("sub/Dockerfile"));
        assert_eq!(q.build_args, BTreeMap::from([("V".to_string(), "2".to_string())]));
        assert_eq!(q.labels, [("k".to_string(), "v".to_string())]);
        assert!(q.no_cache && !q.pull && q.quiet);
        assert_eq!(q.target.as_deref(), Some("final"));
        for bad in [
            "version=2",
            "networkmode=host",
            "memory=1000",
            "remote=https://x",
            "platform=linux/arm64",
            "buildargs=nope",
            "cachefrom=%5B%22x%22%5D",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_query("networkmode=none").unwrap().network.as_deref(), Some("none"));
        assert_eq!(inside("a/Dockerfile").unwrap(), PathBuf::from("a/Dockerfile"));
        assert!(inside("../Dockerfile").is_err());
        assert!(inside("/etc/passwd").is_err());
    }
}
