//! Object metadata (`metadata:`), and Kubernetes' rules for names, labels and annotations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An object's `metadata`.
///
/// `uid`, `resourceVersion`, `generation`, `creationTimestamp`, `deletionTimestamp` and
/// `ownerReferences` are the system's: a manifest may carry them (the output of `kube get -o
/// yaml` applied again), and the store keeps its own values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The object's name, unique per kind and namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its namespace (`default` when left out; cluster-wide kinds have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels: identifying key/value pairs that selectors match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations: kept, never interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The store's id of this object (stays across updates, new when re-created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Changes with every write of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Changes with every change of the object's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When it was first stored (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// When its deletion was asked for (it ends once its pods have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// The objects that own this one (a ReplicaSet owns its pods).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// An owner of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnerReference {
    /// The owner's apiVersion.
    pub api_version: String,
    /// The owner's kind.
    pub kind: String,
    /// The owner's name.
    pub name: String,
    /// The owner's uid.
    pub uid: String,
    /// The owner manages this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Deleting the owner waits for this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The uid of the object's managing owner, if any.
    pub fn controller_uid(&self) -> Option<&str> {
        self.owner_references.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.as_str())
    }
}

/// The namespace of objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Checks a DNS-1123 label: 1–63 lowercase letters, digits and `-`, starting and ending
/// with a letter or digit (namespace, service, container and port names).
pub fn check_label_name(what: &str, s: &str) -> Result<(), String> {
    check_dns(what, s, 63, false)
}

/// Checks a DNS-1123 subdomain: 1–253 characters, dot-separated labels (most object names).
pub fn check_subdomain(what: &str, s: &str) -> Result<(), String> {
    check_dns(what, s, 253, true)
}

fn check_dns(what: &str, s: &str, max: usize, dots: bool) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let bad = || {
        Err(format!(
            "{what} {s:?} is invalid: it must be at most {max} lowercase letters, digits{} or \
             '-', and start and end with a letter or digit",
            if dots { ", '.'" } else { "" }
        ))
    };
    if s.is_empty() || s.len() > max {
        return bad();
    }
    let parts: Vec<&str> = if dots { s.split('.').collect() } else { vec![s] };
    for p in parts {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if p.is_empty()
            || !p.chars().all(ok_char)
            || !p.starts_with(alnum)
            || !p.ends_with(alnum)
            || p.len() > 63
        {
            return bad();
        }
    }
    Ok(())
}

/// Checks a label or annotation key: `[prefix/]name`, the prefix a DNS subdomain, the name
/// 1–63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit.
pub fn check_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        check_subdomain("the key prefix", p).map_err(|e| format!("key {s:?}: {e}"))?;
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(format!(
            "key {s:?} is invalid: its name must be 1-63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Whether `s` is a valid label value: empty, or up to 63 letters, digits, `-`, `_` and
/// `.`, starting and ending with a letter or digit.
pub fn is_label_value(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// Checks labels (keys and values).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in labels {
        check_key(k)?;
        if !is_label_value(v) {
            return Err(format!(
                "label {k}={v:?}: a value must be at most 63 letters, digits, '-', '_' or '.', \
                 starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(check_label_name("name", "web-1").is_ok());
        assert!(check_label_name("name", "Web").is_err());
        assert!(check_label_name("name", "-web").is_err());
        assert!(check_label_name("name", "web.x").is_err());
        assert!(check_label_name("name", &"a".repeat(64)).is_err());
        assert!(check_subdomain("name", "web.example-1.io").is_ok());
        assert!(check_subdomain("name", "web..io").is_err());
        assert!(check_subdomain("name", "").is_err());
    }

    #[test]
    fn keys_and_values() {
        assert!(check_key("app").is_ok());
        assert!(check_key("app.kubernetes.io/name").is_ok());
        assert!(check_key("Bad_Key.1").is_ok());
        assert!(check_key("/app").is_err());
        assert!(check_key("x/").is_err());
        assert!(check_key("a b").is_err());
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_x"));
        assert!(!is_label_value("-v"));
        assert!(!is_label_value(&"v".repeat(64)));
        let mut l = BTreeMap::new();
        l.insert("app".to_string(), "a b".to_string());
        assert!(check_labels(&l).unwrap_err().contains("app=\"a b\""));
    }

    #[test]
    fn controller_uid() {
        let mut m = ObjectMeta::default();
        assert_eq!(m.namespace(), "default");
        m.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-1".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        assert_eq!(m.controller_uid(), Some("u1"));
    }
}
