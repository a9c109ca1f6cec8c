//! A container's environment as the kubelet makes it: `envFrom` first, then `env` in order
//! (values from ConfigMaps, Secrets and the pod's own fields), with `$(NAME)` references to
//! earlier variables expanded; the same expansion applies to `command` and `args`.

use std::collections::BTreeMap;

use ironpod_kube::meta::ObjectMeta;
use ironpod_kube::pod::{Container, KeySelector};

/// Where ConfigMap and Secret keys come from.
pub trait ConfigSource {
    /// A ConfigMap's keys (`None`: no such ConfigMap).
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    /// A Secret's keys (`None`: no such Secret).
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

/// What `fieldRef` reads besides the pod's metadata.
#[derive(Debug, Clone, Default)]
pub struct PodFields {
    /// `status.podIP`.
    pub pod_ip: String,
    /// `status.hostIP` (and `spec.nodeName`'s host).
    pub host_ip: String,
    /// `spec.nodeName`.
    pub node_name: String,
}

/// Resolves a container's variables, in order (a later one replaces an earlier of the same
/// name in place).
pub fn resolve(
    c: &Container,
    meta: &ObjectMeta,
    fields: &PodFields,
    src: &dyn ConfigSource,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| match out
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(e) => e.1 = v,
        None => out.push((k, v)),
    };
    for from in &c.env_from {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (src.config_map(&r.name), "configmap", &r.name, r.optional),
            (_, Some(r)) => (src.secret(&r.name), "secret", &r.name, r.optional),
            _ => continue,
        };
        let Some(data) = data else {
            if optional == Some(true) {
                continue;
            }
            return Err(format!("{what} \"{name}\" not found"));
        };
        for (k, v) in data {
            let key = format!("{prefix}{k}");
            // Keys that are no variable names are skipped, as the kubelet does.
            if valid_env_name(&key) {
                set(&mut out, key, String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    for e in &c.env {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(k) = &from.config_map_key_ref {
                    match key_of(src.config_map(&k.name), "configmap", k)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(k) = &from.secret_key_ref {
                    match key_of(src.secret(&k.name), "secret", k)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(f) = &from.field_ref {
                    field(&f.field_path, meta, fields)?
                } else {
                    continue;
                }
            }
            (Some(v), None) => {
                let known = out.clone();
                expand(v, &|n| known.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
            }
            (None, None) => String::new(),
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

fn key_of(
    data: Option<BTreeMap<String, Vec<u8>>>,
    what: &str,
    k: &KeySelector,
) -> Result<Option<String>, String> {
    let optional = k.optional == Some(true);
    match data {
        None if optional => Ok(None),
        None => Err(format!("{what} \"{}\" not found", k.name)),
        Some(d) => match d.get(&k.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(format!("couldn't find key {} in {what} {}", k.key, k.name)),
        },
    }
}

/// A pod field by its `fieldPath`.
pub fn field(path: &str, meta: &ObjectMeta, f: &PodFields) -> Result<String, String> {
    let quoted = |p: &str, pre: &str| -> Option<String> {
        p.strip_prefix(pre).and_then(|r| r.strip_suffix("']")).map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace().to_string(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "status.podIP" => f.pod_ip.clone(),
        "status.hostIP" => f.host_ip.clone(),
        "spec.nodeName" => f.node_name.clone(),
        p => {
            if let Some(k) = quoted(p, "metadata.labels['") {
                meta.labels.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = quoted(p, "metadata.annotations['") {
                meta.annotations.get(&k).cloned().unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldPath {p:?}"));
            }
        }
    })
}

/// Whether `s` can be a variable's name (letters, digits, `_`, `-`, `.`; not starting with a
/// digit), as the kubelet takes them from `envFrom`.
pub fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Expands `$(NAME)` with `lookup`; `$$` is a literal `$`; an unknown name stays as written.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(') {
            match r.find(')') {
                Some(end) => {
                    let name = &r[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &r[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = r;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironpod_kube::pod::{EnvFromSource, EnvVar, EnvVarSource, FieldRef, ObjectRef};

    struct Src;
    impl ConfigSource for Src {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "cm").then(|| {
                [("MODE".to_string(), b"fast".to_vec()), ("bad key".to_string(), b"x".to_vec())]
                    .into()
            })
        }
        fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "s").then(|| [("pw".to_string(), b"hunter2".to_vec())].into())
        }
    }

    fn var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar { name: name.into(), value: value.map(str::to_string), value_from: from }
    }

    #[test]
    fn resolves_in_order_with_references() {
        let mut meta = ObjectMeta { name: "web-1".into(), ..Default::default() };
        meta.labels.insert("app".into(), "web".into());
        let key =
            |n: &str, k: &str, optional| KeySelector { name: n.into(), key: k.into(), optional };
        let c = Container {
            env_from: vec![EnvFromSource {
                prefix: Some("CFG_".into()),
                config_map_ref: Some(ObjectRef { name: "cm".into(), optional: None }),
                secret_ref: None,
            }],
            env: vec![
                var(
                    "POD",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: None,
                        secret_key_ref: None,
                        field_ref: Some(FieldRef {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                    }),
                ),
                var(
                    "APP",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: None,
                        secret_key_ref: None,
                        field_ref: Some(FieldRef {
                            field_path: "metadata.labels['app']".into(),
                            api_version: None,
                        }),
                    }),
                ),
                var(
                    "IP",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: None,
                        secret_key_ref: None,
                        field_ref: Some(FieldRef {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                    }),
                ),
                var(
                    "PW",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: None,
                        secret_key_ref: Some(key("s", "pw", None)),
                        field_ref: None,
                    }),
                ),
                var(
                    "GONE",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(key("cm", "nope", Some(true))),
                        secret_key_ref: None,
                        field_ref: None,
                    }),
                ),
                var("URL", Some("http://$(POD):80/$(CFG_MODE)/$(UNSET)/$$(POD)"), None),
                var("CFG_MODE", Some("slow"), None),
            ],
            ..Default::default()
        };
        let fields = PodFields { pod_ip: "10.89.0.5".into(), ..Default::default() };
        let env = resolve(&c, &meta, &fields, &Src).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(env[0].0, "CFG_MODE", "envFrom comes first, replaced in place");
        assert_eq!(get("CFG_MODE"), Some("slow"));
        assert_eq!(get("POD"), Some("web-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("IP"), Some("10.89.0.5"));
        assert_eq!(get("PW"), Some("hunter2"));
        assert_eq!(get("GONE"), None);
        assert_eq!(get("URL"), Some("http://web-1:80/fast/$(UNSET)/$(POD)"));
        assert!(!env.iter().any(|(k, _)| k.contains(' ')));
    }

    #[test]
    fn missing_references_fail() {
        let meta = ObjectMeta::default();
        let c = Container {
            env: vec![var(
                "X",
                None,
                Some(EnvVarSource {
                    config_map_key_ref: Some(KeySelector {
                        name: "cm".into(),
                        key: "nope".into(),
                        optional: None,
                    }),
                    secret_key_ref: None,
                    field_ref: None,
                }),
            )],
            ..Default::default()
        };
        let e = resolve(&c, &meta, &PodFields::default(), &Src).unwrap_err();
        assert_eq!(e, "couldn't find key nope in configmap cm");
        let c = Container {
            env_from: vec![EnvFromSource {
                prefix: None,
                config_map_ref: None,
                secret_ref: Some(ObjectRef { name: "other".into(), optional: None }),
            }],
            ..Default::default()
        };
        assert_eq!(
            resolve(&c, &meta, &PodFields::default(), &Src).unwrap_err(),
            "secret \"other\" not found"
        );
    }

    #[test]
    fn expansion_edge_cases() {
        let l = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("$(A)$(A)", &l), "11");
        assert_eq!(expand("$A $(A", &l), "$A $(A");
        assert_eq!(expand("$$$(A)", &l), "$1");
        assert_eq!(expand("", &l), "");
    }
}
