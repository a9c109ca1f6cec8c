//! `ironpod system service` driven by the real docker CLI (Debian's docker.io 20.10) and by
//! raw HTTP (curl): version, info, ping, container and image lists with their filters, API
//! versions, errors, the socket's mode and the idle stop. Containers here are records in the
//! state (no VM boots on the host); the routes that run pods are tested in the rig.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ironpod_state::{Record, State};

/// A container record as the CLI writes it, with the given command.
fn record(root: &Path, image: &str, manifest: &str, name: &str, args: &[&str]) -> Record {
    let id = ironpod_ids::new_id().unwrap();
    let spec = serde_json::json!({ "process": { "args": args } }).to_string();
    let options = serde_json::json!({ "command": args }).to_string();
    let r = Record::new(&id, name, image, manifest, options, spec);
    State::open(root).unwrap().insert(&r).unwrap();
    r
}

/// An image's id (config digest) without `sha256:`, as `ironpod image inspect` says it.
fn full_id_of(root: &Path, r: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(root, &["image", "inspect", r]))).unwrap();
    v[0]["id"].as_str().unwrap()[7..].to_string()
}

/// Its first 12 hex digits, as Docker shows ids.
fn id_of_image(root: &Path, r: &str) -> String {
    full_id_of(root, r)[..12].to_string()
}

#[test]
fn docker_cli_lists_what_ironpod_has() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let tar = tarball(dir.path(), "demo", "hi");
    ok(&ironpod(&root, &["import", "-c", "LABEL tier=web", tar.to_str().unwrap(), "demo"]));
    ok(&ironpod(&root, &["import", tar.to_str().unwrap(), "other:v2"]));
    let manifest = manifest_of(&root, "demo");
    let other = manifest_of(&root, "other:v2");

    // Three containers: exited with 3, created, and one whose pod monitor is alive (a
    // stand-in process: no VM boots on the host).
    let exited = record(&root, "demo", &manifest, "done", &["sh", "-c", "exit 3"]);
    let state = State::open(&root).unwrap();
    state.set_exited(&exited.id, 3, false, None, &ironpod_images::time::now_rfc3339()).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // distinct creation seconds
    let created = record(&root, "other:v2", &other, "fresh", &["true"]);
    std::thread::sleep(Duration::from_millis(1100));
    let running = record(&root, "demo", &manifest, "busy", &["sleep", "1000"]);
    let mut monitor = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = monitor.id() as i32;
    state.set_monitor(&running.id, pid, ironpod_ids::process_start(pid)).unwrap();
    state
        .set_running(&running.id, 1, 1, "/nonexistent", &ironpod_images::time::now_rfc3339())
        .unwrap();

    let socket = dir.path().join("run/docker.sock");
    let svc = Service::start(&root, &socket, &[]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "root-only socket");

    // version and info: the server side is ironpod's, API 1.41.
    let v = ok(&svc.docker(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}} {{.Server.Version}}",
    ]));
    assert_eq!(v.trim(), format!("1.41 linux {}", env!("CARGO_PKG_VERSION")));
    let info = ok(&svc.docker(&["info", "--format", "{{json .}}"]));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["Containers"], 3, "{info}");
    assert_eq!(info["ContainersRunning"], 1);
    assert_eq!(info["ContainersStopped"], 2);
    assert_eq!(info["Images"], 2);
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(info["DockerRootDir"], root.to_str().unwrap());
    assert_eq!(info["OSType"], "linux");
    assert!(info["NCPU"].as_i64().unwrap() >= 1 && info["MemTotal"].as_i64().unwrap() > 0);

    // ps: running only by default, all with -a, newest first; Docker's columns.
    let fmt = "{{.ID}} {{.Names}} {{.Image}} {{.Command}} {{.State}}|{{.Status}}";
    let ps = lines(&svc.docker(&["ps", "--no-trunc", "--format", fmt]));
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(
        ps[0].starts_with(&format!("{} busy demo \"sleep 1000\" running|Up ", running.id)),
        "{ps:?}"
    );
    let all = lines(&svc.docker(&["ps", "-a", "--format", "{{.Names}} {{.State}}|{{.Status}}"]));
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0].split(' ').next(), Some("busy"));
    assert_eq!(all[1], "fresh created|Created");
    assert!(all[2].starts_with("done exited|Exited (3) "), "{all:?}");
    let table = ok(&svc.docker(&["ps", "-a"]));
    assert!(table.starts_with("CONTAINER ID   IMAGE"), "{table}");
    assert!(table.contains(&created.id[..12]) && table.contains("other:v2"), "{table}");

    // Filters, as the docker CLI sends them.
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["ps", "-a", "--format", "{{.Names}}"];
        a.extend_from_slice(args);
        lines(&svc.docker(&a))
    };
    assert_eq!(names(&["--filter", "status=exited"]), ["done"]);
    assert_eq!(names(&["--filter", "exited=3"]), ["done"]);
    assert!(names(&["--filter", "exited=0"]).is_empty());
    assert_eq!(names(&["--filter", "name=fre"]), ["fresh"]);
    assert_eq!(names(&["--filter", "name=^/d"]), ["done"]);
    assert_eq!(names(&["--filter", &format!("id={}", &created.id[..10])]), ["fresh"]);
    assert_eq!(names(&["--filter", "label=tier=web"]), ["busy", "done"]);
    assert_eq!(names(&["--filter", "label=tier"]), ["busy", "done"]);
    assert!(names(&["--filter", "label=tier=db"]).is_empty());
    assert_eq!(names(&["--filter", "ancestor=other:v2"]), ["fresh"]);
    assert_eq!(names(&["--filter", "before=busy"]), ["fresh", "done"]);
    assert_eq!(names(&["--filter", "since=done"]), ["busy", "fresh"]);
    assert_eq!(names(&["--last", "1"]), ["busy"]);
    assert_eq!(names(&["-n", "2", "--filter", "status=exited"]), ["done"]);
    let q = lines(&svc.docker(&["ps", "-aq"]));
    assert_eq!(q, [&running.id[..12], &created.id[..12], &exited.id[..12]]);
    fails_with(&svc.docker(&["ps", "--filter", "colour=red"]), "invalid filter 'colour'");
    fails_with(&svc.docker(&["ps", "--filter", "status=sleepy"]), "invalid filter 'status=sleepy'");
    fails_with(&svc.docker(&["ps", "--filter", "before=nosuch"]), "No such container: nosuch");
    fails_with(&svc.docker(&["ps", "--filter", "name=("]), "invalid filter 'name=('");

    // inspect: containers by name, id and id prefix; images by name and id.
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&svc.docker(&["container", "inspect", "done"]))).unwrap();
    let c = &doc[0];
    assert_eq!(c["Id"], exited.id.as_str());
    assert_eq!(c["Name"], "/done");
    assert_eq!(
        (c["Path"].as_str(), c["Args"].clone()),
        (Some("sh"), serde_json::json!(["-c", "exit 3"]))
    );
    assert_eq!(c["State"]["Status"], "exited");
    assert_eq!(c["State"]["ExitCode"], 3);
    assert_eq!(c["State"]["Running"], false);
    assert_eq!(c["Config"]["Image"], "demo");
    assert_eq!(c["Config"]["Labels"]["tier"], "web");
    assert_eq!(c["HostConfig"]["Runtime"], "ironpod");
    assert!(c["Image"].as_str().unwrap().starts_with("sha256:"));
    let fmt = ok(&svc.docker(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.Name}}",
        &running.id[..8],
        "fresh",
    ]));
    assert_eq!(fmt.lines().collect::<Vec<_>>(), ["running /busy", "created /fresh"]);
    fails_with(&svc.docker(&["container", "inspect", "nosuch"]), "No such container: nosuch");
    let img: serde_json::Value =
        serde_json::from_str(&ok(&svc.docker(&["image", "inspect", "demo"]))).unwrap();
    assert_eq!(img[0]["RepoTags"], serde_json::json!(["demo:latest"]));
    assert_eq!(img[0]["Config"]["Labels"]["tier"], "web");
    assert_eq!(img[0]["ContainerConfig"]["Labels"]["tier"], "web");
    assert_eq!(img[0]["Os"], "linux");
    assert_eq!(img[0]["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
    let by_id = ok(&svc.docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &id_of_image(&root, "other:v2"),
    ]));
    assert_eq!(by_id.trim(), format!("sha256:{}", full_id_of(&root, "other:v2")));
    fails_with(&svc.docker(&["image", "inspect", "nosuch"]), "No such image: nosuch");
    fails_with(&svc.docker(&["inspect", "nosuch"]), "No such object: nosuch");

    // images: names, ids, labels, filters.
    let imgs = lines(&svc.docker(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]));
    assert_eq!(imgs.len(), 2, "{imgs:?}");
    assert!(imgs.contains(&format!("demo:latest {}", id_of_image(&root, "demo"))), "{imgs:?}");
    let refs =
        |f: &str| lines(&svc.docker(&["images", "--format", "{{.Repository}}", "--filter", f]));
    assert_eq!(refs("reference=dem*"), ["demo"]);
    assert_eq!(refs("reference=other:v2"), ["other"]);
    assert_eq!(refs("label=tier=web"), ["demo"]);
    assert!(refs("dangling=true").is_empty());
    fails_with(&svc.docker(&["images", "--filter", "shape=round"]), "invalid filter 'shape'");
    let table = ok(&svc.docker(&["images"]));
    assert!(table.starts_with("REPOSITORY   TAG") && table.contains("v2"), "{table}");

    // API versions: older ones are served, a newer one is refused as Docker does.
    assert!(
        ok(&svc.docker_env(&["ps", "-a", "-q"], &[("DOCKER_API_VERSION", "1.30")])).lines().count()
            == 3
    );
    fails_with(
        &svc.docker_env(&["ps"], &[("DOCKER_API_VERSION", "1.99")]),
        "client version 1.99 is too new",
    );

    // Raw HTTP: ping (GET and HEAD), Docker's headers, JSON errors.
    let (head, body) = svc.curl(&["http://d/_ping"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "OK");
    let lower = head.to_ascii_lowercase();
    for h in ["api-version: 1.41", "ostype: linux", "builder-version: 1", "cache-control: no-cache"]
    {
        assert!(lower.contains(h), "{h} missing in {head}");
    }
    let (head, body) = svc.curl(&["-I", "http://d/v1.41/_ping"]);
    assert!(head.starts_with("HTTP/1.1 200") && body.is_empty(), "{head}|{body}");
    let (head, body) = svc.curl(&["http://d/v1.41/no/such/route"]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["message"],
        "page not found"
    );
    let (head, body) = svc.curl(&["http://d/containers/json?filters=%7Bnot-json"]);
    assert!(head.starts_with("HTTP/1.1 400") && body.contains("invalid filters"), "{head}{body}");

    monitor.kill().unwrap();
    monitor.wait().unwrap();
}

#[test]
fn idle_service_stops_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let socket = dir.path().join("d.sock");
    let mut svc = Service::start(&root, &socket, &["--time", "1"]);
    ok(&svc.docker(&["version"]));
    // A second service on the same socket is refused while the first one serves.
    let second = ironpod(&root, &["system", "service", "--socket", socket.to_str().unwrap()]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"), "{second:?}");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = svc.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "the idle service did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket file is removed");
    // Bad addresses are refused before anything is bound.
    let bad = ironpod(&root, &["system", "service", "--socket", "tcp://127.0.0.1:2375"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not unix:///"), "{bad:?}");
}

#[test]
fn socket_activated_by_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let unused = dir.path().join("unused.sock");
    // systemd's own tool: listens, and on the first connection execs the service with the
    // socket as descriptor 3 (LISTEN_FDS=1, LISTEN_PID = its pid).
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(env!("CARGO_BIN_EXE_ironpod"))
        .arg("--root")
        .arg(dir.path().join("state"))
        .args(["system", "service", "--time", "1", "--socket"])
        .arg(format!("unix://{}", unused.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !socket.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "systemd-socket-activate did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let svc = Service { child: Command::new("true").spawn().unwrap(), socket: socket.clone() };
    let v = ok(&svc.docker(&["version", "--format", "{{.Server.APIVersion}}"]));
    assert_eq!(v.trim(), "1.41");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = activator.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the activated service did not stop when idle"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!unused.exists(), "the passed socket was used, not --socket");
    assert!(socket.exists(), "systemd's socket is systemd's to remove");
}

#[test]
fn docker_cli_tags_removes_and_shows_history() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let tar = tarball(dir.path(), "demo", "hi");
    ok(&ironpod(&root, &["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap(), "demo"]));
    let svc = Service::start(&root, &dir.path().join("d.sock"), &[]);

    ok(&svc.docker(&["tag", "demo", "localhost:5000/team/demo:v9"]));
    let names = ok(&ironpod(&root, &["images"]));
    assert!(names.contains("localhost:5000/team/demo") && names.contains("v9"), "{names}");
    let inspect = ok(&svc.docker(&[
        "image",
        "inspect",
        "--format",
        "{{.RepoTags}}",
        "localhost:5000/team/demo:v9",
    ]));
    assert_eq!(inspect.trim(), "[demo:latest localhost:5000/team/demo:v9]");
    fails_with(&svc.docker(&["tag", "nosuch", "x:1"]), "No such image: nosuch");
    fails_with(&svc.docker(&["tag", "demo", "Bad Name"]), "invalid reference format");

    // history: newest first, the image's id on top.
    let h = lines(&svc.docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}|{{.Size}}",
        "demo",
    ]));
    assert!(!h.is_empty(), "{h:?}");
    assert!(h[0].starts_with(&format!("sha256:{}|", full_id_of(&root, "demo"))), "{h:?}");
    fails_with(&svc.docker(&["history", "nosuch"]), "No such image: nosuch");

    // rmi of one name only untags; an image a container holds needs -f; the last name goes
    // with its content.
    let out = ok(&svc.docker(&["rmi", "localhost:5000/team/demo:v9"]));
    assert_eq!(out.trim(), "Untagged: localhost:5000/team/demo:v9");
    let store = ironpod_images::ImageStore::open(&root).unwrap();
    store.lease("a-container", "demo").unwrap();
    fails_with(&svc.docker(&["rmi", "demo"]), "must force");
    let out = ok(&svc.docker(&["rmi", "-f", "demo"]));
    assert_eq!(out.trim(), "Untagged: demo:latest", "content stays while leased");
    store.release("a-container").unwrap();
    ok(&ironpod(&root, &["import", tar.to_str().unwrap(), "again"]));
    let out = ok(&svc.docker(&["rmi", "again"]));
    assert!(out.starts_with("Untagged: again:latest\nDeleted: sha256:"), "{out}");
    fails_with(&svc.docker(&["rmi", "again"]), "No such image: again");
    assert!(ok(&svc.docker(&["images", "-q"])).trim().is_empty());
}

#[test]
fn docker_cli_manages_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let svc = Service::start(&root, &dir.path().join("d.sock"), &[]);

    let name = ok(&svc.docker(&["volume", "create", "--label", "app=web", "webdata"]));
    assert_eq!(name.trim(), "webdata");
    ok(&svc.docker(&["volume", "create", "cache"]));
    let anon = ok(&svc.docker(&["volume", "create"]));
    assert_eq!(anon.trim().len(), 64, "an unnamed volume gets a random name: {anon}");
    // The CLI sees them, and its volumes are the service's.
    ok(&ironpod(&root, &["volume", "create", "fromcli"]));
    let ls = lines(&svc.docker(&["volume", "ls", "-q"]));
    assert_eq!(ls.len(), 4, "{ls:?}");
    assert!(ok(&ironpod(&root, &["volume", "ls", "-q"])).contains("webdata"));

    let v: serde_json::Value =
        serde_json::from_str(&ok(&svc.docker(&["volume", "inspect", "webdata"]))).unwrap();
    assert_eq!(v[0]["Labels"]["app"], "web");
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Scope"], "local");
    let mp = v[0]["Mountpoint"].as_str().unwrap();
    assert!(Path::new(mp).is_dir() && mp.starts_with(root.to_str().unwrap()), "{mp}");
    std::fs::write(Path::new(mp).join("f"), vec![7u8; 64 * 1024]).unwrap();
    fails_with(&svc.docker(&["volume", "inspect", "nosuch"]), "No such volume: nosuch");
    fails_with(&svc.docker(&["volume", "create", "-d", "nfs", "x"]), "not found");
    fails_with(&svc.docker(&["volume", "create", "-o", "type=tmpfs", "x"]), "not supported");
    fails_with(&svc.docker(&["volume", "create", "a/b"]), "invalid volume name");

    // A container (a record: no VM on the host) that mounts "webdata" holds it.
    let opts = ironpod_pods::spec::RunOptions {
        volumes: vec![ironpod_volumes::parse("webdata:/data").unwrap()],
        ..Default::default()
    };
    let r = Record::new(
        &ironpod_ids::new_id().unwrap(),
        "holder",
        "demo",
        "sha256:00",
        serde_json::to_string(&opts).unwrap(),
        "{}".into(),
    );
    State::open(&root).unwrap().insert(&r).unwrap();
    let filtered = |f: &str| lines(&svc.docker(&["volume", "ls", "-q", "--filter", f]));
    assert_eq!(filtered("label=app=web"), ["webdata"]);
    assert_eq!(filtered("name=cach"), ["cache"]);
    assert_eq!(filtered("dangling=false"), ["webdata"]);
    assert_eq!(filtered("dangling=true").len(), 3);
    fails_with(&svc.docker(&["volume", "ls", "--filter", "size=1"]), "invalid filter 'size'");
    fails_with(&svc.docker(&["volume", "rm", "webdata"]), "in use");

    let out = ok(&svc.docker(&["volume", "rm", "cache"]));
    assert_eq!(out.trim(), "cache");
    fails_with(&svc.docker(&["volume", "rm", "cache"]), "No such volume: cache");
    ok(&svc.docker(&["volume", "rm", "-f", "cache"]));

    // prune: only unused volumes, label filters honoured.
    let out = ok(&svc.docker(&["volume", "prune", "-f", "--filter", "label=none=here"]));
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    let out = ok(&svc.docker(&["volume", "prune", "-f"]));
    assert!(
        out.contains("fromcli") && out.contains(anon.trim()) && !out.contains("webdata"),
        "{out}"
    );
    assert_eq!(lines(&svc.docker(&["volume", "ls", "-q"])), ["webdata"]);
    State::open(&root).unwrap().delete(&r.id).unwrap();
    let out = ok(&svc.docker(&["volume", "prune", "-f"]));
    assert!(out.contains("webdata") && out.contains("Total reclaimed space: 6"), "{out}");
    assert!(!Path::new(mp).exists());
}

/// `GET path` on a TCP address (retried while nothing listens yet): status line and body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => assert!(t.elapsed() < Duration::from_secs(10), "{addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_listener_counts_api_requests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let socket = dir.path().join("d.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let svc = Service::start(&root, &socket, &["--metrics-addr", &addr]);
    ok(&svc.docker(&["version"]));
    ok(&svc.docker(&["ps", "-a"]));
    assert!(!svc.docker(&["inspect", "nosuch"]).status.success());
    let (head, body) = http_get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    for want in [
        r#"ironpod_api_requests_total{method="GET",route="/version",code="200"} 1"#,
        r#"ironpod_api_requests_total{method="GET",route="/containers/json",code="200"} 1"#,
        r#"ironpod_api_requests_total{method="GET",route="/containers/{id}/json",code="404"}"#,
        "# TYPE ironpod_pod_start_duration_seconds histogram",
    ] {
        assert!(body.lines().any(|l| l.starts_with(want)), "{want} in\n{body}");
    }
    let (head, _) = http_get(&addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // An address already in use is an error at start, not a service without metrics.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    let other = dir.path().join("e.sock");
    let o = ironpod(
        &root,
        &[
            "system",
            "service",
            "--socket",
            &format!("unix://{}", other.display()),
            "--metrics-addr",
            &taken,
        ],
    );
    assert!(!o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("metrics listener"), "{o:?}");
}
