//! What the kubelet knows of its pod's containers, and the pod's `status` made from it
//! (phase, conditions, container statuses), as Kubernetes reports them.

use ironpod_kube::pod::{
    Condition, ContainerState, ContainerStatus, PodStatus, RestartPolicy, StateRunning,
    StateTerminated, StateWaiting,
};

/// One container of the pod as the kubelet tracks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRun {
    /// Its name.
    pub name: String,
    /// Its image as written.
    pub image: String,
    /// The image's digest.
    pub image_id: String,
    /// Times restarted.
    pub restart_count: i64,
    /// Now.
    pub state: ContainerState,
    /// How its previous run ended.
    pub last_state: ContainerState,
    /// Its readiness.
    pub ready: bool,
    /// Its startup probe passed (or it has none and runs).
    pub started: bool,
    /// Its id in the guest, once made.
    pub container_id: Option<String>,
}

impl ContainerRun {
    /// A container not made yet.
    pub fn new(name: &str, image: &str) -> Self {
        ContainerRun {
            name: name.into(),
            image: image.into(),
            state: waiting("ContainerCreating", None),
            ..Default::default()
        }
    }

    /// Whether it runs now.
    pub fn running(&self) -> bool {
        self.state.running.is_some()
    }

    /// Its exit code, if it ended and waits for nothing.
    pub fn terminated(&self) -> Option<&StateTerminated> {
        self.state.terminated.as_ref()
    }

    /// Whether it ran (or runs) at least once.
    pub fn ever_ran(&self) -> bool {
        self.state.running.is_some()
            || self.state.terminated.is_some()
            || self.last_state.terminated.is_some()
    }

    /// The status Kubernetes shows.
    pub fn status(&self, pod_uid: &str) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            state: self.state.clone(),
            last_state: self.last_state.clone(),
            ready: self.ready,
            restart_count: self.restart_count,
            started: Some(self.started),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.as_ref().map(|c| format!("ironpod://{pod_uid}/{c}")),
        }
    }
}

/// A waiting state.
pub fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(StateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    }
}

/// A running state since now.
pub fn running_now() -> ContainerState {
    ContainerState {
        running: Some(StateRunning { started_at: Some(ironpod_images::time::now_rfc3339()) }),
        ..Default::default()
    }
}

/// A terminated state.
pub fn terminated(
    code: i32,
    reason: &str,
    message: Option<String>,
    started_at: Option<String>,
) -> ContainerState {
    ContainerState {
        terminated: Some(StateTerminated {
            exit_code: code,
            signal: None,
            reason: Some(reason.into()),
            message,
            started_at,
            finished_at: Some(ironpod_images::time::now_rfc3339()),
        }),
        ..Default::default()
    }
}

/// Whether a container that ended with `code` starts again under `policy`.
pub fn restarts(policy: RestartPolicy, code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Never => false,
    }
}

/// The pod's phase.
pub fn phase(
    policy: RestartPolicy,
    initialized: bool,
    inits: &[ContainerRun],
    containers: &[ContainerRun],
) -> &'static str {
    let failed = |c: &ContainerRun| c.terminated().is_some_and(|t| t.exit_code != 0);
    if !initialized {
        if policy == RestartPolicy::Never && inits.iter().any(failed) {
            return "Failed";
        }
        return "Pending";
    }
    if !containers.iter().any(ContainerRun::ever_ran) {
        return "Pending";
    }
    let all_done =
        containers.iter().all(|c| c.terminated().is_some_and(|t| !restarts(policy, t.exit_code)));
    match all_done {
        true if containers.iter().any(failed) => "Failed",
        true => "Succeeded",
        false => "Running",
    }
}

/// Conditions with their transition times kept across updates.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    list: Vec<Condition>,
}

impl Conditions {
    /// Sets a condition, keeping its transition time when its status did not change.
    pub fn set(&mut self, kind: &str, ok: bool, reason: Option<&str>) {
        let status = if ok { "True" } else { "False" };
        match self.list.iter_mut().find(|c| c.kind == kind) {
            Some(c) if c.status == status => c.reason = reason.map(str::to_string),
            Some(c) => {
                c.status = status.into();
                c.reason = reason.map(str::to_string);
                c.last_transition_time = Some(ironpod_images::time::now_rfc3339());
            }
            None => self.list.push(Condition {
                kind: kind.into(),
                status: status.into(),
                last_transition_time: Some(ironpod_images::time::now_rfc3339()),
                reason: reason.map(str::to_string),
                message: None,
            }),
        }
    }

    /// The list.
    pub fn list(&self) -> Vec<Condition> {
        self.list.clone()
    }
}

/// Everything a pod's status is made of.
pub struct StatusInput<'a> {
    /// Its restart policy.
    pub policy: RestartPolicy,
    /// The init containers are done.
    pub initialized: bool,
    /// The init containers.
    pub inits: &'a [ContainerRun],
    /// The containers.
    pub containers: &'a [ContainerRun],
    /// The pod's address.
    pub pod_ip: Option<String>,
    /// When its VM started.
    pub start_time: Option<String>,
    /// The pod's uid.
    pub uid: &'a str,
    /// Why the pod is where it is (a failure to start).
    pub message: Option<String>,
}

/// The pod's status; updates `conds`.
pub fn pod_status(i: &StatusInput<'_>, conds: &mut Conditions) -> PodStatus {
    let phase = phase(i.policy, i.initialized, i.inits, i.containers);
    let ready = phase == "Running" && i.containers.iter().all(|c| c.ready);
    let not_ready = |cs: &[ContainerRun]| {
        let names: Vec<&str> = cs.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
        names.join(", ")
    };
    conds.set("PodScheduled", true, None);
    conds.set("Initialized", i.initialized, (!i.initialized).then_some("ContainersNotInitialized"));
    conds.set("ContainersReady", ready, (!ready).then_some("ContainersNotReady"));
    conds.set("Ready", ready, (!ready).then_some("ContainersNotReady"));
    let mut list = conds.list();
    if !ready {
        for c in list.iter_mut().filter(|c| c.kind == "Ready" || c.kind == "ContainersReady") {
            c.message =
                Some(format!("containers with unready status: [{}]", not_ready(i.containers)));
        }
    }
    PodStatus {
        phase: phase.into(),
        conditions: list,
        reason: None,
        message: i.message.clone(),
        host_ip: Some("127.0.0.1".into()),
        pod_ip: i.pod_ip.clone(),
        start_time: i.start_time.clone(),
        init_container_statuses: i.inits.iter().map(|c| c.status(i.uid)).collect(),
        container_statuses: i.containers.iter().map(|c| c.status(i.uid)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: i32) -> ContainerRun {
        ContainerRun {
            state: terminated(code, "Completed", None, None),
            ..ContainerRun::new("c", "i")
        }
    }

    fn run() -> ContainerRun {
        ContainerRun { state: running_now(), ..ContainerRun::new("c", "i") }
    }

    #[test]
    fn phases() {
        use RestartPolicy::*;
        let made = ContainerRun::new("c", "i");
        assert_eq!(phase(Always, false, &[], std::slice::from_ref(&made)), "Pending");
        assert_eq!(phase(Never, false, &[ended(1)], std::slice::from_ref(&made)), "Failed");
        assert_eq!(phase(OnFailure, false, &[ended(1)], std::slice::from_ref(&made)), "Pending");
        assert_eq!(phase(Always, true, &[], &[made]), "Pending");
        assert_eq!(phase(Always, true, &[], &[run(), ended(0)]), "Running");
        assert_eq!(phase(Always, true, &[], &[ended(0)]), "Running");
        assert_eq!(phase(OnFailure, true, &[], &[ended(0), ended(0)]), "Succeeded");
        assert_eq!(phase(OnFailure, true, &[], &[ended(0), ended(1)]), "Running");
        assert_eq!(phase(Never, true, &[], &[ended(0), ended(1)]), "Failed");
        assert_eq!(phase(Never, true, &[], &[ended(0)]), "Succeeded");
        assert_eq!(phase(Never, true, &[], &[ended(0), run()]), "Running");
    }

    #[test]
    fn status_and_conditions() {
        let mut conds = Conditions::default();
        let mut c = run();
        c.container_id = Some("0-c.0".into());
        let i = StatusInput {
            policy: RestartPolicy::Always,
            initialized: true,
            inits: &[],
            containers: std::slice::from_ref(&c),
            pod_ip: Some("10.89.0.2".into()),
            start_time: None,
            uid: "u",
            message: None,
        };
        let s = pod_status(&i, &mut conds);
        assert_eq!(s.phase, "Running");
        assert!(!s.is_ready());
        let ready = s.conditions.iter().find(|c| c.kind == "Ready").unwrap();
        assert_eq!(ready.message.as_deref(), Some("containers with unready status: [c]"));
        assert_eq!(s.container_statuses[0].container_id.as_deref(), Some("ironpod://u/0-c.0"));
        let mut r = c.clone();
        r.ready = true;
        let i = StatusInput { containers: std::slice::from_ref(&r), ..i };
        let s = pod_status(&i, &mut conds);
        assert!(s.is_ready());
        assert!(restarts(RestartPolicy::OnFailure, 2) && !restarts(RestartPolicy::OnFailure, 0));
    }
}
