//! `ironpod system service` managing networks, images (pull, push, save, load, prune) and
//! containers that do not run (create, rename, connect, prune) for the real docker CLI
//! (Debian's docker.io 20.10), against a real registry (Debian's docker-registry). Nothing
//! here boots a VM: the routes that run pods are tested in the rig.

mod common;

use std::path::Path;

use common::*;

fn inspect(svc: &Service, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.insert(1, "inspect");
    serde_json::from_str(&ok(&svc.docker(&a))).unwrap()
}

fn network_of(svc: &Service, container: &str) -> serde_json::Value {
    inspect(svc, &["container", container])[0]["NetworkSettings"]["Networks"].clone()
}

#[test]
fn docker_cli_manages_networks_and_containers_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let tar = tarball(dir.path(), "demo", "hi");
    ok(&ironpod(&root, &["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap(), "demo"]));
    let svc = Service::start(&root, &dir.path().join("d.sock"), &[]);

    // create, ls, inspect; the CLI sees the network and the other way round.
    let id = ok(&svc.docker(&[
        "network",
        "create",
        "--label",
        "tier=back",
        "--subnet",
        "10.213.7.0/24",
        "backend",
    ]));
    assert_eq!(id.trim().len(), 64, "{id}");
    ok(&ironpod(&root, &["network", "create", "--internal", "fromcli"]));
    let ls = lines(&svc.docker(&["network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"]));
    assert_eq!(ls, ["backend bridge local", "bridge bridge local", "fromcli bridge local"]);
    assert!(ok(&ironpod(&root, &["network", "ls", "-q"])).contains("backend"));
    let n = inspect(&svc, &["network", "backend"]);
    assert_eq!(n[0]["Id"], id.trim());
    assert_eq!(n[0]["Labels"]["tier"], "back");
    assert_eq!(n[0]["IPAM"]["Config"][0]["Subnet"], "10.213.7.0/24");
    assert_eq!(n[0]["IPAM"]["Config"][0]["Gateway"], "10.213.7.1");
    assert_eq!(n[0]["Internal"], false);
    assert_eq!(inspect(&svc, &["network", "fromcli"])[0]["Internal"], true);
    let f = |filter: &str| lines(&svc.docker(&["network", "ls", "-q", "--filter", filter]));
    assert_eq!(f("label=tier=back"), [id.trim()[..12].to_string()]);
    assert_eq!(f("name=fromc").len(), 1);
    assert_eq!(f("type=builtin").len(), 1);
    fails_with(&svc.docker(&["network", "ls", "--filter", "nope=1"]), "invalid filter 'nope'");

    // What ironpod cannot do is refused by name.
    fails_with(&svc.docker(&["network", "create", "backend"]), "already exists");
    fails_with(&svc.docker(&["network", "create", "-d", "overlay", "x"]), "not found");
    fails_with(&svc.docker(&["network", "create", "--ipv6", "x"]), "IPv6");
    fails_with(
        &svc.docker(&[
            "network",
            "create",
            "--ip-range",
            "10.213.9.0/25",
            "--subnet",
            "10.213.9.0/24",
            "x",
        ]),
        "IPRange",
    );
    fails_with(
        &svc.docker(&["network", "create", "-o", "com.docker.network.bridge.name=br9", "x"]),
        "network option",
    );
    fails_with(&svc.docker(&["network", "create", "--subnet", "10.213.7.128/25", "x"]), "overlaps");
    fails_with(&svc.docker(&["network", "create", "none"]), "predefined");
    fails_with(&svc.docker(&["network", "inspect", "nosuch"]), "No such network: nosuch");
    fails_with(&svc.docker(&["network", "rm", "bridge"]), "pre-defined");

    // Containers that have not started: create on a network with aliases, connect and
    // disconnect (a pod's one network card is chosen before its VM starts).
    ok(&svc.docker(&[
        "create",
        "--name",
        "api",
        "--network",
        "backend",
        "--network-alias",
        "svc",
        "demo",
    ]));
    let nets = network_of(&svc, "api");
    let aliases = nets["backend"]["Aliases"].as_array().unwrap();
    let short = &inspect(&svc, &["container", "api"])[0]["Id"].as_str().unwrap()[..12].to_string();
    assert!(aliases.contains(&short.as_str().into()), "compose looks for the short id: {nets}");
    assert!(aliases.contains(&"svc".into()) && aliases.contains(&"api".into()), "{nets}");
    assert_eq!(nets["backend"]["NetworkID"], id.trim());
    ok(&svc.docker(&["create", "--name", "loner", "demo"]));
    assert!(network_of(&svc, "loner").get("bridge").is_some());
    // From the default network a container moves to the one named (one card).
    ok(&svc.docker(&["network", "connect", "--alias", "lone", "backend", "loner"]));
    let nets = network_of(&svc, "loner");
    assert!(
        nets.get("bridge").is_none()
            && nets["backend"]["Aliases"].as_array().unwrap().contains(&"lone".into()),
        "{nets}"
    );
    fails_with(&svc.docker(&["network", "connect", "fromcli", "loner"]), "one network card");
    fails_with(
        &svc.docker(&["network", "connect", "--ip", "10.213.7.9", "backend", "loner"]),
        "fixed address",
    );
    fails_with(&svc.docker(&["network", "disconnect", "fromcli", "loner"]), "is not connected");
    ok(&svc.docker(&["network", "disconnect", "backend", "loner"]));
    assert_eq!(network_of(&svc, "loner"), serde_json::json!({}));
    // The CLI's connect and disconnect are the same operations.
    ok(&ironpod(&root, &["network", "connect", "--alias", "l2", "fromcli", "loner"]));
    let nets = network_of(&svc, "loner");
    assert!(nets["fromcli"]["Aliases"].as_array().unwrap().contains(&"l2".into()), "{nets}");
    ok(&ironpod(&root, &["network", "disconnect", "fromcli", "loner"]));
    assert_eq!(network_of(&svc, "loner"), serde_json::json!({}));
    ok(&svc.docker(&["network", "connect", "fromcli", "loner"]));
    assert!(network_of(&svc, "loner").get("fromcli").is_some());
    fails_with(
        &svc.docker(&["network", "connect", "backend", "nosuch"]),
        "No such container: nosuch",
    );
    // (The docker CLI drops aliases on the default network; the API refuses them.)
    let (head, body) = svc.curl(&[
        "-XPOST",
        "-HContent-Type: application/json",
        "-d",
        r#"{"Image":"demo","NetworkingConfig":{"EndpointsConfig":{"bridge":{"Aliases":["x"]}}}}"#,
        "http://d/v1.41/containers/create",
    ]);
    assert!(
        head.starts_with("HTTP/1.1 400") && body.contains("user-defined networks"),
        "{head}{body}"
    );
    let (head, body) = svc.curl(&[
        "-XPOST",
        "-HContent-Type: application/json",
        "-d",
        r#"{"Image":"demo","NetworkingConfig":{"EndpointsConfig":{"backend":{},"bridge":{}}}}"#,
        "http://d/v1.41/containers/create",
    ]);
    assert!(head.starts_with("HTTP/1.1 400") && body.contains("one network card"), "{head}{body}");
    // The CLI's run options are the same: `ironpod inspect` shows the network chosen.
    let cli: serde_json::Value =
        serde_json::from_str(&ok(&ironpod(&root, &["inspect", "loner"]))).unwrap();
    assert!(cli.to_string().contains("fromcli"), "{cli}");

    // rename.
    ok(&svc.docker(&["rename", "loner", "single"]));
    assert_eq!(inspect(&svc, &["container", "single"])[0]["Name"], "/single");
    fails_with(&svc.docker(&["rename", "single", "api"]), "already in use");
    fails_with(&svc.docker(&["rename", "single", "no/slash"]), "Invalid container name");
    fails_with(&svc.docker(&["rename", "nosuch", "x"]), "No such container: nosuch");

    // Only running pods hold a network: one that created containers name can go.
    ok(&svc.docker(&["network", "rm", "fromcli"]));
    assert!(ok(&ironpod(&root, &["network", "ls", "-q"])).lines().all(|l| l != "fromcli"));

    // Container prune: every container that does not run, label filters honoured.
    ok(&svc.docker(&["create", "--label", "keep=yes", "--name", "kept", "demo"]));
    let out = ok(&svc.docker(&["container", "prune", "-f", "--filter", "label!=keep=yes"]));
    assert!(out.contains("Deleted Containers:") && out.contains("Total reclaimed space"), "{out}");
    let left = lines(&svc.docker(&["ps", "-a", "--format", "{{.Names}}"]));
    assert_eq!(left, ["kept"]);
    assert!(!Path::new(&root)
        .join("containers")
        .read_dir()
        .map(|d| d.count() > 1)
        .unwrap_or(false));

    // Network prune: the unused user networks, by label.
    ok(&ironpod(&root, &["network", "create", "--label", "tmp=2", "clitmp"]));
    let out = ok(&ironpod(&root, &["network", "prune", "--label", "tmp=2"]));
    assert_eq!(out.trim(), "clitmp");
    ok(&svc.docker(&["network", "create", "--label", "tmp=1", "scratch"]));
    let out = ok(&svc.docker(&["network", "prune", "-f", "--filter", "label=tmp"]));
    assert!(out.contains("scratch") && !out.contains("backend"), "{out}");
    let out = ok(&svc.docker(&["network", "prune", "-f"]));
    assert!(out.contains("backend"), "{out}");
    assert_eq!(lines(&svc.docker(&["network", "ls", "-q"])).len(), 1, "the default stays");
}

#[test]
fn docker_cli_pushes_pulls_saves_loads_and_prunes_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let tar = tarball(dir.path(), "demo", "hi");
    ok(&ironpod(&root, &["import", "-c", "LABEL tier=web", tar.to_str().unwrap(), "demo"]));
    let reg = Registry::start();
    let svc = Service::start(&root, &dir.path().join("d.sock"), &[]);
    let repo = format!("{}/team/demo", reg.host());

    // push: one tag, then every tag (-a), with Docker's progress messages.
    ok(&svc.docker(&["tag", "demo", &format!("{repo}:v1")]));
    let out = ok(&svc.docker(&["push", &format!("{repo}:v1")]));
    assert!(out.contains(&format!("The push refers to repository [{repo}]")), "{out}");
    assert!(out.contains("Pushed") && out.contains("v1: digest: sha256:"), "{out}");
    ok(&svc.docker(&["tag", "demo", &format!("{repo}:v2")]));
    let out = ok(&svc.docker(&["push", "-a", &repo]));
    assert!(out.contains("v1: digest:") && out.contains("v2: digest:"), "{out}");
    assert!(out.contains("Layer already exists"), "{out}");
    let listed = skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{repo}")]);
    let tags = String::from_utf8_lossy(&listed.stdout);
    assert!(tags.contains("\"v1\"") && tags.contains("\"v2\""), "{tags}");
    fails_with(&svc.docker(&["push", &format!("{repo}:nosuch")]), "does not exist locally");

    // pull: into an empty store, then up to date; a missing image is a 404.
    for t in ["v1", "v2"] {
        ok(&svc.docker(&["rmi", &format!("{repo}:{t}")]));
    }
    ok(&svc.docker(&["rmi", "demo"]));
    assert!(ok(&svc.docker(&["images", "-q"])).trim().is_empty());
    let out = ok(&svc.docker(&["pull", &format!("{repo}:v1")]));
    assert!(out.contains("v1: Pulling from team/demo"), "{out}");
    assert!(out.contains(&format!("Status: Downloaded newer image for {repo}:v1")), "{out}");
    assert!(out.contains("Digest: sha256:"), "{out}");
    let out = ok(&svc.docker(&["pull", &format!("{repo}:v1")]));
    assert!(out.contains("Status: Image is up to date"), "{out}");
    let labels = inspect(&svc, &["image", &format!("{repo}:v1")])[0]["Config"]["Labels"].clone();
    assert_eq!(labels["tier"], "web");
    fails_with(&svc.docker(&["pull", &format!("{}/team/nosuch:1", reg.host())]), "not found");
    fails_with(&svc.docker(&["pull", "Bad Name"]), "invalid reference format");
    // The CLI sees what the service pulled.
    assert!(ok(&ironpod(&root, &["images"])).contains("team/demo"));

    // save and load.
    let archive = dir.path().join("saved.tar");
    ok(&svc.docker(&["save", "-o", archive.to_str().unwrap(), &format!("{repo}:v1")]));
    assert!(std::fs::metadata(&archive).unwrap().len() > 1024);
    ok(&svc.docker(&["rmi", &format!("{repo}:v1")]));
    let out = ok(&svc.docker(&["load", "-i", archive.to_str().unwrap()]));
    assert_eq!(out.trim(), format!("Loaded image: {repo}:v1"));
    std::fs::write(dir.path().join("junk.tar"), b"not a tar at all").unwrap();
    let o = svc.docker(&["load", "-i", dir.path().join("junk.tar").to_str().unwrap()]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("bad tar archive"),
        "{o:?}"
    );
    let other = dir.path().join("other.tar");
    fails_with(
        &svc.docker(&["save", "-o", other.to_str().unwrap(), "nosuch"]),
        "No such image: nosuch",
    );
    assert_eq!(
        std::fs::read_dir(root.join("service-tmp")).unwrap().count(),
        0,
        "archives pass through unlinked files"
    );

    // prune: nothing dangles; -a removes what no container uses.
    let out = ok(&svc.docker(&["image", "prune", "-f"]));
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    ok(&ironpod(&root, &["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap(), "kept:1"]));
    ok(&svc.docker(&["create", "--name", "user", "kept:1"]));
    let out = ok(&svc.docker(&["image", "prune", "-a", "-f", "--filter", "label=tier=web"]));
    assert!(out.contains(&format!("untagged: {repo}:v1")), "{out}");
    let left = lines(&svc.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert_eq!(left, ["kept:1"], "not labelled tier=web");
    let out = ok(&svc.docker(&["image", "prune", "-a", "-f"]));
    assert!(!out.contains("kept"), "in use by a container: {out}");
    ok(&svc.docker(&["rm", "user"]));
    let out = ok(&svc.docker(&["image", "prune", "-a", "-f"]));
    assert!(out.contains("untagged: kept:1") && out.contains("deleted: sha256:"), "{out}");
    assert!(ok(&svc.docker(&["images", "-q"])).trim().is_empty());
}

#[test]
fn events_stream_to_docker_and_ironpod() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let tar = tarball(dir.path(), "demo", "hi");
    let svc = Service::start(&root, &dir.path().join("d.sock"), &[]);
    let t0 = ironpod_events::now_nanos() as f64 / 1e9 - 1.0;

    // Following: `docker events` sees what the CLI does, as it happens.
    let mut follow = std::process::Command::new(docker_cli())
        .arg("-H")
        .arg(format!("unix://{}", svc.socket.display()))
        .args(["events", "--format", "{{json .}}", "--filter", "type=network"])
        .env("DOCKER_CONFIG", dir.path().join("docker-config"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(&ironpod(&root, &["network", "create", "--label", "app=x", "evnet"]));
    let mut first = String::new();
    std::io::BufReader::new(follow.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (v["Type"].as_str(), v["Action"].as_str()),
        (Some("network"), Some("create")),
        "{v}"
    );
    assert_eq!(v["Actor"]["Attributes"]["name"], "evnet");

    // The past, between two times, filtered: images, volumes, containers.
    ok(&ironpod(&root, &["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap(), "demo"]));
    ok(&svc.docker(&["tag", "demo", "demo:v2"]));
    ok(&svc.docker(&["volume", "create", "evvol"]));
    ok(&svc.docker(&["create", "--name", "evc", "--label", "tier=web", "demo"]));
    ok(&svc.docker(&["rename", "evc", "evc2"]));
    ok(&svc.docker(&["rm", "evc2"]));
    ok(&svc.docker(&["rmi", "demo:v2"]));
    ok(&svc.docker(&["network", "rm", "evnet"]));
    let until = format!("{:.3}", ironpod_events::now_nanos() as f64 / 1e9 + 0.5);
    let since = format!("{t0:.3}");
    let past = |filters: &[&str]| {
        let mut args = vec![
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--format",
            "{{.Type}} {{.Action}}",
        ];
        for f in filters {
            args.extend(["--filter", f]);
        }
        lines(&svc.docker(&args))
    };
    let all = past(&[]);
    for want in [
        "network create",
        "image import",
        "image tag",
        "volume create",
        "container create",
        "container rename",
        "container destroy",
        "image untag",
        "network destroy",
    ] {
        assert!(all.iter().any(|l| l == want), "{want} in {all:?}");
    }
    assert_eq!(
        past(&["type=container"]),
        ["container create", "container rename", "container destroy"]
    );
    assert_eq!(past(&["container=evc", "event=create"]), ["container create"]);
    assert_eq!(past(&["label=tier=web", "event=destroy"]), ["container destroy"]);
    assert_eq!(past(&["image=demo:v2", "type=image"]), ["image tag", "image untag"]);
    fails_with(
        &svc.docker(&["events", "--since", &since, "--until", &until, "--filter", "nope=1"]),
        "invalid filter",
    );

    // The CLI reads the same log.
    let text = lines(&ironpod(
        &root,
        &["events", "--since", &since, "--until", &until, "-f", "type=volume"],
    ));
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(text[0].contains(" volume create evvol (driver=local)"), "{text:?}");
}

#[test]
fn twenty_clients_at_once_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let tar = tarball(dir.path(), "demo", "hi");
    ok(&ironpod(&root, &["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap(), "demo"]));
    let svc = std::sync::Arc::new(Service::start(&root, &dir.path().join("d.sock"), &[]));

    // 20 clients create, inspect, rename and remove containers at once.
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let svc = svc.clone();
            std::thread::spawn(move || {
                let name = format!("c{i}");
                ok(&svc.docker(&["create", "--name", &name, "-l", "batch=1", "demo"]));
                let st = ok(&svc.docker(&["inspect", "-f", "{{.State.Status}}", &name]));
                assert_eq!(st.trim(), "created");
                ok(&svc.docker(&["rename", &name, &format!("r{i}")]));
                if i % 2 == 0 {
                    ok(&svc.docker(&["rm", &format!("r{i}")]));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut left = lines(&svc.docker(&["ps", "-a", "--format", "{{.Names}}"]));
    left.sort();
    let mut want: Vec<String> = (0..20).filter(|i| i % 2 == 1).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(left, want);
    assert_eq!(ok(&ironpod(&root, &["ps", "-aq"])).lines().count(), 10, "the CLI agrees");
    ok(&svc.docker(&["container", "prune", "-f", "--filter", "label=batch=1"]));
    assert!(ok(&svc.docker(&["ps", "-aq"])).trim().is_empty());
    let dirs = std::fs::read_dir(root.join("containers")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(dirs, 0, "nothing left of the containers");

    // Bad requests get Docker's errors, and the service stays up.
    let post = |path: &str, body: &str| {
        svc.curl(&[
            "-XPOST",
            "-HContent-Type: application/json",
            "--data-binary",
            body,
            &format!("http://d{path}"),
        ])
    };
    for (path, body, status, text) in [
        ("/v1.41/containers/create", "{", "400", "invalid JSON"),
        ("/v1.41/containers/create", r#"{"Image": 5}"#, "400", "invalid JSON"),
        (
            "/v1.41/containers/create",
            r#"{"Image":"demo","HostConfig":{"Memory":"lots"}}"#,
            "400",
            "invalid JSON",
        ),
        ("/v1.41/containers/create", r#"{"Image":"nosuch"}"#, "404", "No such image"),
        (
            "/v1.41/containers/create?name=a/b",
            r#"{"Image":"demo"}"#,
            "400",
            "invalid container name",
        ),
        ("/v1.41/networks/create", r#"{"Name": ["x"]}"#, "400", "invalid JSON"),
        ("/v1.41/containers/nosuch/start", "", "404", "No such container: nosuch"),
        ("/v1.41/containers/nosuch/kill", "", "404", "No such container: nosuch"),
        ("/v1.41/exec/nosuch/start", "{}", "404", "No such exec instance"),
        ("/v1.41/containers/nosuch/exec", r#"{"Cmd":["true"]}"#, "404", "No such container"),
        ("/v1.41/images/create?fromImage=demo&fromSrc=-", "", "400", "fromSrc"),
        ("/v1.41/commit?container=nosuch&repo=x", "", "404", "No such container"),
    ] {
        let (head, got) = post(path, body);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")) && got.contains(text),
            "{path} {body}: {head}{got}"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&got).is_ok_and(|v| v["message"].is_string()),
            "{got}"
        );
    }
    let huge = dir.path().join("huge.json");
    std::fs::write(&huge, format!("{{\"Image\":\"{}\"}}", "x".repeat(2 << 20))).unwrap();
    let (head, _) = svc.curl(&[
        "-XPOST",
        "-HExpect:",
        "-HContent-Type: application/json",
        "--data-binary",
        &format!("@{}", huge.display()),
        "http://d/v1.41/containers/create",
    ]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // A client that goes away in the middle of an attach (it waits for a start).
    ok(&svc.docker(&["create", "--name", "waiter", "demo"]));
    let o = std::process::Command::new("curl")
        .args(["-s", "-m", "1", "--unix-socket"])
        .arg(&svc.socket)
        .args(["-XPOST", "-HUpgrade: tcp", "-HConnection: Upgrade"])
        .arg("http://d/v1.41/containers/waiter/attach?stream=1&stdout=1")
        .output()
        .unwrap();
    assert!(!o.status.success(), "cut off by its own timeout");
    let (head, body) = svc.curl(&["http://d/_ping"]);
    assert!(head.starts_with("HTTP/1.1 200") && body == "OK", "{head}{body}");
    ok(&svc.docker(&["rm", "waiter"]));
}
