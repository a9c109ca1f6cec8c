//! Image names, normalised the way Docker does (`busybox` = `docker.io/library/busybox:latest`).

use oci_spec::distribution::Reference;

use crate::ImageError;

/// A parsed, normalised image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName(Reference);

impl ImageName {
    /// Parses a name such as `busybox`, `demo:1`, `registry:5000/a/b:tag` or `…@sha256:…`.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        if s.len() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImageError::InvalidName(format!("{s:?}")));
        }
        s.parse::<Reference>()
            .map(ImageName)
            .map_err(|e| ImageError::InvalidName(format!("{s:?}: {e}")))
    }

    /// The fully qualified name, the key in the database.
    pub fn full(&self) -> String {
        self.0.whole()
    }

    /// The parsed reference.
    pub fn reference(&self) -> &Reference {
        &self.0
    }

    /// The digest part, if any.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }
}

/// A stored full name as users write it (`docker.io/library/busybox:latest` → `busybox:latest`).
pub fn familiar(full: &str) -> String {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(ImageName::parse("busybox").unwrap().full(), "docker.io/library/busybox:latest");
        assert_eq!(ImageName::parse("demo:1").unwrap().full(), "docker.io/library/demo:1");
        assert_eq!(
            ImageName::parse("localhost:5000/a/b:t").unwrap().full(),
            "localhost:5000/a/b:t"
        );
        assert_eq!(familiar("docker.io/library/demo:1"), "demo:1");
        assert_eq!(familiar("localhost:5000/a:t"), "localhost:5000/a:t");
        for bad in ["", "UPPER", "a b", "a:", "::", "x@sha256:12", "a\n"] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
