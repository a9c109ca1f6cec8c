//! v1 ConfigMap and Secret: data that pods read as files and environment variables.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// A ConfigMap's keys (the fields next to `metadata`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapData {
    /// Text values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Binary values, base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    /// It can no longer change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// A Secret's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretData {
    /// `Opaque` (default) or another type name, kept.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Values, base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values as text (merged into `data` when stored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// It can no longer change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// Checks a ConfigMap or Secret key: 1–253 letters, digits, `-`, `_` and `.`, not `.` or
/// `..` (it becomes a file name).
pub fn check_data_key(k: &str) -> Result<(), String> {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && !k.starts_with("..")
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "key {k:?} is invalid: keys are letters, digits, '-', '_' and '.' (not '.', '..')"
        )),
    }
}

impl ConfigMapData {
    /// Every key with its bytes.
    pub fn values(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out: BTreeMap<String, Vec<u8>> =
            self.data.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
        for (k, v) in &self.binary_data {
            let b = decode(v).map_err(|e| format!("binaryData.{k}: {e}"))?;
            if out.insert(k.clone(), b).is_some() {
                return Err(format!("key {k:?} is in both data and binaryData"));
            }
        }
        Ok(out)
    }

    /// Checks keys and base64.
    pub fn check(&self) -> Result<(), String> {
        self.data.keys().chain(self.binary_data.keys()).try_for_each(|k| check_data_key(k))?;
        self.values().map(drop)
    }
}

impl SecretData {
    /// Every key with its bytes (`stringData` over `data`).
    pub fn values(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.data {
            out.insert(k.clone(), decode(v).map_err(|e| format!("data.{k}: {e}"))?);
        }
        for (k, v) in &self.string_data {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Ok(out)
    }

    /// Checks keys and base64.
    pub fn check(&self) -> Result<(), String> {
        self.data.keys().chain(self.string_data.keys()).try_for_each(|k| check_data_key(k))?;
        self.values().map(drop)
    }

    /// `stringData` merged into `data`, as it is stored.
    pub fn normalised(&self) -> Result<SecretData, String> {
        let data = self.values()?.into_iter().map(|(k, v)| (k, encode(&v))).collect();
        Ok(SecretData {
            kind: Some(self.kind.clone().unwrap_or_else(|| "Opaque".into())),
            data,
            string_data: BTreeMap::new(),
            immutable: self.immutable,
        })
    }
}

fn decode(v: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|e| format!("not base64: {e}"))
}

/// Base64 of `v`.
pub fn encode(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_merges_string_data() {
        let s = SecretData {
            data: [("a".to_string(), encode(b"one"))].into(),
            string_data: [("b".to_string(), "two".to_string())].into(),
            ..Default::default()
        };
        let n = s.normalised().unwrap();
        assert_eq!(n.kind.as_deref(), Some("Opaque"));
        assert_eq!(n.values().unwrap()["b"], b"two");
        assert!(n.string_data.is_empty());
        let bad =
            SecretData { data: [("a".to_string(), "!!".to_string())].into(), ..Default::default() };
        assert!(bad.check().unwrap_err().contains("data.a"));
    }

    #[test]
    fn config_map_keys() {
        assert!(check_data_key("app.conf").is_ok());
        for bad in ["", ".", "..", "..data", "a/b", "a b"] {
            assert!(check_data_key(bad).is_err(), "{bad}");
        }
        let c = ConfigMapData {
            data: [("k".to_string(), "v".to_string())].into(),
            binary_data: [("k".to_string(), encode(b"x"))].into(),
            immutable: None,
        };
        assert!(c.check().unwrap_err().contains("both"));
    }
}
