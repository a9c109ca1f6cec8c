//! Word expansion as Docker's Dockerfile frontend does it.
//!
//! [`word`] and [`words`] follow buildkit's shell lexer (`ProcessWord` / `ProcessWords`):
//! quote removal, escapes, `$VAR` and the `${VAR...}` forms. [`split_raw`] and
//! [`name_values`] follow the parser's `parseWords` and `parseNameVal`: they split an
//! instruction's argument text into words that keep their quotes and escapes, so each word
//! is expanded afterwards with [`word`].
//!
//! The escape character is `\` unless the Dockerfile's `# escape=` directive says `` ` ``.
//! Inside `${VAR#pat}`, `${VAR%pat}` and `${VAR/pat/repl}` patterns, `*` and `?` are
//! wildcards and `\` (always the backslash, as in buildkit) makes them literal.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// How deeply `${...}` may nest before expansion gives up (Docker has no limit; this keeps
/// hostile input from exhausting the stack).
const MAX_DEPTH: usize = 100;

/// Variables visible to a step: build args and ENV, in order of precedence decided by the caller.
pub trait Lookup {
    /// The value of `name`, or `None` when it is unset (an empty value is set).
    fn get(&self, name: &str) -> Option<&str>;
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Lookup for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// Pairs in order of definition: the last pair with the name wins, as in `KEY=value` lists.
impl Lookup for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Pairs in order of definition: the last pair with the name wins.
impl Lookup for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Lookup::get(self.as_slice(), name)
    }
}

/// The instruction whose `KEY=VALUE` arguments [`name_values`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameValueKind {
    /// `ENV`: every pair needs a value; the legacy `ENV KEY value` form is allowed.
    Env,
    /// `LABEL`: like `ENV`.
    Label,
    /// `ARG`: a bare `NAME` declares an argument without a default.
    Arg,
}

impl fmt::Display for NameValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameValueKind::Env => "ENV",
            NameValueKind::Label => "LABEL",
            NameValueKind::Arg => "ARG",
        })
    }
}

/// Why a word could not be expanded or an instruction's arguments could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// [`word`] or [`words`] could not expand a word.
    #[error("failed to process {input:?}: {reason}")]
    Word {
        /// The word as written.
        input: String,
        /// What is wrong with it.
        reason: WordError,
    },
    /// The instruction has no arguments.
    #[error("{kind} requires at least one argument")]
    NoArguments {
        /// The instruction.
        kind: NameValueKind,
    },
    /// Legacy form `ENV KEY` without a value.
    #[error("{kind} must have two arguments")]
    MissingValue {
        /// The instruction.
        kind: NameValueKind,
    },
    /// A word of the `KEY=VALUE ...` form without `=`.
    #[error("{kind}: syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals {
        /// The instruction.
        kind: NameValueKind,
        /// The word without `=`.
        word: String,
    },
    /// `=value` with nothing before the `=`.
    #[error("{kind} names can not be blank")]
    BlankName {
        /// The instruction.
        kind: NameValueKind,
    },
}

/// What is wrong with a word that could not be expanded (messages as buildkit's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    /// A quote, `'` or `"`, is never closed.
    #[error("unexpected end of statement while looking for matching {}", quote_name(.0))]
    UnterminatedQuote(char),
    /// `${` without its closing `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${VAR/pattern` without the `/` that ends the pattern.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${{...`, `${:...`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${VAR` followed by an unsupported modifier (as written, e.g. `:=`).
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// A `#`, `%` or `/` pattern with a bad escape, e.g. `\x`.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern after expansion.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `${VAR?msg}` with `VAR` unset, or `${VAR:?msg}` with it unset or empty.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message from the word, or Docker's default.
        message: String,
    },
    /// `${...}` nested deeper than this implementation allows.
    #[error("substitutions nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

fn quote_name(quote: &char) -> &'static str {
    if *quote == '\'' {
        "single-quote"
    } else {
        "double-quote"
    }
}

/// One word, expanded and with its quotes removed (buildkit's `ProcessWord`).
///
/// `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`,
/// `${VAR:?msg}`, `${VAR?msg}` (an error carrying `msg`), `${VAR#pat}`, `${VAR##pat}`,
/// `${VAR%pat}`, `${VAR%%pat}`, `${VAR/pat/repl}` and `${VAR//pat/repl}`. Single quotes are
/// literal; double quotes expand, and in them `escape` only escapes `$`, `"` and itself.
/// Outside quotes `escape` escapes any character and is dropped at the end of the input.
/// Unset variables expand to nothing; a `$` not followed by a name stays literal.
pub fn word(input: &str, vars: &dyn Lookup, escape: char) -> Result<String, ExpandError> {
    Lexer::new(input, vars, escape).top().map(|(result, _)| result)
}

/// Several words split on unquoted whitespace after expansion (buildkit's `ProcessWords`):
/// whitespace in a variable's value splits too, quoted or escaped whitespace does not, and
/// empty words are dropped.
pub fn words(input: &str, vars: &dyn Lookup, escape: char) -> Result<Vec<String>, ExpandError> {
    Lexer::new(input, vars, escape).top().map(|(_, words)| words)
}

/// The raw words of an instruction's argument text, split on unquoted whitespace with quotes
/// and escapes kept (the parser's `parseWords`), so [`word`] can expand each afterwards. An
/// unterminated quote runs to the end; an escape at the very end is dropped.
pub fn split_raw(input: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = input.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while let Some(&ch) = chars.get(i) {
        i += 1;
        match quote {
            None if ch.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                continue;
            }
            None if ch == '\'' || ch == '"' => quote = Some(ch),
            Some(q) if ch == q => quote = None,
            _ => {}
        }
        // Outside quotes the escape keeps any next character; in double quotes too (the
        // quote does not close); in single quotes it is an ordinary character.
        if ch == escape && quote != Some('\'') {
            match chars.get(i) {
                None => quote = None,
                Some(&next) => {
                    cur.push(ch);
                    cur.push(next);
                    i += 1;
                }
            }
            continue;
        }
        cur.push(ch);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// `KEY=VALUE ...` pairs of ENV / LABEL / ARG (the parser's `parseNameVal`, and for ARG
/// `parseNameOrNameVal`), keys and values unexpanded and with their quotes, in order.
///
/// When every word has `=` each is split at its first `=`. For ENV and LABEL, a first word
/// without `=` selects the legacy form `ENV KEY value with spaces`: one pair whose value is
/// the rest of the text after the first run of blanks, spacing kept. Otherwise a word without
/// `=` is an error, except for ARG where it declares a name without default (value `None`).
/// Keys must not be empty.
pub fn name_values(
    input: &str,
    kind: NameValueKind,
    escape: char,
) -> Result<Vec<(String, Option<String>)>, ExpandError> {
    let rest = input.trim();
    let raw = split_raw(rest, escape);
    if raw.is_empty() {
        return Err(ExpandError::NoArguments { kind });
    }
    if kind != NameValueKind::Arg && !raw[0].contains('=') {
        // The parser splits the raw text (not the words) at the first run of `[\t\v\f\r ]`.
        let blank = |c: char| matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ');
        let Some((key, value)) = rest.split_once(blank) else {
            return Err(ExpandError::MissingValue { kind });
        };
        if key.is_empty() {
            return Err(ExpandError::BlankName { kind });
        }
        return Ok(vec![(key.to_string(), Some(value.trim_start_matches(blank).to_string()))]);
    }
    raw.into_iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(ExpandError::BlankName { kind }),
            Some((key, value)) => Ok((key.to_string(), Some(value.to_string()))),
            None if kind == NameValueKind::Arg => Ok((w, None)),
            None => Err(ExpandError::MissingEquals { kind, word: w }),
        })
        .collect()
}

/// Words being built by `ProcessWords`: unquoted whitespace ends a word.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    cur: String,
}

impl Words {
    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.flush();
        } else {
            self.cur.push(c);
        }
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            self.done.push(std::mem::take(&mut self.cur));
        }
    }
}

/// The lexer over one word; positions index `chars`.
struct Lexer<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn Lookup,
    escape: char,
    depth: usize,
}

type Res<T> = Result<T, WordError>;

impl<'a> Lexer<'a> {
    fn new(input: &'a str, vars: &'a dyn Lookup, escape: char) -> Self {
        // Go's text/scanner drops a byte order mark at the start.
        let chars = input.strip_prefix('\u{feff}').unwrap_or(input).chars().collect();
        Lexer { input, chars, pos: 0, vars, escape, depth: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    fn top(mut self) -> Result<(String, Vec<String>), ExpandError> {
        let mut words = Words::default();
        let result = self.process(None, false, &mut words);
        let result =
            result.map_err(|reason| ExpandError::Word { input: self.input.into(), reason })?;
        words.flush();
        Ok((result, words.done))
    }

    /// Reads up to `stop` (consumed) or the end. With `raw`, escape characters are kept in
    /// the result (for patterns). An error at the end of input becomes `at_eof`.
    fn until(&mut self, stop: char, raw: bool, at_eof: WordError) -> Res<String> {
        let result = self.process(Some(stop), raw, &mut Words::default());
        result.map_err(|e| if self.peek().is_none() { at_eof } else { e })
    }

    fn process(&mut self, stop: Option<char>, raw: bool, words: &mut Words) -> Res<String> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok(out);
            }
            let special = match ch {
                '$' => {
                    let value = self.dollar()?;
                    value.chars().for_each(|c| words.push(c));
                    out.push_str(&value);
                    continue;
                }
                '\'' => self.single_quote()?,
                '"' => self.double_quote(raw)?,
                '<' => self.heredoc_start(),
                _ => {
                    self.pos += 1;
                    if ch != self.escape {
                        words.push(ch);
                        out.push(ch);
                        continue;
                    }
                    if raw {
                        out.push(ch);
                        words.cur.push(ch);
                    }
                    let Some(escaped) = self.next() else { break };
                    out.push(escaped);
                    words.cur.push(escaped);
                    continue;
                }
            };
            words.cur.push_str(&special);
            out.push_str(&special);
        }
        match stop {
            Some(_) => Err(WordError::MissingBrace),
            None => Ok(out),
        }
    }

    fn single_quote(&mut self) -> Res<String> {
        self.pos += 1;
        let start = self.pos;
        let rest = self.chars.get(start..).unwrap_or_default();
        match rest.iter().position(|&c| c == '\'') {
            Some(len) => {
                self.pos = start + len + 1;
                Ok(rest[..len].iter().collect())
            }
            None => Err(WordError::UnterminatedQuote('\'')),
        }
    }

    fn double_quote(&mut self, raw: bool) -> Res<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(WordError::UnterminatedQuote('"')),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if raw {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// `<<` and the blanks after it stay one word in `ProcessWords` (buildkit's heredoc
    /// handling); the expanded text is unchanged.
    fn heredoc_start(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.pos += 1;
        let mut s = String::from("<<");
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            s.push(c);
            self.pos += 1;
        }
        s
    }

    /// A variable name: digits (positional), one special parameter, or letters, digits, `_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if is_digit(c) => {
                while let Some(c) = self.peek().filter(|&c| is_digit(c)) {
                    name.push(c);
                    self.pos += 1;
                }
            }
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!')) => {
                name.push(c);
                self.pos += 1;
            }
            _ => {
                while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
                    name.push(c);
                    self.pos += 1;
                }
            }
        }
        name
    }

    fn dollar(&mut self) -> Res<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get(&name).unwrap_or_default().to_string());
        }
        self.pos += 1;
        if self.depth >= MAX_DEPTH {
            return Err(WordError::TooDeep);
        }
        self.depth += 1;
        let result = self.braced();
        self.depth -= 1;
        result
    }

    /// After `${`.
    fn braced(&mut self) -> Res<String> {
        match self.peek() {
            None => return Err(WordError::MissingBrace),
            Some('{' | '}' | ':') => return Err(WordError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let (colon, op) = match self.next() {
            None => return Err(WordError::MissingBrace),
            Some('}') => return Ok(self.vars.get(&name).unwrap_or_default().to_string()),
            Some('/') => return self.replace(&name),
            Some(':') => match self.next() {
                Some(op) => (true, op),
                None => return Err(WordError::MissingBrace),
            },
            Some(op) => (false, op),
        };
        let modifier = if colon { format!(":{op}") } else { op.to_string() };
        let trim = op == '#' || op == '%';
        if (colon && trim) || (!colon && !matches!(op, '+' | '-' | '?' | '#' | '%')) {
            return Err(WordError::UnsupportedModifier(modifier));
        }
        let word = self.until('}', trim, WordError::MissingBrace)?;
        let value = self.vars.get(&name);
        let unset_or_null = value.is_none() || (colon && value == Some(""));
        let required = |message: &str| WordError::Required {
            name: name.clone(),
            message: if word.is_empty() { message.to_string() } else { word.clone() },
        };
        match op {
            '-' if unset_or_null => Ok(word),
            '+' if unset_or_null => Ok(String::new()),
            '+' => Ok(word),
            '?' if value.is_none() => Err(required("is not allowed to be unset")),
            '?' if unset_or_null => Err(required("is not allowed to be empty")),
            '-' | '?' => Ok(value.unwrap_or_default().to_string()),
            '#' | '%' => {
                let value = value.unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(p) => (true, p),
                    None => (false, word.as_str()),
                };
                let trimmed = if op == '#' {
                    trim_prefix(pattern.chars().collect(), value.chars().collect(), greedy)
                } else {
                    let reversed = reverse_pattern(pattern);
                    trim_prefix(reversed, value.chars().rev().collect(), greedy)
                        .map(|s| s.chars().rev().collect())
                };
                trimmed.map_err(|reason| bad_pattern(pattern, reason))
            }
            _ => Err(WordError::UnsupportedModifier(modifier)),
        }
    }

    /// After `${NAME/`: `${NAME/pat/repl}` or `${NAME//pat/repl}`.
    fn replace(&mut self, name: &str) -> Res<String> {
        let all = self.peek() == Some('/');
        self.pos += usize::from(all);
        let pattern = self.until('/', true, WordError::MissingSlash)?;
        let repl = self.until('}', true, WordError::MissingBrace)?;
        let value: Vec<char> = self.vars.get(name).unwrap_or_default().chars().collect();
        let toks = compile(&pattern.chars().collect::<Vec<_>>())
            .map_err(|reason| bad_pattern(&pattern, reason))?;
        let ends = match_ends(&toks, &value, true);
        let find = |from: usize| (from..ends.len()).find_map(|s| ends[s].map(|e| (s, e)));
        let mut out = String::new();
        if !all {
            let Some((s, e)) = find(0) else { return Ok(value.iter().collect()) };
            out.extend(&value[..s]);
            out.push_str(&repl);
            out.extend(&value[e..]);
            return Ok(out);
        }
        // Go's Regexp.ReplaceAllString: `$0` in the replacement is the match, an empty match
        // right after a match is not replaced, and the search always advances.
        let (mut last, mut search) = (0, 0);
        while let Some((s, e)) = find(search) {
            out.extend(&value[last..s]);
            if e > last || s == 0 {
                expand_template(&mut out, &repl, &value[s..e]);
            }
            last = e;
            search = if e == search { search + 1 } else { e };
        }
        out.extend(&value[last..]);
        Ok(out)
    }
}

fn bad_pattern(pattern: &str, reason: String) -> WordError {
    WordError::InvalidPattern { pattern: pattern.to_string(), reason }
}

/// Go's `unicode.IsDigit`, approximately (decimal digits are numeric).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// Go's letters, digits and `_`, approximately.
fn is_name_char(c: char) -> bool {
    c == '_' || c.is_alphabetic() || is_digit(c)
}

/// A wildcard pattern's pieces; `?` and `*` never match a newline (Go's `.`).
enum Tok {
    Lit(char),
    Any,
    Star,
}

/// buildkit's `convertShellPatternToRegex`: `\` quotes `*`, `?` and `\`, and is dropped
/// before `}` and `/`; any other escape is an error.
fn compile(pattern: &[char]) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        i += 1;
        toks.push(match c {
            '*' => Tok::Star,
            '?' => Tok::Any,
            '\\' => match pattern.get(i) {
                Some('}' | '/') => continue,
                Some(&n @ ('*' | '?' | '\\')) => {
                    i += 1;
                    Tok::Lit(n)
                }
                Some(n) => return Err(format!("invalid escape '\\{n}'")),
                None => return Err("invalid escape '\\' at the end".into()),
            },
            _ => Tok::Lit(c),
        });
    }
    Ok(toks)
}

/// For each start in `text`, where the match of `toks` from there ends, as Go's leftmost-first
/// regexp prefers: `*` as long (`greedy`) or as short as possible, earlier stars first.
fn match_ends(toks: &[Tok], text: &[char], greedy: bool) -> Vec<Option<usize>> {
    let n = text.len();
    let mut row: Vec<Option<usize>> = (0..=n).map(Some).collect();
    for tok in toks.iter().rev() {
        let mut prev = vec![None; n + 1];
        match tok {
            Tok::Lit(_) | Tok::Any => {
                for (p, &c) in text.iter().enumerate() {
                    let ok = match tok {
                        Tok::Lit(l) => *l == c,
                        _ => c != '\n',
                    };
                    if ok {
                        prev[p] = row[p + 1];
                    }
                }
            }
            Tok::Star => {
                // A star at p may stop anywhere up to the next newline; `best` is the
                // preferred stop among those where the rest matches.
                let mut best = None;
                for p in (0..=n).rev() {
                    if text.get(p) == Some(&'\n') {
                        best = None;
                    }
                    if row[p].is_some() && (!greedy || best.is_none()) {
                        best = Some(p);
                    }
                    prev[p] = best.and_then(|q| row[q]);
                }
            }
        }
        row = prev;
    }
    row
}

/// Removes the preferred match of `pattern` anchored at the start of `value`.
fn trim_prefix(pattern: Vec<char>, value: Vec<char>, greedy: bool) -> Result<String, String> {
    let toks = compile(&pattern)?;
    let end = match_ends(&toks, &value, greedy).first().copied().flatten().unwrap_or(0);
    Ok(value[end..].iter().collect())
}

/// Reverses a pattern keeping each `\x` pair in order (`a\*c` becomes `c\*a`), so a suffix
/// match is a prefix match on the reversed value.
fn reverse_pattern(pattern: &str) -> Vec<char> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match chars.get(i + 1) {
            Some(&next) if c == '\\' => {
                out.extend([next, c]);
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.reverse();
    out
}

/// Go's `Regexp.Expand` for a pattern without groups: `$$` is `$`, `$0`/`${0}` the match,
/// other names nothing, and a `$` not starting a name stays.
fn expand_template(out: &mut String, template: &str, matched: &[char]) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
        let after = &body[len..];
        let after = if braced { after.strip_prefix('}') } else { Some(after) };
        match after {
            Some(after) if len > 0 => {
                if &body[..len] == "0" {
                    out.extend(matched);
                }
                rest = after;
            }
            _ => out.push('$'),
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
#[path = "expand_tests.rs"]
mod tests;
