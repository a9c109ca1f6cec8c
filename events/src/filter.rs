//! Docker's event filters (`docker events --filter KEY=VALUE`): values of one key are
//! alternatives, different keys must all match.

use std::collections::BTreeMap;

use crate::Event;

/// A filter key that is not one of Docker's (or not one ironpod's events carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid filter '{}'", self.0)
    }
}

impl std::error::Error for FilterError {}

/// The keys understood.
pub const KEYS: &[&str] =
    &["container", "event", "image", "label", "network", "type", "volume", "scope"];

/// Selected keys and their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter(BTreeMap<String, Vec<String>>);

/// `repo` → `repo:latest` (a name without tag or digest).
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

impl Filter {
    /// From key → values (unknown keys refused).
    pub fn new(map: BTreeMap<String, Vec<String>>) -> Result<Self, FilterError> {
        if let Some(k) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(FilterError(k.clone()));
        }
        Ok(Filter(map))
    }

    /// From `KEY=VALUE` arguments.
    pub fn parse_args(args: &[String]) -> Result<Self, FilterError> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in args {
            let (k, v) = a.split_once('=').ok_or_else(|| FilterError(a.clone()))?;
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        Self::new(map)
    }

    fn any(&self, key: &str, test: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|vs| vs.iter().any(|v| test(v)))
    }

    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        let attr = |k: &str| e.attributes.get(k).map(String::as_str);
        let named =
            |v: &str| e.id == v || (v.len() >= 3 && e.id.starts_with(v)) || attr("name") == Some(v);
        e.kind != crate::POD_KIND
            && self.any("type", |v| e.kind == v)
            && self.any("scope", |v| v == "local")
            && self.any("event", |v| e.action == v || e.action.split(':').next() == Some(v))
            && self.any("container", |v| e.kind == "container" && named(v))
            && self.any("network", |v| e.kind == "network" && named(v))
            && self.any("volume", |v| e.kind == "volume" && e.id == v)
            && self.any("image", |v| {
                let want = with_tag(v);
                match e.kind.as_str() {
                    "image" => named(v) || attr("name").is_some_and(|n| with_tag(n) == want),
                    _ => attr("image").is_some_and(|i| i == v || with_tag(i) == want),
                }
            })
            && self.0.get("label").is_none_or(|vs| {
                vs.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => attr(k) == Some(v),
                    None => attr(l).is_some(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(args: &[&str]) -> Filter {
        Filter::parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn docker_semantics() {
        let start = Event::now("container", "start", "0123456789abcdef")
            .with("name", "web")
            .with("image", "demo")
            .with("tier", "front");
        let exec = Event::now("container", "exec_start: sh -c true", "0123456789abcdef");
        let pull = Event::now("image", "pull", "demo:latest").with("name", "demo:latest");
        assert!(f(&[]).matches(&start));
        assert!(f(&["type=container"]).matches(&start) && !f(&["type=container"]).matches(&pull));
        assert!(f(&["container=web"]).matches(&start));
        assert!(f(&["container=0123"]).matches(&start));
        assert!(!f(&["container=other"]).matches(&start));
        assert!(f(&["event=start", "event=die"]).matches(&start), "one key: alternatives");
        assert!(f(&["event=exec_start"]).matches(&exec));
        assert!(!f(&["event=start", "type=image"]).matches(&start), "keys: all");
        assert!(f(&["image=demo"]).matches(&start) && f(&["image=demo:latest"]).matches(&start));
        assert!(f(&["image=demo"]).matches(&pull));
        assert!(f(&["label=tier=front"]).matches(&start) && f(&["label=tier"]).matches(&start));
        assert!(!f(&["label=tier=back"]).matches(&start));
        assert!(Filter::parse_args(&["nope=1".into()]).is_err());
        assert!(Filter::parse_args(&["novalue".into()]).is_err());
        // ironpod's own pod events are never Docker's.
        let pod = Event::now(crate::POD_KIND, "start", "0123456789abcdef").with("seconds", "1");
        assert!(!f(&[]).matches(&pod) && !f(&["type=pod"]).matches(&pod));
    }
}
