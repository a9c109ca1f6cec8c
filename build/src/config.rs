//! The run configuration a stage builds up (the image config's `config` object, with
//! Docker's extensions `Healthcheck`, `OnBuild` and `Shell`), and the changes the
//! configuration-only instructions make to it.

use serde_json::{json, Map, Value};

use crate::dockerfile::{CommandForm, HealthcheckSpec};

/// The shell a stage runs shell forms with, unless `SHELL` says otherwise.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// A stage's run configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunConfig(pub Map<String, Value>);

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl RunConfig {
    /// The configuration an image has (`config` of its config), or an empty one.
    pub fn of_image(config: &Value) -> Self {
        RunConfig(config["config"].as_object().cloned().unwrap_or_default())
    }

    /// As JSON.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// `Env` as (name, value) pairs, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        strings(self.0.get("Env").unwrap_or(&Value::Null))
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect()
    }

    /// Sets (or replaces, keeping its place) variable `name`.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let mut env = strings(self.0.get("Env").unwrap_or(&Value::Null));
        let entry = format!("{name}={value}");
        match env.iter().position(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name) {
            Some(i) => env[i] = entry,
            None => env.push(entry),
        }
        self.0.insert("Env".into(), json!(env));
    }

    /// Sets label `name`.
    pub fn set_label(&mut self, name: &str, value: &str) {
        let labels = self.0.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[name] = value.into();
    }

    /// The shell of shell forms.
    pub fn shell(&self) -> Vec<String> {
        let s = strings(self.0.get("Shell").unwrap_or(&Value::Null));
        if s.is_empty() {
            DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            s
        }
    }

    /// A command form as the program and its arguments (a shell form through the shell).
    pub fn argv(&self, c: &CommandForm) -> Vec<String> {
        match c {
            CommandForm::Exec(v) => v.clone(),
            CommandForm::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    /// The working directory (`/` when unset).
    pub fn workdir(&self) -> String {
        self.0
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    /// The user (`None` when unset).
    pub fn user(&self) -> Option<String> {
        self.0.get("User").and_then(Value::as_str).filter(|u| !u.is_empty()).map(str::to_string)
    }

    /// WORKDIR: relative paths are relative to the current one.
    pub fn set_workdir(&mut self, dir: &str) -> String {
        let new = if dir.starts_with('/') {
            dir.to_string()
        } else {
            format!("{}/{}", self.workdir().trim_end_matches('/'), dir)
        };
        let clean = format!("/{}", crate::imagefs::clean(&new));
        self.0.insert("WorkingDir".into(), clean.clone().into());
        clean
    }

    /// CMD.
    pub fn set_cmd(&mut self, c: &CommandForm) {
        let argv = self.argv(c);
        self.0.insert("Cmd".into(), json!(argv));
    }

    /// ENTRYPOINT; a CMD the base image set is reset, as Docker does (one this stage set
    /// stays: `cmd_set_here`).
    pub fn set_entrypoint(&mut self, c: &CommandForm, cmd_set_here: bool) {
        let argv = self.argv(c);
        self.0.insert("Entrypoint".into(), json!(argv));
        if !cmd_set_here {
            self.0.insert("Cmd".into(), Value::Null);
        }
    }

    /// EXPOSE of one port spec (`80`, `80/tcp`, `53/udp`, `8000-8002`).
    pub fn expose(&mut self, spec: &str) -> Result<(), String> {
        let (ports, proto) = match spec.split_once('/') {
            Some((p, proto)) => (p, proto.to_ascii_lowercase()),
            None => (spec, "tcp".to_string()),
        };
        if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
            return Err(format!("invalid proto: {proto}"));
        }
        let bad = || format!("invalid containerPort: {ports}");
        let (lo, hi) = match ports.split_once('-') {
            Some((a, b)) => {
                (a.parse::<u16>().map_err(|_| bad())?, b.parse::<u16>().map_err(|_| bad())?)
            }
            None => {
                let p = ports.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo == 0 || hi < lo {
            return Err(bad());
        }
        let exposed = self.0.entry("ExposedPorts").or_insert_with(|| json!({}));
        if !exposed.is_object() {
            *exposed = json!({});
        }
        for p in lo..=hi {
            exposed[format!("{p}/{proto}")] = json!({});
        }
        Ok(())
    }

    /// VOLUME of one path.
    pub fn add_volume(&mut self, path: &str) -> Result<(), String> {
        if path.trim().is_empty() {
            return Err("VOLUME specified can not be an empty string".into());
        }
        let vols = self.0.entry("Volumes").or_insert_with(|| json!({}));
        if !vols.is_object() {
            *vols = json!({});
        }
        vols[path] = json!({});
        Ok(())
    }

    /// HEALTHCHECK (`None`: NONE, which turns the base image's off).
    pub fn set_healthcheck(&mut self, h: Option<&HealthcheckSpec>) {
        let Some(h) = h else {
            self.0.insert("Healthcheck".into(), json!({"Test": ["NONE"]}));
            return;
        };
        let test = match &h.command {
            CommandForm::Exec(v) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(v.iter().cloned());
                t
            }
            CommandForm::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
        };
        let mut v = json!({ "Test": test });
        for (k, d) in [
            ("Interval", h.interval),
            ("Timeout", h.timeout),
            ("StartPeriod", h.start_period),
            ("StartInterval", h.start_interval),
        ] {
            if let Some(d) = d.filter(|d| *d > 0) {
                v[k] = d.into();
            }
        }
        if let Some(r) = h.retries.filter(|r| *r > 0) {
            v["Retries"] = r.into();
        }
        self.0.insert("Healthcheck".into(), v);
    }

    /// ONBUILD: one more trigger.
    pub fn add_onbuild(&mut self, trigger: &str) {
        let mut v = strings(self.0.get("OnBuild").unwrap_or(&Value::Null));
        v.push(trigger.to_string());
        self.0.insert("OnBuild".into(), json!(v));
    }

    /// The base image's ONBUILD triggers (run after FROM), which the new image does not keep.
    pub fn take_onbuild(&mut self) -> Vec<String> {
        let v = strings(self.0.get("OnBuild").unwrap_or(&Value::Null));
        self.0.remove("OnBuild");
        v
    }
}

/// A stop signal: a name (`SIGTERM`, `TERM`) or a number, as Docker takes them.
pub fn check_signal(s: &str) -> Result<(), String> {
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) { Ok(()) } else { Err(format!("invalid signal: {s}")) };
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let rt = name.strip_prefix("RTMIN").or_else(|| name.strip_prefix("RTMAX"));
    if NAMES.contains(&name)
        || rt
            .is_some_and(|r| r.is_empty() || r.trim_start_matches(['+', '-']).parse::<u8>().is_ok())
    {
        Ok(())
    } else {
        Err(format!("invalid signal: {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keeps_order_and_replaces_in_place() {
        let mut c = RunConfig::of_image(&json!({"config": {"Env": ["PATH=/bin", "A=1"]}}));
        c.set_env("A", "2");
        c.set_env("B", "x=y");
        assert_eq!(c.0["Env"], json!(["PATH=/bin", "A=2", "B=x=y"]));
        assert_eq!(c.env()[2], ("B".to_string(), "x=y".to_string()));
    }

    #[test]
    fn commands_workdir_entrypoint_and_shell() {
        let mut c = RunConfig::default();
        assert_eq!(c.argv(&CommandForm::Shell("echo hi".into())), ["/bin/sh", "-c", "echo hi"]);
        c.0.insert("Shell".into(), json!(["/bin/bash", "-ec"]));
        c.set_cmd(&CommandForm::Shell("run".into()));
        assert_eq!(c.0["Cmd"], json!(["/bin/bash", "-ec", "run"]));
        c.set_entrypoint(&CommandForm::Exec(vec!["/init".into()]), true);
        assert_eq!(c.0["Cmd"], json!(["/bin/bash", "-ec", "run"]), "a CMD of this stage stays");
        c.set_entrypoint(&CommandForm::Exec(vec!["/init".into()]), false);
        assert_eq!(c.0["Cmd"], Value::Null, "the base image's CMD goes");
        assert_eq!(c.workdir(), "/");
        assert_eq!(c.set_workdir("/srv"), "/srv");
        assert_eq!(c.set_workdir("app/../web"), "/srv/web");
        assert_eq!(c.set_workdir("/a//b/"), "/a/b");
    }

    #[test]
    fn ports_volumes_labels_healthcheck_onbuild() {
        let mut c = RunConfig::default();
        c.expose("80").unwrap();
        c.expose("53/UDP").unwrap();
        c.expose("8000-8001/tcp").unwrap();
        assert_eq!(
            c.0["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
        );
        for bad in ["0", "x", "80/icmp", "9-1", "70000"] {
            assert!(c.expose(bad).is_err(), "{bad}");
        }
        c.add_volume("/data").unwrap();
        assert!(c.add_volume(" ").is_err());
        c.set_label("a.b", "c d");
        assert_eq!(c.0["Labels"], json!({"a.b": "c d"}));
        let h = HealthcheckSpec {
            interval: Some(5_000_000_000),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: Some(3),
            command: CommandForm::Shell("wget -q localhost".into()),
        };
        c.set_healthcheck(Some(&h));
        assert_eq!(
            c.0["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 5_000_000_000i64, "Retries": 3})
        );
        c.set_healthcheck(None);
        assert_eq!(c.0["Healthcheck"], json!({"Test": ["NONE"]}));
        c.add_onbuild("RUN echo child");
        assert_eq!(c.take_onbuild(), ["RUN echo child"]);
        assert!(c.0.get("OnBuild").is_none());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "TERM", "9", "SIGRTMIN+3", "SIGWINCH"] {
            assert!(check_signal(ok).is_ok(), "{ok}");
        }
        for bad in ["SIGNOPE", "0", "99", "", "RTMINx"] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }
}
