//! Label selectors: the `selector:` of workloads (`matchLabels`, `matchExpressions`), a
//! Service's or ReplicationController's plain map, and the `-l` strings of the command line
//! (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta;

/// A workload's `selector` (`matchLabels` and `matchExpressions`, all must match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirement {
    /// The label's key.
    pub key: String,
    /// How the label is compared.
    pub operator: Operator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// The label is one of the values.
    In,
    /// The label is absent or none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl Requirement {
    /// Whether `labels` meet this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.operator {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => !v.is_some_and(|v| self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }

    fn check(&self) -> Result<(), String> {
        meta::check_key(&self.key)?;
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => {
                Err(format!("requirement on {:?}: In and NotIn need values", self.key))
            }
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => Err(format!(
                "requirement on {:?}: Exists and DoesNotExist take no values",
                self.key
            )),
            _ => self.values.iter().try_for_each(|v| match meta::is_label_value(v) {
                true => Ok(()),
                false => Err(format!("requirement on {:?}: bad value {v:?}", self.key)),
            }),
        }
    }
}

impl LabelSelector {
    /// A selector of exactly these labels.
    pub fn of(labels: &BTreeMap<String, String>) -> Self {
        LabelSelector { match_labels: labels.clone(), match_expressions: Vec::new() }
    }

    /// Whether the selector selects nothing at all (no requirement).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` match every requirement (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Checks keys, values and operators.
    pub fn check(&self) -> Result<(), String> {
        meta::check_labels(&self.match_labels)?;
        self.match_expressions.iter().try_for_each(Requirement::check)
    }

    /// Parses a command line selector: comma-separated `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
    /// `k notin (a,b)`, `k` and `!k`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut sel = LabelSelector::default();
        for term in split_terms(s)? {
            let term = term.trim();
            if term.is_empty() {
                return Err(format!("bad selector {s:?}: an empty requirement"));
            }
            let req = parse_term(term).map_err(|e| format!("bad selector {s:?}: {e}"))?;
            req.check().map_err(|e| format!("bad selector {s:?}: {e}"))?;
            sel.match_expressions.push(req);
        }
        Ok(sel)
    }
}

/// Splits at commas outside parentheses.
fn split_terms(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("bad selector {s:?}: unbalanced ')'"))?
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("bad selector {s:?}: unbalanced '('"));
    }
    if !s.trim().is_empty() {
        out.push(&s[start..]);
    }
    Ok(out)
}

fn parse_term(t: &str) -> Result<Requirement, String> {
    let req = |key: &str, operator, values: Vec<String>| Requirement {
        key: key.trim().to_string(),
        operator,
        values,
    };
    if let Some(k) = t.strip_prefix('!') {
        return Ok(req(k, Operator::DoesNotExist, vec![]));
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(req(k, Operator::NotIn, vec![v.trim().to_string()]));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(req(k, Operator::In, vec![v.trim().to_string()]));
    }
    let words: Vec<&str> = t.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim_start();
        let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
            (Operator::NotIn, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (Operator::In, l)
        } else {
            return Err(format!("unknown operator in {t:?}"));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| format!("{t:?}: the values go in parentheses"))?;
        let values = inner.split(',').map(|v| v.trim().to_string()).collect();
        return Ok(req(key, op, values));
    }
    Ok(req(t, Operator::Exists, vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_every_form() {
        let s = LabelSelector::parse("a=b,c!=d,e in (x, y),f notin (z),g,!h,i==j").unwrap();
        let ops: Vec<Operator> = s.match_expressions.iter().map(|r| r.operator).collect();
        use Operator::*;
        assert_eq!(ops, [In, NotIn, In, NotIn, Exists, DoesNotExist, In]);
        assert_eq!(s.match_expressions[2].values, ["x", "y"]);
        let l = labels(&[("a", "b"), ("e", "y"), ("g", ""), ("i", "j")]);
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("a", "b"), ("e", "y"), ("g", ""), ("i", "j"), ("h", "1")])));
        assert!(!s.matches(&labels(&[("a", "b"), ("c", "d"), ("e", "y"), ("g", ""), ("i", "j")])));
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_selectors() {
        for bad in ["a in x", "a in (x", "a)", "a=b,,c", "a ~ b", "a=b c", "bad key=1"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let s = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![Requirement {
                key: "tier".into(),
                operator: Operator::NotIn,
                values: vec!["db".into()],
            }],
        };
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "api")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        let bad = Requirement { key: "a".into(), operator: Operator::In, values: vec![] };
        assert!(bad.check().is_err());
    }
}
