//! One run of the pod's VM: boot, volumes, then the loop that starts containers when they
//! are due, takes in their ends and probe results, keeps ConfigMap and Secret volumes
//! current, and notices a deletion or the VM's end.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use ironpod_kube::object::Kind;

use super::containers::{self, Msg, StartInput};
use super::podvm::{self, BootInput, ImageUse, PodVm};
use super::{End, Runner, StoreSource, TICK};
use crate::env::{self, PodFields};
use crate::probe::{ProbeKind, Timing};
use crate::spec::{self, SpecInput};
use crate::status;
use crate::volumes::{self, Projected};

/// How often ConfigMap and Secret volumes are compared with the store.
const REFRESH: Duration = Duration::from_secs(2);

impl Runner {
    /// Boots the VM and runs the containers until the pod ends, is deleted or the VM ends.
    pub(super) fn boot_and_run(&mut self) -> End {
        let all: Vec<_> = self.slots.iter().map(|s| s.c.clone()).collect();
        let refs: Vec<_> = all.iter().collect();
        let mut pulls = Vec::new();
        let images = podvm::images(&self.root, &self.pod_id, &refs, &mut |r, m| {
            pulls.push((r.to_string(), m.to_string()))
        });
        for (r, m) in pulls {
            self.event("Normal", r.as_str(), &m);
        }
        let images = match images {
            Ok(i) => i,
            Err(e) => {
                let reason = if e.starts_with("ErrImageNeverPull") {
                    "ErrImageNeverPull"
                } else {
                    "ErrImagePull"
                };
                return End::BootFailed(e, reason);
            }
        };
        let mut from_image = Vec::new();
        for (s, img) in self.slots.iter_mut().zip(&images) {
            s.run.image_id = img.digest.clone();
            // The image's HEALTHCHECK watches a container the manifest gives no liveness
            // probe (init containers run to their end: none).
            s.image_liveness = img.liveness.clone();
            if !s.init && s.c.liveness_probe.is_none() && s.image_liveness.is_some() {
                from_image.push(s.c.name.clone());
            }
        }
        for name in from_image {
            let msg = format!("Container {name}: the image's HEALTHCHECK is its liveness probe");
            self.event("Normal", "HealthcheckProbe", &msg);
        }
        if self.deleting() != Some(false) {
            return End::Deleted;
        }
        let network = match podvm::namespace_network(&self.root, self.meta.namespace()) {
            Ok(n) => n,
            Err(e) => return End::BootFailed(e, "ContainerCreating"),
        };
        let input = BootInput {
            root: &self.root,
            pod_id: &self.pod_id,
            meta: &self.meta,
            pod: &self.pod,
            images: &images,
            network: &network,
        };
        let mut vm = match podvm::boot(&input) {
            Ok(vm) => vm,
            Err(e) => {
                return End::BootFailed(
                    format!("Failed to create pod sandbox: {e}"),
                    "ContainerCreating",
                )
            }
        };
        if self.deleting() != Some(false) {
            self.teardown(&mut vm);
            return End::Deleted;
        }
        self.message = None;
        self.pod_ip = vm.address().map(|a| a.to_string());
        self.start_time.get_or_insert_with(|| vm.started_at.clone());
        self.info.vsock = Some(vm.uds.clone());
        self.info.vmm_pid = Some(vm.vm.pid());
        let _ = crate::paths::write_info(&self.root, &self.uid, &self.info);
        // Upper layers of runs of an earlier VM on the same disk are of no use.
        let _ = vm.ctl.remove_tree(&format!(
            "{}/{}/containers",
            ironpod_protocol::WRITABLE_DIR,
            vm.writable
        ));
        self.hosts = None;
        self.refresh_hosts(&mut vm);
        let src = StoreSource { store: &self.store, ns: self.meta.namespace() };
        let set_up = volumes::setup(&mut vm.ctl, &self.pod, &vm.writable, &vm.shared, &src);
        let (guest, mut projected) = match set_up {
            Ok(s) => (s.guest, s.projected),
            Err(e) => {
                self.teardown(&mut vm);
                return End::BootFailed(
                    format!("MountVolume.SetUp failed: {e}"),
                    "ContainerCreating",
                );
            }
        };
        let (tx, rx) = channel();
        let end = self.supervise(&mut vm, &images, &guest, &mut projected, (&tx, &rx));
        if !matches!(end, End::Crashed(_)) {
            self.teardown(&mut vm);
        } else {
            ironpod_net::disconnect(&self.root, &self.pod_id);
        }
        end
    }

    /// Ends the VM (its agent syncs and powers off; killed if it does not).
    fn teardown(&mut self, vm: &mut PodVm) {
        for s in &mut self.slots {
            s.stop_probes();
        }
        if vm.vm.shutdown(&mut vm.ctl, Duration::from_secs(10)).is_err() {
            vm.vm.kill();
        }
        ironpod_net::disconnect(&self.root, &self.pod_id);
        self.info.vsock = None;
        self.info.vmm_pid = None;
        self.info.containers.clear();
        let _ = crate::paths::write_info(&self.root, &self.uid, &self.info);
    }

    fn supervise(
        &mut self,
        vm: &mut PodVm,
        images: &[ImageUse],
        guest: &[spec::GuestVolume],
        projected: &mut [(ironpod_kube::pod::Volume, Projected)],
        (tx, rx): (&Sender<Msg>, &Receiver<Msg>),
    ) -> End {
        let mut last_tick = Instant::now() - TICK;
        let mut last_refresh = Instant::now();
        loop {
            self.schedule(vm, images, guest, tx);
            self.write_status();
            let phase = self.phase();
            if (phase == "Succeeded" || phase == "Failed")
                && !self.slots.iter().any(|s| s.run.running())
            {
                return End::Finished;
            }
            let msg = rx.recv_timeout(TICK);
            // A VM that ended ends every run in it: that is the VM's end, not theirs (their
            // waits fail with it).
            if let Some(st) = vm.vm.try_exit() {
                return End::Crashed(vm.vm.end_reason(st));
            }
            // A wait that failed may be the VM going (its sockets close just before it can
            // be reaped): give it a moment to tell.
            if let Ok(Msg::Exited { status: Err(_), .. }) = &msg {
                if let Some(st) = vm.vm.wait_exit(Duration::from_secs(1)) {
                    return End::Crashed(vm.vm.end_reason(st));
                }
            }
            match msg {
                Ok(m) => self.handle(vm, m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            if last_tick.elapsed() < TICK {
                continue;
            }
            last_tick = Instant::now();
            if let Some(st) = vm.vm.try_exit() {
                return End::Crashed(vm.vm.end_reason(st));
            }
            match self.deleting() {
                Some(false) => {}
                _ => {
                    self.stop_all(vm, rx);
                    return End::Deleted;
                }
            }
            for s in &mut self.slots {
                if s.kill_at.is_some_and(|t| Instant::now() >= t) {
                    s.kill_at = None;
                    if let Some(id) = &s.guest_id {
                        containers::kill(&mut vm.ctl, id);
                    }
                }
            }
            if last_refresh.elapsed() >= REFRESH {
                last_refresh = Instant::now();
                self.refresh(vm, projected);
            }
        }
    }

    /// Services as `/etc/hosts` lines: cluster IP and the names a pod reaches it by
    /// (`NAME` only in its own namespace; `NAME.NAMESPACE…` from every namespace).
    fn service_hosts(&self) -> Vec<(String, Vec<String>)> {
        let mine = self.meta.namespace();
        let list = self.store.list(Kind::Service, None).unwrap_or_default();
        list.iter()
            .filter_map(|s| match &s.object.body {
                ironpod_kube::Body::Service(spec) => spec
                    .cluster_ip
                    .clone()
                    .map(|ip| (ip, s.name().to_string(), s.namespace().to_string())),
                _ => None,
            })
            .map(|(ip, n, ns)| {
                let d = podvm::CLUSTER_DOMAIN;
                let mut names = Vec::new();
                if ns == mine {
                    names.push(n.clone());
                }
                names.extend([
                    format!("{n}.{ns}"),
                    format!("{n}.{ns}.svc"),
                    format!("{n}.{ns}.svc.{d}"),
                ]);
                (ip, names)
            })
            .collect()
    }

    /// Rewrites `/etc/hosts` when the namespace's Services changed.
    fn refresh_hosts(&mut self, vm: &mut PodVm) {
        let hosts = self.service_hosts();
        if self.hosts.as_ref() == Some(&hosts) {
            return;
        }
        let address = vm.address();
        match podvm::write_name_files(&mut vm.ctl, &self.meta, &self.pod, address, &hosts) {
            Ok(()) => self.hosts = Some(hosts),
            Err(e) => tracing::warn!("update /etc/hosts: {e}"),
        }
    }

    /// Rewrites the ConfigMap and Secret volumes whose data changed, and `/etc/hosts` when
    /// the namespace's Services did.
    fn refresh(
        &mut self,
        vm: &mut PodVm,
        projected: &mut [(ironpod_kube::pod::Volume, Projected)],
    ) {
        self.refresh_hosts(vm);
        let src = StoreSource { store: &self.store, ns: self.meta.namespace() };
        let mut failures = Vec::new();
        for (v, p) in projected.iter_mut() {
            match volumes::files(v, &src) {
                Ok(Some(files)) if files != p.files => {
                    if let Err(e) = p.write(&mut vm.ctl, files) {
                        failures.push(e);
                    }
                }
                Ok(_) => {}
                Err(e) => failures.push(e),
            }
        }
        for e in failures {
            self.event("Warning", "FailedMount", &format!("MountVolume.SetUp failed: {e}"));
        }
    }

    /// Starts what is due: the next init container, or (once they are done) every
    /// container that waits to start.
    fn schedule(
        &mut self,
        vm: &mut PodVm,
        images: &[ImageUse],
        guest: &[spec::GuestVolume],
        tx: &Sender<Msg>,
    ) {
        let due = |s: &containers::Slot| {
            !s.done
                && !s.run.running()
                && s.kill_at.is_none()
                && s.next_start.is_none_or(|t| Instant::now() >= t)
        };
        let init_failed = |s: &containers::Slot| {
            s.init && s.done && s.run.terminated().is_some_and(|t| t.exit_code != 0)
        };
        if self.slots.iter().any(init_failed) {
            // An init container failed for good (restartPolicy Never): the pod has failed.
            return;
        }
        if !self.initialized {
            match self.slots.iter().position(|s| s.init && !s.done) {
                None => self.initialized = true,
                Some(i) if due(&self.slots[i]) => return self.start_slot(i, vm, images, guest, tx),
                Some(_) => return,
            }
        }
        for i in 0..self.slots.len() {
            if !self.slots[i].init && due(&self.slots[i]) {
                self.start_slot(i, vm, images, guest, tx);
            }
        }
    }

    fn start_slot(
        &mut self,
        i: usize,
        vm: &mut PodVm,
        images: &[ImageUse],
        guest: &[spec::GuestVolume],
        tx: &Sender<Msg>,
    ) {
        let fields = PodFields {
            pod_ip: self.pod_ip.clone().unwrap_or_default(),
            host_ip: "127.0.0.1".into(),
            node_name: "localhost".into(),
        };
        let src = StoreSource { store: &self.store, ns: self.meta.namespace() };
        let c = self.slots[i].c.clone();
        let image = &images[self.slots[i].image];
        let made = env::resolve(&c, &self.meta, &fields, &src).and_then(|env| {
            let n = match &self.slots[i].guest_id {
                Some(_) => self.slots[i].run.restart_count + 1,
                None => 0,
            };
            let id = self.slots[i].guest_id_for(n);
            let input = SpecInput {
                meta: &self.meta,
                pod: &self.pod,
                container: &c,
                image: &image.config,
                env: &env,
                volumes: guest,
                id: &id,
            };
            spec::build(&input).map(|s| (s, id, n))
        });
        let (spec, id, n) = match made {
            Ok(m) => m,
            Err(e) => {
                // Retried a little later, as the kubelet does (a ConfigMap may come).
                let s = &mut self.slots[i];
                s.run.state = status::waiting("CreateContainerConfigError", Some(e.clone()));
                s.next_start = Some(Instant::now() + Duration::from_secs(2));
                self.event("Warning", "Failed", &format!("Error: {e}"));
                return;
            }
        };
        if let Some(prev) = self.slots[i].guest_id.replace(id.clone()) {
            containers::remove(&mut vm.ctl, &prev);
        }
        let s = &mut self.slots[i];
        s.run.restart_count = n;
        s.run.container_id = Some(id.clone());
        s.killed_for = None;
        s.streaks.clear();
        let input = StartInput {
            uds: &vm.uds,
            spec,
            layers: image.layers.iter().map(|p| ironpod_pods::paths::disk_serial(p)).collect(),
            writable: &vm.writable,
            log: crate::paths::log_path(&self.root, &self.uid, &c.name, n),
            tx: tx.clone(),
            pod_ip: vm.address(),
            net_ns: vm.net.as_ref().map(|n| n.net_ns.clone()),
        };
        let mut process = input.spec.process().clone().unwrap_or_default();
        process.set_env(None);
        match containers::start(&mut vm.ctl, s, i, &id, input) {
            Ok(pid) => {
                s.run.state = status::running_now();
                s.started = Some(Instant::now());
                s.run.started = c.startup_probe.is_none();
                s.run.ready = c.readiness_probe.is_none() && c.startup_probe.is_none() && !s.init;
                let run = crate::paths::RunningContainer { id: id.clone(), pid, process };
                self.info.containers.insert(c.name.clone(), run);
                let _ = crate::paths::write_info(&self.root, &self.uid, &self.info);
                self.event("Normal", "Created", &format!("Created container {}", c.name));
                self.event("Normal", "Started", &format!("Started container {}", c.name));
            }
            Err(e) => {
                self.event("Warning", "Failed", &format!("Error: {}", e.message));
                let ended =
                    ironpod_protocol::ExitStatus { code: e.code, signal: None, oom_killed: false };
                let s = &mut self.slots[i];
                s.run.state = status::running_now();
                s.started = Some(Instant::now());
                self.ended(i, Ok(ended), Some((e.reason, e.message)));
            }
        }
    }

    fn handle(&mut self, vm: &mut PodVm, m: Msg) {
        match m {
            Msg::Exited { slot, guest_id, status } => {
                if self.slots[slot].guest_id.as_deref() == Some(guest_id.as_str())
                    && self.slots[slot].run.running()
                {
                    self.ended(slot, status, None);
                }
            }
            Msg::Probe { slot, guest_id, kind, result } => {
                if self.slots[slot].guest_id.as_deref() == Some(guest_id.as_str())
                    && self.slots[slot].run.running()
                {
                    self.probed(vm, slot, kind, result);
                }
            }
        }
    }

    /// A run ended: its state, and when it starts again (if it does).
    fn ended(
        &mut self,
        i: usize,
        st: Result<ironpod_protocol::ExitStatus, String>,
        why: Option<(&'static str, String)>,
    ) {
        let policy = self.policy();
        let pod_ref = format!("{}_{}({})", self.meta.name, self.meta.namespace(), self.uid);
        let s = &mut self.slots[i];
        s.stop_probes();
        for p in s.pumps.drain(..) {
            let _ = p.join();
        }
        let (code, oom, mut message) = match &st {
            Ok(x) => (x.code, x.oom_killed, None),
            Err(e) => (137, false, Some(e.clone())),
        };
        let mut reason = containers::exit_reason(code, oom);
        if let Some((r, m)) = why {
            reason = r;
            message = Some(m);
        }
        let started = s.run.state.running.as_ref().and_then(|r| r.started_at.clone());
        let term = status::terminated(code, reason, message, started);
        let ran = s.started.map(|t| t.elapsed()).unwrap_or_default();
        s.run.ready = false;
        s.kill_at = None;
        s.run.state = term.clone();
        if s.init && code == 0 {
            s.done = true;
            s.run.ready = true;
            return;
        }
        if !status::restarts(policy, code) {
            s.done = true;
            return;
        }
        s.run.last_state = term;
        let delay = s.backoff.next_delay(ran);
        s.next_start = Some(Instant::now() + delay);
        if !delay.is_zero() {
            let name = s.c.name.clone();
            s.run.state = status::waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {}s restarting failed container={name} pod={pod_ref}",
                    delay.as_secs()
                )),
            );
            self.event(
                "Warning",
                "BackOff",
                &format!("Back-off restarting failed container {name} in pod {pod_ref}"),
            );
        }
    }

    fn probed(&mut self, vm: &mut PodVm, i: usize, kind: ProbeKind, result: Result<(), String>) {
        let s = &mut self.slots[i];
        let probe = match kind {
            ProbeKind::Liveness => s.liveness().cloned(),
            ProbeKind::Readiness => s.c.readiness_probe.clone(),
            ProbeKind::Startup => s.c.startup_probe.clone(),
        };
        let Some(probe) = probe else { return };
        let t = Timing::of(&probe);
        let verdict = containers::streak(s, kind, result.is_ok(), &t);
        let name = s.c.name.clone();
        if let Err(e) = &result {
            self.event("Warning", "Unhealthy", &format!("{} probe failed: {e}", kind.name()));
        }
        let s = &mut self.slots[i];
        match (kind, verdict) {
            (ProbeKind::Readiness, Some(ready)) => s.run.ready = ready,
            (ProbeKind::Startup, Some(true)) => {
                s.started_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                s.run.started = true;
                s.run.ready = s.c.readiness_probe.is_none();
            }
            (ProbeKind::Liveness | ProbeKind::Startup, Some(false)) => {
                let grace = probe
                    .termination_grace_period_seconds
                    .map(|g| Duration::from_secs(g.max(0) as u64))
                    .unwrap_or(self.grace());
                let s = &mut self.slots[i];
                s.killed_for = Some(kind.name().to_string());
                s.kill_at = Some(Instant::now() + grace);
                s.stop_probes();
                if let Some(id) = s.guest_id.clone() {
                    containers::terminate(&mut vm.ctl, &id);
                }
                self.event(
                    "Normal",
                    "Killing",
                    &format!(
                        "Container {name} failed {} probe, will be restarted",
                        kind.name().to_lowercase()
                    ),
                );
            }
            _ => {}
        }
    }

    /// The pod's deletion: SIGTERM to every running container, SIGKILL to what still runs
    /// when the grace period is over.
    fn stop_all(&mut self, vm: &mut PodVm, rx: &Receiver<Msg>) {
        let grace = self.grace();
        let running: Vec<(usize, String)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.run.running())
            .filter_map(|(i, s)| s.guest_id.clone().map(|g| (i, g)))
            .collect();
        for (i, id) in &running {
            self.event(
                "Normal",
                "Killing",
                &format!("Stopping container {}", self.slots[*i].c.name),
            );
            containers::terminate(&mut vm.ctl, id);
        }
        let deadline = Instant::now() + grace;
        while self.slots.iter().any(|s| s.run.running()) && Instant::now() < deadline {
            if let Ok(Msg::Exited { slot, guest_id, status }) = rx.recv_timeout(TICK) {
                if self.slots[slot].guest_id.as_deref() == Some(guest_id.as_str()) {
                    let s = &mut self.slots[slot];
                    s.done = true;
                    let code = status.map(|x| x.code).unwrap_or(137);
                    let started = s.run.state.running.as_ref().and_then(|r| r.started_at.clone());
                    s.run.state = status::terminated(
                        code,
                        containers::exit_reason(code, false),
                        None,
                        started,
                    );
                }
            }
            if vm.vm.try_exit().is_some() {
                break;
            }
        }
        for (_, id) in &running {
            containers::kill(&mut vm.ctl, id);
        }
        let ns = self.meta.namespace().to_string();
        if let Ok(Some(p)) = self.store.get(Kind::Pod, &ns, &self.meta.name) {
            if p.uid() == self.uid {
                self.write_status();
            }
        }
    }
}
