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
        if let Some(r) = parse_plain(s) {
            return Ok(ImageName(r));
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

/// The common `[domain/]path[:tag]` form (no port, no digest, ASCII only), checked by hand
/// against the distribution grammar. `None` for anything else, which then goes through
/// oci-spec's parser: that one compiles a large regex first, which costs ~0.3 s on a slow
/// (emulated or nested) CPU — more than the rest of `ironpod run`'s own work.
fn parse_plain(s: &str) -> Option<Reference> {
    if s.is_empty() || !s.is_ascii() || s.contains('@') {
        return None;
    }
    let (name, tag) = match s.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        Some(_) => return None, // a port
        None => (s, None),
    };
    if let Some(t) = tag {
        let ok = t.len() <= 128
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return None;
        }
    }
    let parts: Vec<&str> = name.split('/').collect();
    let first_ok = is_path_component(parts[0]) || (parts.len() > 1 && is_domain(parts[0]));
    if !first_ok || !parts[1..].iter().all(|p| is_path_component(p)) {
        return None;
    }
    // Docker's normalisation: a first part that looks like a host is the registry.
    let (mut domain, mut repo) = match name.split_once('/') {
        Some((d, r)) if d.contains('.') || d == "localhost" => (d.to_string(), r.to_string()),
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !repo.contains('/') {
        repo = format!("library/{repo}");
    }
    if repo.len() > 255 {
        return None;
    }
    Some(Reference::with_tag(domain, repo, tag.unwrap_or("latest").to_string()))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Host name labels `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` joined by dots.
fn is_domain(d: &str) -> bool {
    d.split('.').all(|l| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    })
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

    /// Whatever the hand-written fast path accepts, oci-spec's parser accepts identically.
    fn agrees(s: &str) {
        if let Some(fast) = parse_plain(s) {
            let lib: Reference = s.parse().unwrap_or_else(|e| panic!("{s:?}: fast ok, lib {e}"));
            assert_eq!(fast, lib, "{s:?}");
        }
    }

    #[test]
    fn fast_path_agrees_with_the_library() {
        let cases = [
            "demo",
            "demo:1",
            "busybox:1.36.1",
            "library/busybox",
            "a/b/c:t_1.x-y",
            "a.b/c",
            "index.docker.io/x",
            "index.docker.io/library/x:y",
            "localhost/a",
            "my.reg-1.io/a/b",
            "a__b",
            "a___b",
            "a--b",
            "a-.b",
            "a..b",
            "a.b",
            "a_b",
            "-a",
            "a-",
            "A/b",
            "A.b/c",
            "a.B/c",
            "x.-y/z",
            "x:-t",
            "x:_t",
            "x:.t",
            "a/B",
            "a//b",
            "/a",
            "a/",
            "a:b:c",
            "a.b:5000/c",
            "ab:",
            "a@b",
            "é",
            "x:tag with space",
        ];
        for c in cases {
            agrees(c);
        }
        assert!(parse_plain("demo").is_some());
        assert!(parse_plain("a.b/c:t").is_some());
        // Every short string over a small alphabet (a deterministic sweep).
        let alphabet = ['a', 'B', '0', '.', '_', '-', '/', ':'];
        let mut buf = String::new();
        fn sweep(buf: &mut String, alphabet: &[char], depth: usize) {
            agrees(buf);
            if depth == 0 {
                return;
            }
            for &c in alphabet {
                buf.push(c);
                sweep(buf, alphabet, depth - 1);
                buf.pop();
            }
        }
        sweep(&mut buf, &alphabet, 5);
        // Long names: the repository length limit.
        agrees(&"a".repeat(300));
        agrees(&format!("x.io/{}", "a".repeat(255)));
        agrees(&format!("x:{}", "t".repeat(129)));
        agrees(&format!("x:{}", "t".repeat(128)));
    }
}
