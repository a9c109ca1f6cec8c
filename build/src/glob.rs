//! Go's `filepath.Match`, which Docker uses for COPY and ADD sources: `*` is any run of
//! characters but `/`, `?` one character but `/`, `[…]` a class (ranges, `^` negates),
//! `\` escapes the next character.

/// Whether `pattern` has anything that makes it a glob.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '\\'])
}

/// A bad pattern (an unterminated class, a trailing escape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {0:?}")]
pub struct BadPattern(pub String);

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    check(&p).map_err(|()| BadPattern(pattern.to_string()))?;
    Ok(match_at(&p, &n))
}

fn check(p: &[char]) -> Result<(), ()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err(());
                }
                i += 2;
            }
            '[' => {
                i = class_end(p, i + 1).ok_or(())?;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index after the `]` closing a class that starts at `i` (after `[`).
fn class_end(p: &[char], mut i: usize) -> Option<usize> {
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    loop {
        match p.get(i)? {
            ']' if !first => return Some(i + 1),
            '\\' => i += 2,
            _ => i += 1,
        }
        first = false;
        if i > p.len() {
            return None;
        }
    }
}

fn class_matches(p: &[char], start: usize, end: usize, c: char) -> bool {
    let mut i = start;
    let negate = p.get(i) == Some(&'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < end - 1 {
        if p[i] == ']' && !first {
            break;
        }
        first = false;
        let mut lo = p[i];
        if lo == '\\' {
            i += 1;
            lo = p[i];
        }
        i += 1;
        let mut hi = lo;
        if i + 1 < end - 1 && p[i] == '-' {
            hi = p[i + 1];
            if hi == '\\' {
                hi = p[i + 2];
                i += 1;
            }
            i += 2;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
    }
    hit != negate
}

fn match_at(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' if n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some(end) = class_end(p, pi + 1) {
                        if n[ni] != '/' && class_matches(p, pi + 1, end, n[ni]) {
                            pi = end;
                            ni += 1;
                            continue;
                        }
                    }
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c != '\\' && c != '?' && c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Backtrack: the last `*` takes one more character (never a `/`).
        match star {
            Some((sp, sn)) if n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_cases() {
        let yes = [
            ("abc", "abc"),
            ("*", "abc"),
            ("*c", "abc"),
            ("a*", "a"),
            ("a*/b", "abc/b"),
            ("a*b*c*d*e*/f", "axbxcxdxe/f"),
            ("ab[c]", "abc"),
            ("ab[b-d]", "abc"),
            ("ab[^e-g]", "abc"),
            ("a\\*b", "a*b"),
            ("a?b", "a☺b"),
            ("[\\]a]", "]"),
            ("[\\-]", "-"),
            ("[x\\-]", "x"),
            ("*x", "xxx"),
            ("*.txt", "notes.txt"),
        ];
        for (p, n) in yes {
            assert_eq!(matches(p, n), Ok(true), "{p} {n}");
        }
        let no = [
            ("*c", "abd"),
            ("a*", "ab/c"),
            ("a*/b", "abc/c"),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff"),
            ("ab[^c]", "abc"),
            ("ab[e-g]", "abc"),
            ("a\\*b", "ab"),
            ("a?b", "a/b"),
            ("a*b", "a/b"),
            ("*.txt", "dir/notes.txt"),
        ];
        for (p, n) in no {
            assert_eq!(matches(p, n), Ok(false), "{p} {n}");
        }
        for bad in ["[", "a[", "[^", "a\\", "[a-"] {
            assert!(matches(bad, "a").is_err(), "{bad}");
        }
        assert!(is_glob("a*") && is_glob("a?") && is_glob("[ab]") && !is_glob("plain/path"));
    }

    #[test]
    fn odd_patterns_never_panic() {
        let pieces = ["*", "?", "[", "]", "^", "-", "\\", "a", "/", "é"];
        let mut seed = 3u64;
        for _ in 0..5000 {
            let mut p = String::new();
            for _ in 0..(seed % 9) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                p.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            let _ = matches(&p, "a/b]-^\\é");
        }
    }
}
