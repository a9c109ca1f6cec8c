//! Resource quantities (`cpu: 500m`, `memory: 128Mi`), and the int-or-string values of
//! ports and rollout limits (`targetPort: http`, `maxSurge: 25%`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity as written (`500m`, `2`, `128Mi`, `1G`, `1e3`); a YAML number is kept as its
/// decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub String);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let q = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "a quantity is a number or a string, not {other}"
                )))
            }
        };
        let q = Quantity(q.trim().to_string());
        q.value().map_err(serde::de::Error::custom)?;
        Ok(q)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Binary and decimal suffixes.
const SUFFIXES: [(&str, f64); 14] = [
    ("Ki", 1024.0),
    ("Mi", 1048576.0),
    ("Gi", 1073741824.0),
    ("Ti", 1099511627776.0),
    ("Pi", 1125899906842624.0),
    ("Ei", 1152921504606846976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
];

impl Quantity {
    /// The value in base units (cores, bytes).
    pub fn value(&self) -> Result<f64, String> {
        let s = self.0.as_str();
        let bad = || {
            format!("bad quantity {s:?}: expected a number with an optional suffix (m, Ki, Mi, Gi, k, M, G, …)")
        };
        let (num, mult) = SUFFIXES
            .iter()
            .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
            .or_else(|| s.strip_suffix('E').filter(|n| !n.contains('e')).map(|n| (n, 1e18)))
            .unwrap_or((s, 1.0));
        if num.is_empty()
            || !num.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        {
            return Err(bad());
        }
        let v: f64 = num.parse().map_err(|_| bad())?;
        let v = v * mult;
        if !v.is_finite() || v < 0.0 {
            return Err(bad());
        }
        Ok(v)
    }

    /// CPU in thousandths of a core (rounded up, as Kubernetes does).
    pub fn millicpu(&self) -> Result<u64, String> {
        Ok((self.value()? * 1000.0).ceil() as u64)
    }

    /// Memory in bytes (rounded up).
    pub fn bytes(&self) -> Result<u64, String> {
        Ok(self.value()?.ceil() as u64)
    }
}

/// A value that is a number or a name (`targetPort: 8080` or `targetPort: http`), or a
/// percentage (`maxSurge: 25%`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name or a percentage.
    String(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl IntOrString {
    /// The absolute count this stands for out of `total`: a number as it is, a percentage of
    /// `total` rounded up (`round_up`) or down.
    pub fn scaled(&self, total: i64, round_up: bool) -> Result<i64, String> {
        match self {
            IntOrString::Int(i) if *i >= 0 => Ok(*i),
            IntOrString::Int(i) => Err(format!("{i} is negative")),
            IntOrString::String(s) => {
                let p: i64 = s
                    .strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| (0..=100).contains(p))
                    .ok_or_else(|| format!("{s:?} is neither a number nor a percentage"))?;
                let num = total.saturating_mul(p);
                Ok(if round_up { num.saturating_add(99) / 100 } else { num / 100 })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn cpu_and_memory() {
        assert_eq!(q("500m").millicpu().unwrap(), 500);
        assert_eq!(q("2").millicpu().unwrap(), 2000);
        assert_eq!(q("0.25").millicpu().unwrap(), 250);
        assert_eq!(q("128Mi").bytes().unwrap(), 128 << 20);
        assert_eq!(q("1G").bytes().unwrap(), 1_000_000_000);
        assert_eq!(q("1e3").bytes().unwrap(), 1000);
        assert_eq!(q("1.5Gi").bytes().unwrap(), 3 << 29);
        for bad in ["", "Mi", "12X", "1..2", "-1", "abc", "1 Mi"] {
            assert!(q(bad).value().is_err(), "{bad}");
        }
    }

    #[test]
    fn deserialises_numbers_and_strings() {
        let v: Quantity = serde_json::from_str("1").unwrap();
        assert_eq!(v.millicpu().unwrap(), 1000);
        let v: Quantity = serde_json::from_str("\"64Mi\"").unwrap();
        assert_eq!(v.to_string(), "64Mi");
        assert!(serde_json::from_str::<Quantity>("\"64 apples\"").is_err());
        assert!(serde_json::from_str::<Quantity>("[1]").is_err());
    }

    #[test]
    fn int_or_percentage() {
        let p = IntOrString::String("25%".into());
        assert_eq!(p.scaled(3, true).unwrap(), 1);
        assert_eq!(p.scaled(3, false).unwrap(), 0);
        assert_eq!(IntOrString::Int(2).scaled(10, false).unwrap(), 2);
        assert!(IntOrString::String("x".into()).scaled(3, true).is_err());
        assert!(IntOrString::String("150%".into()).scaled(3, true).is_err());
    }
}
