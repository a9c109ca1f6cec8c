//! `GET|HEAD /_ping`, `GET /version`, `GET /info`: what clients ask first.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use bollard_stubs::models::{
    Commit, IndexInfo, LocalNodeState, PluginsInfo, RegistryServiceConfig, Runtime, SwarmInfo,
    SystemInfo, SystemInfoCgroupDriverEnum, SystemInfoCgroupVersionEnum, SystemVersion,
    SystemVersionComponents, SystemVersionPlatform,
};

use crate::error::{blocking, ApiError, ApiResult};
use crate::server::{API_VERSION, MIN_API_VERSION};
use crate::Ctx;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const GIT_COMMIT: &str = env!("IRONPOD_GIT_COMMIT");
const RUSTC: &str = env!("IRONPOD_RUSTC_VERSION");
const GIT_DATE: &str = env!("IRONPOD_GIT_DATE");

/// `/_ping`: "OK", never cached, with the builder version clients look for.
pub async fn ping() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::HeaderName::from_static("builder-version"), "1"),
        ],
        "OK",
    )
}

/// The machine's architecture in Go's words (what Docker reports).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `uname -r`.
fn kernel_release() -> String {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname fills the struct it is given; its result is checked before use.
    if unsafe { libc::uname(u.as_mut_ptr()) } != 0 {
        return String::new();
    }
    // SAFETY: uname succeeded, so the struct is initialised and `release` NUL-terminated.
    let u = unsafe { u.assume_init() };
    // SAFETY: `release` is a NUL-terminated array inside `u`, which outlives the read.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned()
}

/// `GET /version`.
pub async fn version() -> Json<SystemVersion> {
    let kernel = kernel_release();
    let details: HashMap<String, String> = [
        ("ApiVersion", API_VERSION),
        ("MinAPIVersion", MIN_API_VERSION),
        ("GitCommit", GIT_COMMIT),
        ("GoVersion", RUSTC),
        ("Os", "linux"),
        ("Arch", go_arch()),
        ("KernelVersion", kernel.as_str()),
        ("Experimental", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Json(SystemVersion {
        platform: Some(SystemVersionPlatform { name: format!("ironpod {VERSION}") }),
        components: Some(vec![SystemVersionComponents {
            name: "Engine".into(),
            version: VERSION.into(),
            details: Some(details),
        }]),
        version: Some(VERSION.into()),
        api_version: Some(API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: Some(GIT_COMMIT.into()),
        go_version: Some(RUSTC.into()),
        os: Some("linux".into()),
        arch: Some(go_arch().into()),
        kernel_version: Some(kernel),
        experimental: Some(false),
        build_time: (!GIT_DATE.is_empty()).then(|| GIT_DATE.to_string()),
    })
}

/// `PRETTY_NAME` and `VERSION_ID` of /etc/os-release.
fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (get("PRETTY_NAME"), get("VERSION_ID"))
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let l = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            l.split_whitespace().nth(1)?.parse::<i64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This host's id for clients (stable across restarts: kept under the state root).
fn host_id(root: &std::path::Path) -> String {
    let path = root.join("service-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return id.to_string();
        }
    }
    let Ok(id) = ironpod_ids::new_id() else { return "0".repeat(64) };
    // Best effort: a host whose root cannot be written gets a new id per start.
    let tmp = root.join(".service-id.tmp");
    if std::fs::write(&tmp, &id).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
    id
}

fn env_any(names: &[&str]) -> String {
    names.iter().find_map(|n| std::env::var(n).ok()).unwrap_or_default()
}

/// Counts of containers by state, and of images.
struct Counts {
    total: i64,
    running: i64,
    stopped: i64,
    images: i64,
}

fn counts(root: &std::path::Path) -> ApiResult<Counts> {
    let records = crate::containers::records(root)?;
    let running =
        records.iter().filter(|r| r.status == ironpod_state::status::RUNNING).count() as i64;
    let store = ironpod_images::ImageStore::open(root).map_err(ApiError::internal)?;
    let images = store.list().map_err(ApiError::internal)?.len() as i64;
    let total = records.len() as i64;
    Ok(Counts { total, running, stopped: total - running, images })
}

/// `GET /info`.
pub async fn info(State(ctx): State<Ctx>) -> ApiResult<Json<SystemInfo>> {
    let root = ctx.root.clone();
    let c = blocking(move || counts(&root)).await?;
    let (os, os_version) = os_release();
    let vmm = Some(ironpod_pods::assets::vmm_binary().display().to_string());
    let index = IndexInfo {
        name: Some("docker.io".into()),
        mirrors: Some(Vec::new()),
        secure: Some(true),
        official: Some(true),
    };
    Ok(Json(SystemInfo {
        id: Some(host_id(&ctx.root)),
        containers: Some(c.total),
        containers_running: Some(c.running),
        containers_paused: Some(0),
        containers_stopped: Some(c.stopped),
        images: Some(c.images),
        driver: Some("erofs".into()),
        driver_status: Some(vec![vec!["Layers".into(), "erofs disks, read-only".into()]]),
        docker_root_dir: Some(ctx.root.display().to_string()),
        plugins: Some(PluginsInfo {
            volume: Some(vec!["local".into()]),
            network: Some(vec!["bridge".into(), "null".into()]),
            authorization: None,
            log: Some(vec!["local".into()]),
        }),
        memory_limit: Some(true),
        swap_limit: Some(false),
        cpu_cfs_period: Some(true),
        cpu_cfs_quota: Some(true),
        cpu_shares: Some(true),
        cpu_set: Some(false),
        pids_limit: Some(true),
        oom_kill_disable: Some(false),
        ipv4_forwarding: Some(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|s| s.trim() == "1"),
        ),
        debug: Some(false),
        nfd: Some(std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64)),
        n_goroutines: Some(std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count() as i64)),
        system_time: Some(ironpod_images::time::now_rfc3339()),
        logging_driver: Some("local".into()),
        cgroup_driver: Some(SystemInfoCgroupDriverEnum::CGROUPFS),
        cgroup_version: Some(SystemInfoCgroupVersionEnum::_2),
        n_events_listener: Some(0),
        kernel_version: Some(kernel_release()),
        operating_system: Some(os),
        os_version: Some(os_version),
        os_type: Some("linux".into()),
        architecture: Some(std::env::consts::ARCH.into()),
        ncpu: Some(std::thread::available_parallelism().map_or(1, |n| n.get() as i64)),
        mem_total: Some(mem_total()),
        index_server_address: Some("https://index.docker.io/v1/".into()),
        registry_config: Some(RegistryServiceConfig {
            insecure_registry_cidrs: Some(vec!["127.0.0.0/8".into()]),
            index_configs: Some(HashMap::from([("docker.io".to_string(), index)])),
            mirrors: Some(Vec::new()),
        }),
        generic_resources: None,
        http_proxy: Some(env_any(&["HTTP_PROXY", "http_proxy"])),
        https_proxy: Some(env_any(&["HTTPS_PROXY", "https_proxy"])),
        no_proxy: Some(env_any(&["NO_PROXY", "no_proxy"])),
        name: Some(hostname()),
        labels: Some(Vec::new()),
        experimental_build: Some(false),
        server_version: Some(VERSION.into()),
        runtimes: Some(HashMap::from([(
            "ironpod".to_string(),
            Runtime { path: vmm, runtime_args: None, status: None },
        )])),
        default_runtime: Some("ironpod".into()),
        swarm: Some(SwarmInfo {
            node_id: Some(String::new()),
            node_addr: Some(String::new()),
            local_node_state: Some(LocalNodeState::INACTIVE),
            control_available: Some(false),
            error: Some(String::new()),
            remote_managers: None,
            nodes: None,
            managers: None,
            cluster: None,
        }),
        // Pods outlive the service: each has its own monitor process.
        live_restore_enabled: Some(true),
        isolation: None,
        init_binary: Some(String::new()),
        containerd_commit: Some(Commit { id: Some(String::new()) }),
        runc_commit: Some(Commit { id: Some(String::new()) }),
        init_commit: Some(Commit { id: Some(String::new()) }),
        security_options: Some(vec!["name=seccomp,profile=default".into(), "name=cgroupns".into()]),
        product_license: None,
        default_address_pools: None,
        firewall_backend: None,
        discovered_devices: None,
        nri: None,
        warnings: Some(Vec::new()),
        cdi_spec_dirs: None,
        containerd: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts() {
        assert!(!kernel_release().is_empty());
        assert!(mem_total() > 0);
        assert_eq!(go_arch(), if cfg!(target_arch = "x86_64") { "amd64" } else { go_arch() });
    }

    #[test]
    fn host_id_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let a = host_id(d.path());
        assert_eq!(a.len(), 64);
        assert_eq!(host_id(d.path()), a);
    }
}
