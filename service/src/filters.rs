//! Docker's `filters` query parameter: a JSON map from a filter's name to its values, in
//! either shape clients send (`{"label":["a=b"]}` or the older `{"label":{"a=b":true}}`).

use std::collections::BTreeMap;

use crate::error::ApiError;

/// Parsed filters: name → values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the parameter's JSON (empty or absent: no filters).
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let raw = raw.map(str::trim).unwrap_or("");
        if raw.is_empty() {
            return Ok(Filters::default());
        }
        let bad = |e: String| ApiError::bad_request(format!("invalid filters: {e}"));
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let mut out = BTreeMap::new();
        for (name, values) in obj {
            let list: Vec<String> = match values {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .ok_or_else(|| bad(format!("{name}: values must be strings")))
                    })
                    .collect::<Result<_, _>>()?,
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => return Err(bad(format!("{name}: values must be a list or a map"))),
            };
            out.insert(name.clone(), list);
        }
        Ok(Filters(out))
    }

    /// Refuses filter names not in `known`, as Docker does.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// Name → values.
    pub fn into_map(self) -> BTreeMap<String, Vec<String>> {
        self.0
    }

    /// The values of one filter (empty when it is not set).
    pub fn get(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True when filter `name` is unset or `test` holds for any of its values.
    pub fn any(&self, name: &str, test: impl Fn(&str) -> bool) -> bool {
        let v = self.get(name);
        v.is_empty() || v.iter().any(|x| test(x))
    }

    /// Prune's `until` filter as unix seconds (at most one value).
    pub fn until(&self) -> Result<Option<f64>, ApiError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        match self.get("until") {
            [] => Ok(None),
            [u] => Ok(Some(time_before(u, now)?)),
            _ => Err(ApiError::bad_request("more than one until filter")),
        }
    }

    /// A boolean filter such as `dangling` (`true`/`1`, `false`/`0`; unset: `None`).
    pub fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            [] => Ok(None),
            [d] if d == "true" || d == "1" => Ok(Some(true)),
            [d] if d == "false" || d == "0" => Ok(Some(false)),
            d => Err(ApiError::bad_request(format!("invalid filter '{name}={}'", d.join(",")))),
        }
    }

    /// What prune's `label` and `label!` filters keep: every `label` matches and no
    /// `label!` does.
    pub fn prune_labels<'a>(&self, labels: impl Fn(&str) -> Option<&'a str> + Copy) -> bool {
        let excluded = !self.get("label!").is_empty() && self.labels_match("label!", labels);
        self.labels_match("label", labels) && !excluded
    }

    /// Docker's `label` filter: every value (`KEY` or `KEY=VALUE`) must match `labels`.
    pub fn labels_match<'a>(
        &self,
        name: &str,
        mut labels: impl FnMut(&str) -> Option<&'a str>,
    ) -> bool {
        self.get(name).iter().all(|want| match want.split_once('=') {
            Some((k, v)) => labels(k) == Some(v),
            None => labels(want).is_some(),
        })
    }
}

/// A time bound as prune's `until` filter and `/events` take it: unix seconds, RFC 3339, or
/// a Go duration (`24h`, `1h30m`, `90s`) back from `now` (unix seconds).
pub fn time_before(v: &str, now: f64) -> Result<f64, ApiError> {
    let rfc = ironpod_images::time::parse_rfc3339(v).map(|t| t as f64);
    rfc.map(Ok)
        .unwrap_or_else(|| ironpod_events::parse_time(v, now))
        .map_err(|_| ApiError::bad_request(format!("invalid time {v:?}")))
}

/// Go's `path.Match` for Docker's `reference` filter: `*` and `?` within a path segment,
/// `[…]` classes are taken literally (no client sends them for references).
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => {
                (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != b'/').any(|i| go(rest, &n[i..]))
            }
            Some((b'?', rest)) => {
                matches!(n.split_first(), Some((c, nr)) if *c != b'/' && go(rest, nr))
            }
            Some((c, rest)) => matches!(n.split_first(), Some((d, nr)) if d == c && go(rest, nr)),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes() {
        let a = Filters::parse(Some(r#"{"label":["a=b","c"],"status":["running"]}"#)).unwrap();
        let b = Filters::parse(Some(
            r#"{"label":{"a=b":true,"c":true,"off":false},"status":{"running":true}}"#,
        ))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("status"), ["running"]);
        assert!(a.get("name").is_empty());
        assert!(a.any("name", |_| false), "an unset filter passes");
        assert!(a.any("status", |s| s == "running"));
        assert!(!a.any("status", |s| s == "exited"));
        assert_eq!(Filters::parse(None).unwrap(), Filters::default());
        assert_eq!(Filters::parse(Some("")).unwrap(), Filters::default());
    }

    #[test]
    fn bad_filters() {
        for raw in ["[", "[]", "1", r#"{"a":1}"#, r#"{"a":[1]}"#] {
            let e = Filters::parse(Some(raw)).unwrap_err();
            assert_eq!(e.status, 400, "{raw}");
        }
        let f = Filters::parse(Some(r#"{"nope":["x"]}"#)).unwrap();
        assert_eq!(f.only(&["label"]).unwrap_err().message, "invalid filter 'nope'");
    }

    #[test]
    fn labels() {
        let f = Filters::parse(Some(r#"{"label":["a=b","c"]}"#)).unwrap();
        let l = |k: &str| match k {
            "a" => Some("b"),
            "c" => Some(""),
            _ => None,
        };
        assert!(f.labels_match("label", l));
        let l2 = |k: &str| match k {
            "a" => Some("x"),
            "c" => Some(""),
            _ => None,
        };
        assert!(!f.labels_match("label", l2));
    }

    #[test]
    fn prune_helpers() {
        let f =
            Filters::parse(Some(r#"{"dangling":["0"],"label":["a"],"label!":["b=1"]}"#)).unwrap();
        assert_eq!(f.flag("dangling").unwrap(), Some(false));
        assert_eq!(f.flag("other").unwrap(), None);
        assert!(Filters::parse(Some(r#"{"dangling":["maybe"]}"#))
            .unwrap()
            .flag("dangling")
            .is_err());
        assert!(f.prune_labels(|k| (k == "a").then_some("x")));
        assert!(!f.prune_labels(|k| match k {
            "a" => Some("x"),
            "b" => Some("1"),
            _ => None,
        }));
        assert!(!f.prune_labels(|_| None), "label a is required");
        assert_eq!(f.until().unwrap(), None);
        let two = Filters::parse(Some(r#"{"until":["1","2"]}"#)).unwrap();
        assert!(two.until().is_err());
        assert_eq!(Filters::parse(Some(r#"{"until":["5"]}"#)).unwrap().until().unwrap(), Some(5.0));
    }

    #[test]
    fn until() {
        assert_eq!(time_before("100", 1000.0).unwrap(), 100.0);
        assert_eq!(time_before("1970-01-01T00:01:00Z", 0.0).unwrap(), 60.0);
        assert_eq!(time_before("1h30m", 10_000.0).unwrap(), 10_000.0 - 5400.0);
        assert_eq!(time_before("90s", 100.0).unwrap(), 10.0);
        for bad in ["", "h", "10x", "1h2", "soon"] {
            assert!(time_before(bad, 0.0).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("demo", "demo"));
        assert!(glob("dem*", "demo"));
        assert!(glob("*", "demo"));
        assert!(!glob("*", "library/demo"));
        assert!(glob("*/demo", "library/demo"));
        assert!(glob("d?mo:*", "demo:latest"));
        assert!(!glob("demo", "demo2"));
        assert!(!glob("", "x"));
    }
}
