//! Several containers in one pod VM, driven through the agent protocol (as the containerd
//! shim will): shared and private PID namespaces, and hostile OCI specs refused cleanly.

use std::io::Read;
use std::time::Duration;

use ironpod_images::ImageStore;
use ironpod_pods::agent_client::{AgentClient, ClientError};
use ironpod_pods::paths;
use ironpod_pods::spec::{self, RunOptions};
use ironpod_pods::vm::{RunningVm, VmSpec};
use ironpod_protocol::{
    CreateContainer, ErrorKind, ProcessRef, RequestBody, RootfsDisks, StdioStream,
};
use ironpod_tests::{require_linux_kvm, TestRoot};
use ironpod_vmm::config::DiskConfig;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

struct Pod {
    vm: RunningVm,
    ctl: AgentClient,
    layers: Vec<String>,
    writable: String,
    _root: TestRoot,
}

fn boot_pod() -> (Pod, oci_spec::image::ImageConfiguration) {
    let root = TestRoot::with_demo();
    let store = ImageStore::open(root.path()).unwrap();
    let disks = store.layer_disks("demo").unwrap();
    let config = store.config_of(&store.resolve("demo").unwrap()).unwrap();
    let rw = root.path().join("pod-rw.ext4");
    ironpod_pods::disks::make_writable_disk(&rw, ironpod_pods::disks::WRITABLE_DISK_BYTES).unwrap();
    let mut s = VmSpec::with_defaults().unwrap();
    s.disks = disks
        .iter()
        .map(|p| DiskConfig { path: p.clone(), read_only: true })
        .chain(std::iter::once(DiskConfig { path: rw.clone(), read_only: false }))
        .collect();
    let mut vm = RunningVm::start(&s).unwrap();
    let ctl = vm.wait_agent(Duration::from_secs(120)).unwrap();
    let p = Pod {
        vm,
        ctl,
        layers: disks.iter().map(|d| paths::disk_serial(d)).collect(),
        writable: paths::disk_serial(&rw),
        _root: root,
    };
    (p, config)
}

impl Pod {
    fn create(&mut self, id: &str, spec: Spec) -> Result<i32, ClientError> {
        self.ctl.create_container(CreateContainer {
            id: id.into(),
            spec: Box::new(spec),
            rootfs: RootfsDisks { layers: self.layers.clone(), writable: self.writable.clone() },
            stdin: false,
        })
    }

    /// Starts a created container and returns its whole stdout and exit code.
    fn run_to_end(&mut self, id: &str) -> (String, i32) {
        let uds = self.vm.vsock_path().to_path_buf();
        let mut out = AgentClient::open(&uds, Duration::from_secs(30))
            .unwrap()
            .into_stream(RequestBody::OpenStdio {
                process: ProcessRef::init(id),
                stream: StdioStream::Stdout,
            })
            .unwrap();
        self.ctl.start(&ProcessRef::init(id)).unwrap();
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        let mut w = AgentClient::open(&uds, Duration::from_secs(60)).unwrap();
        let status = w.wait(&ProcessRef::init(id)).unwrap();
        (s, status.code)
    }
}

fn spec_for(id: &str, config: &oci_spec::image::ImageConfiguration, cmd: &[&str]) -> Spec {
    let o =
        RunOptions { command: cmd.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    spec::build(id, config, &o).unwrap()
}

fn share_pid_with(mut s: Spec, other: &str) -> Spec {
    let mut linux = s.linux().clone().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .map(|mut n| {
            if n.typ() == LinuxNamespaceType::Pid {
                n.set_path(Some(format!("/run/ironpod/c/{other}/ns/pid").into()));
            }
            n
        })
        .collect();
    linux.set_namespaces(Some(ns));
    s.set_linux(Some(linux));
    s
}

#[test]
fn containers_of_one_pod_see_each_other_only_when_sharing_the_pid_namespace() {
    let _w = require_linux_kvm();
    let (mut pod, config) = boot_pod();
    pod.create("app", spec_for("app", &config, &["sleep", "600"])).unwrap();
    pod.ctl.start(&ProcessRef::init("app")).unwrap();
    // Shares app's PID namespace: sees its sleep.
    pod.create(
        "sidecar",
        share_pid_with(spec_for("sidecar", &config, &["ps", "-o", "args"]), "app"),
    )
    .unwrap();
    let (shared, code) = pod.run_to_end("sidecar");
    assert_eq!(code, 0);
    assert!(shared.contains("sleep 600"), "shared pid ns: {shared}");
    // Its own PID namespace: sees only itself (as PID 1).
    pod.create("loner", spec_for("loner", &config, &["ps", "-o", "pid,args"])).unwrap();
    let (alone, code) = pod.run_to_end("loner");
    assert_eq!(code, 0);
    assert!(!alone.contains("sleep 600"), "private pid ns: {alone}");
    assert!(alone.lines().any(|l| l.trim().starts_with("1 ps")), "{alone}");
    // Each container has its own root: a file written by one is not in the other.
    pod.create("writer", spec_for("writer", &config, &["sh", "-c", "echo w > /mine"])).unwrap();
    assert_eq!(pod.run_to_end("writer").1, 0);
    pod.create(
        "reader",
        spec_for("reader", &config, &["sh", "-c", "test -e /mine && echo leaked || echo ok"]),
    )
    .unwrap();
    assert_eq!(pod.run_to_end("reader").0, "ok\n");
    for id in ["app", "sidecar", "loner", "writer", "reader"] {
        pod.ctl.delete_container(id, true).unwrap();
    }
    let status = pod.vm.shutdown(&mut pod.ctl, Duration::from_secs(30)).unwrap();
    assert!(status.success());
}

#[test]
fn hostile_specs_get_typed_errors_and_leave_nothing() {
    let _w = require_linux_kvm();
    let (mut pod, config) = boot_pod();
    let base = spec_for("x", &config, &["true"]);
    // (what, spec, the error kind and message the agent answers with).
    let mut cases: Vec<(&str, Spec, ErrorKind, &str)> = Vec::new();
    let mut s = base.clone();
    let mut p = s.process().clone().unwrap();
    p.set_cwd("../../etc".into());
    s.set_process(Some(p));
    cases.push((
        "relative cwd",
        s,
        ErrorKind::BadRequest,
        r#"process.cwd must be an absolute path: "../../etc""#,
    ));
    let mut s = base.clone();
    let mut m = s.mounts().clone().unwrap();
    m[0].set_destination("/proc/../../../escape".into());
    s.set_mounts(Some(m));
    cases.push((
        "mount with ..",
        s,
        ErrorKind::BadRequest,
        r#"mount destination must not contain '..': "/proc/../../../escape""#,
    ));
    let mut s = base.clone();
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec![]));
    s.set_process(Some(p));
    cases.push(("no args", s, ErrorKind::BadRequest, "process.args must name a program"));
    let mut s = base.clone();
    let mut linux = s.linux().clone().unwrap();
    linux.set_cgroups_path(Some("/../../etc".into()));
    s.set_linux(Some(linux));
    cases.push((
        "cgroup path with ..",
        s,
        ErrorKind::BadRequest,
        r#"cgroupsPath "/../../etc" must not contain '..'"#,
    ));
    let mut s = base.clone();
    let mut linux = s.linux().clone().unwrap();
    let mut ns = linux.namespaces().clone().unwrap();
    ns.push(
        oci_spec::runtime::LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(ns));
    s.set_linux(Some(linux));
    cases.push((
        "user namespace",
        s,
        ErrorKind::Unsupported,
        "namespace User is not supported in ironpod guests",
    ));
    let s = share_pid_with(base.clone(), "nosuchcontainer");
    cases.push((
        "pid ns of a missing container",
        s,
        ErrorKind::NotFound,
        r#"no container "nosuchcontainer""#,
    ));
    for (what, spec, kind, message) in cases {
        let e = pod.create("bad", spec).expect_err(what);
        match e {
            ClientError::Agent(a) => {
                assert_eq!(a.kind, kind, "{what}: {a:?}");
                assert!(a.message.contains(message), "{what}: {a:?}");
            }
            other => panic!("{what}: {other}"),
        }
    }
    // A frame whose spec does not even parse (unknown capability, spec as a string).
    let uds = pod.vm.vsock_path().to_path_buf();
    for body in [
        r#"{"id":5,"body":{"create_container":{"id":"y","spec":{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"capabilities":{"bounding":["CAP_NOPE"]}}},"rootfs":{"layers":[],"writable":"w"}}}}"#,
        r#"{"id":6,"body":{"create_container":{"id":"y","spec":"not a spec","rootfs":{"layers":[],"writable":"w"}}}}"#,
    ] {
        let mut s = ironpod_pods::agent_client::connect_hybrid(
            &uds,
            ironpod_protocol::AGENT_VSOCK_PORT,
            Duration::from_secs(30),
        )
        .unwrap();
        ironpod_protocol::send(
            &mut s,
            &ironpod_protocol::Hello {
                protocol_version: ironpod_protocol::PROTOCOL_VERSION,
                client: "test".into(),
            },
        )
        .unwrap();
        let _: ironpod_protocol::HelloReply = ironpod_protocol::recv(&mut s).unwrap();
        ironpod_protocol::write_frame(&mut s, body.as_bytes()).unwrap();
        let r: ironpod_protocol::Response = ironpod_protocol::recv(&mut s).unwrap();
        match r.result {
            ironpod_protocol::Outcome::Err(e) => {
                // The agent cannot even decode the request (the session's own answer, id 0).
                assert_eq!((e.kind, r.id), (ErrorKind::BadRequest, 0), "{e:?}");
                assert!(e.message.starts_with("malformed request: "), "{e:?}");
            }
            ok => panic!("accepted {body}: {ok:?}"),
        }
    }
    // Bad ids.
    for id in ["", "../x", "a/b", &"x".repeat(65)] {
        match pod.create(id, base.clone()) {
            Err(ClientError::Agent(a)) => {
                assert_eq!(a.kind, ErrorKind::BadRequest, "{id:?}: {a:?}");
                assert_eq!(a.message, format!("bad container id {id:?}"), "{id:?}");
            }
            other => panic!("{id:?}: {other:?}"),
        }
    }
    // Nothing was left: the same id works now, and the agent still answers.
    pod.create("bad", base.clone()).unwrap();
    assert_eq!(pod.run_to_end("bad").1, 0);
    pod.ctl.ping().unwrap();
    pod.ctl.delete_container("bad", true).unwrap();
    let status = pod.vm.shutdown(&mut pod.ctl, Duration::from_secs(30)).unwrap();
    assert!(status.success());
}
