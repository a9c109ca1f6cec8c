//! `.dockerignore`: which files of the build context are left out.
//!
//! The semantics are Docker's: the file is read as the docker CLI reads it (moby's
//! `ignorefile.ReadAll`), each pattern is compiled as moby's `patternmatcher` compiles it
//! (Go `filepath.Match` syntax plus `**`, including its exact/prefix/suffix shortcuts), and a
//! path is decided as the context walk decides it (`MatchesUsingParentResults`, applied to
//! each ancestor directory in turn, so a pattern matching a directory covers everything
//! beneath it). The last pattern that matches wins; `!` patterns re-include.

/// A `.dockerignore` line that Docker would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A `!` with no pattern after it (Docker: `illegal exclusion pattern: "!"`).
    #[error(".dockerignore:{line}: exception {pattern:?} has no pattern after the '!'")]
    EmptyException {
        /// The line (1-based).
        line: usize,
        /// The line's text, trimmed.
        pattern: String,
    },
    /// A pattern that is not valid `filepath.Match` syntax.
    #[error(".dockerignore:{line}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The line (1-based).
        line: usize,
        /// The line's text, trimmed.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The patterns of a `.dockerignore` file, ready to decide which context paths to leave out.
///
/// The default value has no patterns and excludes nothing.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern, without its `!`.
    text: String,
    exception: bool,
    kind: Kind,
}

/// How patternmatcher matches a pattern: plain string tests when it can, else its "regexp".
#[derive(Debug, Clone)]
enum Kind {
    Exact,
    Prefix(String),
    Suffix(String),
    Glob(Vec<Node>),
}

/// One piece of a compiled pattern; the whole must match the whole path.
#[derive(Debug, Clone)]
enum Node {
    Lit(char),
    /// `?`: one character other than `/`.
    Any,
    /// `[...]`: one character (like the regexp Docker builds, `/` included) in or out of ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` at the end of a pattern: anything (regexp `.*`, so no newline).
    Rest,
    /// `**` or `**/` elsewhere (regexp `(.*/)?`): nothing, or go on to `DirsBody`.
    DirsOpt,
    /// The `.*/` of `DirsOpt`: any characters but newline, ending with a `/`.
    DirsBody,
    /// A `^` outside a class, which Docker leaves in its regexp as a start-of-text anchor.
    Start,
}

impl DockerIgnore {
    /// Reads a `.dockerignore` file's text.
    ///
    /// A leading byte-order mark is dropped; lines starting with `#` (in the first column)
    /// are comments; other lines are trimmed and skipped when empty; a leading `!` makes an
    /// exception; patterns are cleaned like Go's `filepath.Clean`, then a leading `/` is
    /// dropped. Errors name the (1-based) line of the first bad pattern.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let (line, pattern) = (index + 1, raw.trim().to_owned());
            if raw.starts_with('#') || pattern.is_empty() {
                continue;
            }
            // ignorefile.ReadAll: clean what follows any '!', then drop a leading '/'.
            let (bang, rest) = match pattern.strip_prefix('!') {
                Some(rest) => ("!", rest.trim()),
                None => ("", pattern.as_str()),
            };
            let read = if rest.is_empty() { String::new() } else { clean(rest) };
            let read = if read.len() > 1 { read.strip_prefix('/').unwrap_or(&read) } else { &read };
            // patternmatcher.New trims and cleans it again, '!' included ("!/" becomes "!").
            let cleaned = clean(format!("{bang}{read}").trim());
            let (exception, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(IgnoreError::EmptyException { line, pattern }),
                Some(text) => (true, text),
                None => (false, cleaned.as_str()),
            };
            let kind = compile(text).map_err(|reason| IgnoreError::BadPattern {
                line,
                pattern: pattern.clone(),
                reason,
            })?;
            patterns.push(Pattern { text: text.to_owned(), exception, kind });
        }
        Ok(Self { patterns })
    }

    /// Whether the context path `path` (slash-separated, relative to the context root) is
    /// left out. Each ancestor directory is decided first, as the context walk does, and a
    /// pattern that matched a directory keeps matching everything beneath it. The path is
    /// cleaned first; the context root itself (`.`, empty) is never excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let Some(path) = normalize(path) else { return false };
        let mut parent = vec![false; self.patterns.len()];
        let mut current = parent.clone();
        let mut matched = false;
        let ends = path.match_indices('/').map(|(i, _)| i).chain([path.len()]);
        for end in ends {
            let prefix = &path[..end];
            matched = false;
            for (i, pattern) in self.patterns.iter().enumerate() {
                // patternmatcher neither tries nor records a pattern that could not
                // change the result so far.
                let hit = parent[i] || (pattern.exception == matched && pattern.matches(prefix));
                current[i] = hit;
                if hit {
                    matched = !pattern.exception;
                }
            }
            std::mem::swap(&mut parent, &mut current);
        }
        matched
    }

    /// Whether a walk may skip directory `dir` entirely: it is excluded and no exception
    /// pattern could re-include anything beneath it (as the docker CLI decides).
    ///
    /// The rule is BuildKit's (`fsutil`): once any exception has a wildcard (`*?[]^\`) other
    /// than a trailing `/*` or `/**`, no directory is skipped; otherwise a directory is
    /// skipped unless some exception lies inside it.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        if !self.excludes(dir) {
            return false;
        }
        let Some(dir) = normalize(dir) else { return false };
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exception).all(|p| {
            let literal = p.text.strip_suffix("/**").unwrap_or(&p.text);
            let literal = literal.strip_suffix("/*").unwrap_or(literal);
            !literal.contains(['*', '[', ']', '?', '^', '\\'])
                && !format!("{literal}/").starts_with(&dir_slash)
        })
    }

    /// Whether the file had no patterns at all (comments and blank lines only).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl Pattern {
    /// patternmatcher's `Pattern.match`: does this pattern match exactly this path?
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Glob(nodes) => glob_match(nodes, path),
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|last| *last != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// A path as matched: cleaned, with no leading `/`; `None` for the context root.
fn normalize(path: &str) -> Option<String> {
    let cleaned = clean(path);
    let path = cleaned.trim_start_matches('/');
    (!path.is_empty() && path != ".").then(|| path.to_owned())
}

#[derive(PartialEq)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Glob,
}

/// Checks `filepath.Match` syntax and compiles the way patternmatcher's `compile` does.
fn compile(pattern: &str) -> Result<Kind, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut nodes = Vec::new();
    let mut detected = Detected::Exact;
    let mut i = 0;
    while i < chars.len() {
        let first = i == 0;
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i < chars.len() {
                    nodes.extend([Node::DirsOpt, Node::DirsBody]);
                    detected = Detected::Glob;
                } else if detected == Detected::Exact {
                    detected = Detected::Prefix;
                } else {
                    nodes.push(Node::Rest);
                    detected = Detected::Glob;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' | '?' | '\\' | '[' | ']' => {
                nodes.push(match c {
                    '*' => Node::Star,
                    '?' => Node::Any,
                    '\\' => {
                        let escaped = *chars.get(i).ok_or("trailing backslash")?;
                        i += 1;
                        Node::Lit(escaped)
                    }
                    '[' => {
                        let (class, used) = parse_class(&chars[i..])?;
                        i += used;
                        class
                    }
                    _ => Node::Lit(']'),
                });
                detected = Detected::Glob;
            }
            '^' => nodes.push(Node::Start),
            _ => nodes.push(Node::Lit(c)),
        }
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).into()),
        Detected::Suffix => Kind::Suffix(pattern.strip_prefix("**").unwrap_or(pattern).into()),
        Detected::Glob => Kind::Glob(nodes),
    })
}

/// Parses a class after its `[` as Go's `matchChunk` does; returns it and the chars used.
fn parse_class(chars: &[char]) -> Result<(Node, usize), &'static str> {
    let negated = chars.first() == Some(&'^');
    let mut j = usize::from(negated);
    let mut ranges = Vec::new();
    loop {
        if chars.get(j) == Some(&']') && !ranges.is_empty() {
            return Ok((Node::Class { negated, ranges }, j + 1));
        }
        let lo = class_char(chars, &mut j)?;
        let mut hi = lo;
        if chars.get(j) == Some(&'-') {
            j += 1;
            hi = class_char(chars, &mut j)?;
        }
        if lo > hi {
            // Docker's regexp fails to compile then, so every match errors.
            return Err("character range out of order");
        }
        ranges.push((lo, hi));
    }
}

/// Go's `getEsc`: one (possibly escaped) class character, which must not end the pattern.
fn class_char(chars: &[char], j: &mut usize) -> Result<char, &'static str> {
    const UNTERMINATED: &str = "unterminated character class '['";
    match chars.get(*j) {
        None => return Err(UNTERMINATED),
        Some('-' | ']') => return Err("'-' or ']' must be escaped here in a character class"),
        Some('\\') => *j += 1,
        Some(_) => {}
    }
    let c = *chars.get(*j).ok_or(UNTERMINATED)?;
    *j += 1;
    if *j >= chars.len() {
        return Err(UNTERMINATED);
    }
    Ok(c)
}

/// Whether `nodes` match all of `path`: a set-of-states simulation (no backtracking).
fn glob_match(nodes: &[Node], path: &str) -> bool {
    let mut states = vec![false; nodes.len() + 1];
    let mut next = states.clone();
    states[0] = true;
    follow_empty(nodes, &mut states, true);
    for c in path.chars() {
        next.fill(false);
        for (i, node) in nodes.iter().enumerate().filter(|(i, _)| states[*i]) {
            let (stay, advance) = match node {
                Node::Lit(l) => (false, c == *l),
                Node::Any => (false, c != '/'),
                Node::Class { negated, ranges } => {
                    (false, ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated)
                }
                Node::Star => (c != '/', false),
                Node::Rest => (c != '\n', false),
                Node::DirsBody => (c != '\n', c == '/'),
                Node::DirsOpt | Node::Start => (false, false),
            };
            next[i] |= stay;
            next[i + 1] |= advance;
        }
        if !next.contains(&true) {
            return false;
        }
        follow_empty(nodes, &mut next, false);
        std::mem::swap(&mut states, &mut next);
    }
    states[nodes.len()]
}

/// Adds the states reachable without reading a character (all such moves go forward).
fn follow_empty(nodes: &[Node], states: &mut [bool], at_start: bool) {
    for (i, node) in nodes.iter().enumerate() {
        if !states[i] {
            continue;
        }
        let skip = matches!(node, Node::DirsOpt); // over the DirsBody that follows it
        if skip
            || matches!(node, Node::Star | Node::Rest)
            || (at_start && matches!(node, Node::Start))
        {
            states[i + 1] = true;
        }
        if skip {
            states[i + 2] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).expect("valid .dockerignore")
    }

    /// `expect` lists paths, each prefixed `+` (excluded) or `-` (kept).
    #[track_caller]
    fn check(text: &str, expect: &str) {
        let ignore = ig(text);
        for case in expect.split_whitespace() {
            let (want, path) = case.split_at(1);
            assert_eq!(ignore.excludes(path), want == "+", "patterns {text:?}, path {path:?}");
        }
    }

    #[test]
    fn empty_and_comments() {
        assert!(DockerIgnore::default().is_empty() && !DockerIgnore::default().excludes("a"));
        let ignore = ig("# comment\n\n   \n\t\n#*\n");
        assert!(ignore.is_empty() && !ignore.excludes("# comment") && !ignore.excludes("x"));
        // Only a '#' in the first column starts a comment (as in the docker CLI).
        check("  #x\n", "+#x -x");
        // Byte-order mark, CRLF line ends, surrounding whitespace.
        check("\u{feff}foo\r\n bar \r\n", "+foo +bar -baz");
    }

    #[test]
    fn star_and_question() {
        check("*.txt", "+a.txt +.txt -dir/a.txt -a.txtx");
        check("*", "+a +a/b/c -. -/");
        check("a*/b", "+abc/b +a/b -a/c/b");
        check("temp?", "+tempa -temp -tempab -x/tempa");
        check("a?b", "+axb -a/b +a\u{e9}b");
        check("abc.def\na(b)c+{d}|$", "+abc.def -abcxdef +a(b)c+{d}|$ -abc");
        check("a.|)$*", "+a.|)$x -a.|)");
    }

    #[test]
    fn classes_and_escapes() {
        check("[a-c]x", "+ax +bx +cx -dx -x");
        check("[a-cx-z]", "+b +y -m");
        check("[^a-c]x", "+dx -ax -ddx");
        // Go's filepath.Match negates with '^' only: '!' is an ordinary member.
        check("[!a]x", "+!x +ax -bx");
        check("a[\\]]b\n[\\-c]\n[*?]\nx]", r"+a]b -a\b +- +c +* +? -a +x]");
        // Docker's regexp lets a class match '/', unlike filepath.Match.
        check("a[/]b\nc[^x]d", "+a/b +c/d -cxd");
        check("\\*\na\\?\n\\[x]", "+* -a +a? -ab +[x] -x");
        check("a\\\\\n\\d", r"+a\ +d -1");
        // Exact patterns compare '^' literally; Docker's regexp makes it a start anchor.
        check("a^b", "+a^b");
        check("*^b", "-^b -x^b");
        check("^*.txt", "+a.txt");
    }

    #[test]
    fn double_star_and_parents() {
        check("**/*.go", "+a.go +x/a.go +x/y/a.go -a.gox");
        check("**/foo", "+foo +a/foo +a/b/foo +a/foo/x -afoo -foo2");
        // patternmatcher's suffix shortcut: "**file" is a plain suffix test.
        check("**file", "+file +dir/file +xfile");
        check("**", "+a +a/b");
        check("**/**/*.txt", "+f.txt +d/d/f.txt -d/f.txt2");
        check("**/.foo", "+.foo -bar.foo");
        check("a/**/b", "+a/b +a/x/b +a/x/y/b -a/xb -ab -x/a/b +a/b/c");
        check("a**/*.txt", "+a/f.txt +a/d/d/f.txt -b/f.txt");
        check("abc/**", "-abc +abc/def +abc/d/e -abcd");
        check("abc**", "+abc +abcdef +abc/x");
        check("**/dir2/*", "+dir/dir2/file +dir2/file -dir/file");
        check("a/*.txt**", "+a/file.txt -a/d/f.txt");
        check("a/**/*.md", "+a/x.md +a/b/c/x.md -b/x.md");
        // A pattern matching a directory excludes everything beneath it.
        check("build", "+build +build/x/y -build2 -a/build");
        check("a/b", "-a +a/b +a/b/c/d -a/bc");
    }

    #[test]
    fn exceptions_and_skipping() {
        check("*.md\n!README.md", "+a.md -README.md -docs/a.md");
        let text = "docs\n!docs/keep.txt";
        check(text, "+docs +docs/a -docs/keep.txt");
        let ignore = ig(text);
        assert!(!ignore.can_skip_dir("docs") && !ignore.can_skip_dir("src"));
        assert!(ig("docs").can_skip_dir("docs") && ig("docs").can_skip_dir("docs/sub"));
        assert!(!ig("docs").can_skip_dir("src") && !ig("docs").can_skip_dir("."));
        assert!(ig("docs\n!other").can_skip_dir("docs"));
        assert!(!ig("docs\n!docs/*").can_skip_dir("docs"));
        assert!(!ig("docs\n!docs").can_skip_dir("docs"));
        // A wildcard exception anywhere stops all skipping (BuildKit's rule).
        let ignore = ig("docs\n!**/keep");
        assert!(!ignore.can_skip_dir("docs"));
        check("docs\n!**/keep", "+docs/x -docs/a/keep");
        assert!(!ig("**\n!a/*.go").can_skip_dir("b"));
        assert!(ig("**\n!a/b/**").can_skip_dir("c") && !ig("**\n!a/b/**").can_skip_dir("a"));
        check("**\n!util/web", "-util/web/foo +util/x");
        check("**\n!util/web\nutil/web/foo", "+util/web/foo -util/web/b");
    }

    #[test]
    fn last_match_wins() {
        check("!a\na", "+a");
        check("a\n!a\na", "+a");
        check("a\na\n!a", "-a");
        check("*.md\n!README*.md\nREADME-secret.md", "+x.md -README.md +README-secret.md");
        check("*.md\nREADME-secret.md\n!README*.md", "+x.md -README-secret.md");
        // The walk's order: "!foo" is not tried on "foo" (nothing excluded yet), so it does
        // not cover "foo/bar" afterwards; "foo/bar" stays excluded, as in Docker.
        check("foo/bar\n!foo", "-foo +foo/bar -foo/baz");
    }

    #[test]
    fn leading_slash_dot_and_cleaning() {
        check("/foo", "+foo -x/foo");
        check("./foo/bar", "+foo/bar -foo");
        check("//a/./b/", "+a/b");
        check("a/../b", "+b -a");
        check("a//b", "+a/b");
        check("foo/", "+foo/x");
        check("*\n!/keep\n! ./also", "-keep -also +x");
        check("/\n../x\n.", "-a -x");
        // A leading "/ " leaves a space that patternmatcher trims.
        check("/ b*", "+b -x");
        // Paths are cleaned too.
        check("a/b", "+./a/b +a//b/ +/a/b +x/../a/b");
    }

    #[test]
    fn docker_documentation_examples() {
        let text = "# comment\n*/temp*\n*/*/temp*\ntemp?";
        check(text, "+somedir/temporary.txt +somedir/temp +somedir/subdir/temporary.txt");
        check(text, "+tempa +tempb -temporary.txt -a/b/c/temp -somedir/x.txt +x/temp/y");
    }

    #[test]
    fn errors_name_the_line() {
        let err = DockerIgnore::parse("ok\n# c\n[abc\n").expect_err("bad class");
        let IgnoreError::BadPattern { line: 3, pattern, .. } = &err else { panic!("{err:?}") };
        assert_eq!(pattern, "[abc");
        assert!(err.to_string().contains(":3:"), "{err}");
        let err = DockerIgnore::parse("a\n\n  !  \n").expect_err("bare !");
        assert_eq!(err, IgnoreError::EmptyException { line: 3, pattern: "!".into() });
        assert!(matches!(DockerIgnore::parse("!/"), Err(IgnoreError::EmptyException { .. })));
        for bad in ["abc\\", "[]", "[]a]", "[-a]", "[a-]", "[z-a]", "a[", "[^]", "[\\]", "x/[a"] {
            let err = DockerIgnore::parse(bad).expect_err(bad);
            assert!(matches!(err, IgnoreError::BadPattern { line: 1, .. }), "{bad}: {err}");
        }
        for good in ["[!]", "[^^]", "[a-a]", "]", "!!x", "\\!x", "[[]", "a[\\-]"] {
            DockerIgnore::parse(good).expect(good);
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let alphabet: Vec<char> = "ab/*?[]^!-\\. #\u{e9}\n\r".chars().collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let word = |next: &mut dyn FnMut(usize) -> usize, len: usize| -> String {
            (0..next(len)).map(|_| alphabet[next(alphabet.len())]).collect()
        };
        let mut parsed = 0;
        for _ in 0..3000 {
            let text = word(&mut next, 24);
            let Ok(ignore) = DockerIgnore::parse(&text) else { continue };
            parsed += 1;
            for _ in 0..8 {
                let dir = word(&mut next, 8).replace('\n', "");
                let child = format!("{dir}/{}", word(&mut next, 8));
                // Skipping a directory never drops a file the walk would have kept.
                let skip = ignore.can_skip_dir(&dir);
                assert!(
                    ignore.excludes(&child) || !skip || child.contains(".."),
                    "{text:?} {child:?}"
                );
            }
        }
        assert!(parsed > 300, "{parsed}");
        let long = "a/".repeat(5000);
        assert!(ig("**/**/**/**/**/*b").excludes(&format!("{long}b")));
        assert!(!ig("*a*a*a*a*a*a*b").excludes(&"a".repeat(10_000)));
    }
}
