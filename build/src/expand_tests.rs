//! Cases follow buildkit's `envVarTest`, `wordsTest` and `lex_test.go`, plus parser cases.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `None` means an error is expected.
fn check(vars: &dyn Lookup, escape: char, cases: &[(&str, Option<&str>)]) {
    for (input, want) in cases {
        let got = word(input, vars, escape);
        match want {
            Some(w) => assert_eq!(got.as_deref(), Ok(*w), "input {input:?}"),
            None => assert!(got.is_err(), "input {input:?} gave {got:?}"),
        }
    }
}

fn check_words(vars: &dyn Lookup, cases: &[(&str, Option<&[&str]>)]) {
    for (input, want) in cases {
        let got = words(input, vars, '\\');
        match want {
            Some(w) => {
                assert_eq!(got, Ok(w.iter().map(|s| s.to_string()).collect()), "input {input:?}")
            }
            None => assert!(got.is_err(), "input {input:?} gave {got:?}"),
        }
    }
}

/// The reason `input` fails to expand.
fn reason(input: &str, vars: &dyn Lookup) -> WordError {
    match word(input, vars, '\\') {
        Err(ExpandError::Word { input: i, reason }) if i == input => reason,
        other => panic!("{input:?} gave {other:?}"),
    }
}

fn pairs(input: &str, kind: NameValueKind) -> Result<Vec<(String, Option<String>)>, ExpandError> {
    name_values(input, kind, '\\')
}

fn kv(k: &str, v: Option<&str>) -> (String, Option<String>) {
    (k.to_string(), v.map(str::to_string))
}

#[test]
fn env_var_test_quoting_and_escapes() {
    let vars = env(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]);
    check(
        &vars,
        '\\',
        &[
            ("hello", Some("hello")),
            (r"he'll'o", Some("hello")),
            (r"he'llo", None),
            (r"he\'llo", Some("he'llo")),
            (r"he\\'llo", None),
            (r"abc\tdef", Some("abctdef")),
            (r#""abc\tdef""#, Some(r"abc\tdef")),
            (r#""abc\\tdef""#, Some(r"abc\tdef")),
            (r"'abc\tdef'", Some(r"abc\tdef")),
            (r"hello\", Some("hello")),
            (r"hello\\", Some(r"hello\")),
            (r#""hello"#, None),
            (r#""hello\""#, None),
            (r#""hel'lo""#, Some("hel'lo")),
            (r"'hello", None),
            (r"'hello\'", Some(r"hello\")),
            (r"'hello\there'", Some(r"hello\there")),
            (r#""''""#, Some("''")),
            (r#"'"hello"'"#, Some(r#""hello""#)),
            ("안'녕'하세요", Some("안녕하세요")),
            (r"안녕\'하세요", Some("안녕'하세요")),
            ("안'녕하세요", None),
            (r#""안녕\t하세요""#, Some(r"안녕\t하세요")),
            ("", Some("")),
            ("\u{feff}a\u{feff}", Some("a\u{feff}")),
        ],
    );
}

#[test]
fn env_var_test_substitutions() {
    let vars = env(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]);
    check(
        &vars,
        '\\',
        &[
            ("$.", Some("$.")),
            ("abc$", Some("abc$")),
            ("$ x", Some("$ x")),
            ("he$1x", Some("hex")),
            ("he$.x", Some("he$.x")),
            ("he$pwd.", Some("he.")),
            ("he$PWD", Some("he/home")),
            (r"he\$PWD", Some("he$PWD")),
            (r"he\\$PWD", Some(r"he\/home")),
            (r#""he\$PWD""#, Some("he$PWD")),
            (r#""he\\$PWD""#, Some(r"he\/home")),
            (r"'\$PWD'", Some(r"\$PWD")),
            (r"\${}", Some("${}")),
            (r"he\${}xx", Some("he${}xx")),
            ("${}", None),
            ("he${}xx", None),
            ("he${hi}xx", Some("hexx")),
            ("he${PWD}", Some("he/home")),
            ("he${.}", None),
            ("he${XXX:-000}xx", Some("he000xx")),
            ("he${PWD:-000}xx", Some("he/homexx")),
            ("he${XXX:-$PWD}xx", Some("he/homexx")),
            ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
            ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
            ("he${XXX:YYY}", None),
            ("he${XXX?}", None),
            ("he${XXX:?}", None),
            ("he${PWD?}", Some("he/home")),
            ("he${PWD:?}", Some("he/home")),
            ("he${NULL?}", Some("he")),
            ("he${NULL:?}", None),
            ("he${XXX:+${PWD}}xx", Some("hexx")),
            ("he${PWD:+${XXX}}xx", Some("hexx")),
            ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
            ("he${XXX:+000}xx", Some("hexx")),
            ("he${PWD:+000}xx", Some("he000xx")),
            ("'he${XX}'", Some("he${XX}")),
            (r#""he${PWD}""#, Some("he/home")),
            (r#""he'$PWD'""#, Some("he'/home'")),
            ("he${PWD", None),
            ("he${PWD:=000}xx", None),
            ("he${PWD:+${PWD}:}xx", Some("he/home:xx")),
            (r"he${XXX:-\$PWD:}xx", Some("he$PWD:xx")),
            (r"he${XXX:-\${PWD}z}xx", Some("he${PWDz}xx")),
            ("안녕$KOREAN", Some("안녕한국어")),
            ("안녕${XXX:-${YYY:-yyy}}xx", Some("안녕yyyxx")),
            ("${{aaa}", None),
            ("${aaa}}", Some("}")),
            ("${aaa", None),
            ("${", None),
            ("${aaa:", None),
            ("${{aaa:-bbb}", None),
            ("${aaa:-bbb}}", Some("bbb}")),
            ("${aaa:-bbb", None),
            ("${aaa:-${bbb:-ccc}}", Some("ccc")),
            ("${aaa:-bbb ${foo}", None),
            ("${aaa:-bbb {foo}", Some("bbb {foo")),
            (r#"${aaa:-"b  c"'d'}"#, Some("b  cd")),
            (r#""${aaa:-"x y"}""#, Some("x y")),
            ("${:}", None),
            ("${:-bbb}", None),
            ("${:+bbb}", None),
        ],
    );
}

#[test]
fn positional_and_special_parameters_are_unset() {
    let vars = env(&[("PWD", "/home")]);
    let mut cases = Vec::new();
    for p in ["1", "9", "999", "001", "@", "*", "#", "?", "-", "$", "!", "0"] {
        cases.push((format!("${p}"), ""));
        cases.push((format!("${{{p}}}"), ""));
        cases.push((format!("${{{p}:+bbb}}aaa"), "aaa"));
        cases.push((format!("${{{p}:-bbb}}aaa"), "bbbaaa"));
    }
    cases.push(("$999aaa".into(), "aaa"));
    cases.push(("$001aaa".into(), "aaa"));
    cases.push(("$@@@".into(), "@@"));
    cases.push(("$@aaa".into(), "aaa"));
    for (input, want) in &cases {
        assert_eq!(word(input, &vars, '\\').as_deref(), Ok(*want), "input {input:?}");
    }
}

#[test]
fn mandatory_variables() {
    let (no_empty, no_unset) = ("${VAR:?message here$ARG}", "${VAR?message here$ARG}");
    let set = env(&[("VAR", "plain"), ("ARG", "x")]);
    let empty = env(&[("VAR", ""), ("ARG", "x")]);
    let unset = env(&[("ARG", "x")]);
    assert_eq!(word(no_empty, &set, '\\').as_deref(), Ok("plain"));
    assert_eq!(word(no_unset, &set, '\\').as_deref(), Ok("plain"));
    assert_eq!(word(no_unset, &empty, '\\').as_deref(), Ok(""));
    for (input, vars) in [(no_empty, &empty), (no_empty, &unset), (no_unset, &unset)] {
        let err = word(input, vars, '\\').unwrap_err();
        assert!(matches!(reason(input, vars), WordError::Required { name, .. } if name == "VAR"));
        assert!(err.to_string().contains("VAR: message herex"), "{err}");
    }
    let err = word("${BAZ:?}", &unset, '\\').unwrap_err();
    assert!(err.to_string().ends_with("BAZ: is not allowed to be unset"), "{err}");
    let err = word("${VAR:?}", &empty, '\\').unwrap_err();
    assert!(err.to_string().ends_with("VAR: is not allowed to be empty"), "{err}");
}

#[test]
fn defaults_alternatives_and_bad_modifiers() {
    let vars = env(&[("FOO", "xxx"), ("BAR", "")]);
    check(
        &vars,
        '\\',
        &[
            ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", Some("xxx  ccc")),
            ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", Some("xxx bbb ccc")),
            ("${FOO:-}", Some("xxx")),
            ("${BAZ:-}", Some("")),
            ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", Some("aaa bbb ")),
            ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", Some("aaa  ")),
            ("${FOO?aaa}", Some("xxx")),
            ("${BAR?bbb}", Some("")),
            ("${BAZ?ccc}", None),
            ("${FOO:?aaa}", Some("xxx")),
            ("${BAR:?bbb}", None),
            ("${FOO=aaa}", None),
            ("${FOO=:aaa}", None),
            ("${FOO=}", None),
            ("${FOO:#}", None),
            ("${FOO:##}", None),
            ("${FOO:%}", None),
            ("${FOO:%%}", None),
            ("${FOO:/a/b}", None),
        ],
    );
    assert_eq!(reason("${FOO:=x}", &vars), WordError::UnsupportedModifier(":=".into()));
    assert_eq!(reason("${FOO", &vars), WordError::MissingBrace);
    assert_eq!(reason("${FOO:-${X?oops}", &vars), WordError::MissingBrace);
    assert_eq!(reason("${FOO:-${X?oops}}", &vars).to_string(), "X: oops");
    assert_eq!(reason("${}", &vars), WordError::BadSubstitution);
    assert_eq!(reason("a'b", &vars), WordError::UnterminatedQuote('\''));
    let err = word("\"ab", &vars, '\\').unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"failed to process "\"ab": unexpected end of statement while looking for matching double-quote"#
    );
}

#[test]
fn trimming_patterns() {
    let foo = |v: &str| env(&[("FOO", v), ("BAR", "x"), ("EMPTY", "")]);
    let cases: &[(&str, &str, Option<&str>)] = &[
        (r"${FOO#()[]{\}^$.\*\?|\\}", r"()[]{}^$.*?|\x", Some("x")),
        (r"${FOO%%\**}", "xx**", Some("xx")),
        ("${FOO#*x*y}", "xxyy", Some("y")),
        ("${FOO#*}", "xxyy", Some("xxyy")),
        ("${FOO#$BAR}", "xxyy", Some("xyy")),
        ("${FOO#$EMPTY}", "xxyy", Some("xxyy")),
        ("${FOO#}", "xxyy", Some("xxyy")),
        ("${FOO##*x}", "xxyy", Some("yy")),
        ("${FOO##}", "xxyy", Some("xxyy")),
        (r"${FOO#?\?}", "???y", Some("?y")),
        ("${ABC:-.}${FOO%x}${ABC:-.}", "xxyy", Some(".xxyy.")),
        (r"${FOO%%\**\*}", "a***yy*", Some("a")),
        ("${FOO%}", "xxyy", Some("xxyy")),
        ("${FOO%%$EMPTY}", "xxyy", Some("xxyy")),
        ("${FOO%.*}", "a.b.c", Some("a.b")),
        ("${FOO%%.*}", "a.b.c", Some("a")),
        ("${FOO#*.}", "a.b.c", Some("b.c")),
        ("${FOO##*.}", "a.b.c", Some("c")),
        ("${FOO%?}", "héllo", Some("héll")),
        ("${FOO##*}", "a\nb", Some("\nb")),
        ("${FOO#a?b}", "a\nb", Some("a\nb")),
        ("${NOPE#*}", "", Some("")),
        (r"${FOO#\x}", "x", None),
        ("${FOO#a", "a", None),
    ];
    for (input, value, want) in cases {
        let got = word(input, &foo(value), '\\');
        match want {
            Some(w) => assert_eq!(got.as_deref(), Ok(*w), "input {input:?}"),
            None => assert!(got.is_err(), "input {input:?} gave {got:?}"),
        }
    }
    let err = reason(r"${FOO#\x}", &foo("x"));
    assert_eq!(err.to_string(), r"invalid pattern (\x) in substitution: invalid escape '\x'");
}

#[test]
fn replacements() {
    let check_with = |input: &str, pairs: &[(&str, &str)], want: Option<&str>| {
        let got = word(input, &env(pairs), '\\');
        match want {
            Some(w) => assert_eq!(got.as_deref(), Ok(w), "input {input:?}"),
            None => assert!(got.is_err(), "input {input:?} gave {got:?}"),
        }
    };
    let both = "${FOO/$NEEDLE/$R} - ${FOO//$NEEDLE/$R}";
    let needle = |foo, needle, r| [("FOO", foo), ("NEEDLE", needle), ("R", r)];
    check_with(both, &needle("/foo*/*/*.txt", r"\*/", "."), Some("/foo.*/*.txt - /foo..*.txt"));
    check_with(both, &needle("/tmp/tmp/bar.txt", "/tmp", ""), Some("/tmp/bar.txt - /bar.txt"));
    check_with(both, &needle("/a/foo/b/c.txt", "/?/", "/"), Some("/foo/b/c.txt - /foo/c.txt"));
    check_with(
        both,
        &needle("http://google.de", "http://", "https://"),
        Some("https://google.de - https://google.de"),
    );
    check_with(r"${FOO//\//\/}", &[("FOO", "/tmp/foo.txt")], Some(r"\/tmp\/foo.txt"));
    check_with("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], Some("wwxxyy"));
    check_with("${FOO//ww}", &[("FOO", "xxyy")], None);
    check_with("${FOO//}", &[("FOO", "xxyy")], None);
    check_with("${FOO/a}", &[("FOO", "xxyy")], None);
    check_with("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"));
    check_with("${FOO///}", &[], Some(""));
    check_with("${FOO///-}", &[("FOO", "ab")], Some("-a-b-"));
    check_with("${FOO//x*/-}", &[("FOO", "axbxc")], Some("a-"));
    check_with("${FOO/x*/-}", &[("FOO", "axb\nxc")], Some("a-\nxc"));
    // Like Go's ReplaceAllString, `$0` in the replacement is the match and `$$` a dollar.
    check_with("${FOO//o/$R}", &[("FOO", "foo"), ("R", "<$0>")], Some("f<o><o>"));
    check_with("${FOO//o/$R}", &[("FOO", "foo"), ("R", "$$|${0}|$1|$")], Some("f$|o||$$|o||$"));
    check_with("${FOO/o/$R}", &[("FOO", "foo"), ("R", "<$0>")], Some("f<$0>o"));
    check_with(r"${FOO/\x/y}", &[("FOO", "x")], None);
    assert_eq!(reason("${FOO/a", &env(&[])), WordError::MissingSlash);
    assert_eq!(reason("${FOO/a/b", &env(&[])), WordError::MissingBrace);
}

#[test]
fn platform_release_name() {
    let release =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
    let with = |more: &[(&str, &str)]| env(&[&base[..], more].concat());
    let arm = with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]);
    assert_eq!(word(release, &arm, '\\').as_deref(), Ok("something-v1.2.3.linux-arm-v7.tar.gz"));
    for vars in
        [with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]), with(&[("TARGETARCH", "arm64")])]
    {
        assert_eq!(
            word(release, &vars, '\\').as_deref(),
            Ok("something-v1.2.3.linux-arm64.tar.gz")
        );
    }
}

#[test]
fn backtick_escape() {
    let vars = env(&[("PWD", "/home")]);
    check(
        &vars,
        '`',
        &[
            ("he`$PWD", Some("he$PWD")),
            (r"C:\dir\$PWD", Some(r"C:\dir\/home")),
            ("\"a`\"b\"", Some("a\"b")),
            ("\"a``b\"", Some("a`b")),
            ("\"a`tb\"", Some("a`tb")),
            ("\"a\\$PWD\"", Some("a\\/home")),
            ("hello`", Some("hello")),
            ("it`'s", Some("it's")),
            ("'it`s'", Some("it`s")),
            ("${X:-`}}", Some("}")),
            (r"${PWD#\/}", Some("home")),
        ],
    );
    assert_eq!(words("a` b c", &vars, '`').unwrap(), ["a b", "c"]);
}

#[test]
fn words_test() {
    let vars =
        env(&[("hi", "hi"), ("space", "abc  def"), ("leading", "  ab c"), ("trailing", "ab c   ")]);
    check_words(
        &vars,
        &[
            ("hello", Some(&["hello"])),
            ("hello${nope}bye", Some(&["hellobye"])),
            ("hello${hi}bye", Some(&["hellohibye"])),
            ("hello${space}bye", Some(&["helloabc", "defbye"])),
            ("hello\"${space}\"bye", Some(&["helloabc  defbye"])),
            ("hello \"${space}\"bye", Some(&["hello", "abc  defbye"])),
            ("hello${leading}def", Some(&["hello", "ab", "cdef"])),
            ("hello\"${leading}\" def", Some(&["hello  ab c", "def"])),
            ("hello\"${leading}\"", Some(&["hello  ab c"])),
            ("hello${leading}", Some(&["hello", "ab", "c"])),
            ("hello${trailing}", Some(&["helloab", "c"])),
            ("hello${trailing}d", Some(&["helloab", "c", "d"])),
            ("hello\"${trailing}\"d", Some(&["helloab c   d"])),
            ("hel\"lo${trailing}\"", Some(&["helloab c   "])),
            ("hello\" there  \"", Some(&["hello there  "])),
            ("hello there     ", Some(&["hello", "there"])),
            (r"hello\ there", Some(&["hello there"])),
            ("hello\" there", None),
            (r#"hello\" there"#, Some(&["hello\"", "there"])),
            (r#"hello"\\there""#, Some(&[r"hello\there"])),
            (r#"hello"\there""#, Some(&[r"hello\there"])),
            (r"hello'\\there'", Some(&[r"hello\\there"])),
            ("hello'$there'", Some(&["hello$there"])),
            ("\"\" ''", Some(&[])),
            ("  80/tcp   ${nope:-443 8080}/udp ", Some(&["80/tcp", "443", "8080/udp"])),
            ("x${nope:-b}y", Some(&["xby"])),
            ("cat <<  EOF", Some(&["cat", "<<  EOF"])),
        ],
    );
}

#[test]
fn split_raw_keeps_quotes_and_escapes() {
    let cases: &[(&str, char, &[&str])] = &[
        (r#"a "b c" d\ e 'f\ g'"#, '\\', &["a", r#""b c""#, r"d\ e", r"'f\ g'"]),
        (r#""a\"b" c"#, '\\', &[r#""a\"b""#, "c"]),
        (r"'a\' b", '\\', &[r"'a\'", "b"]),
        ("  x \t y  ", '\\', &["x", "y"]),
        (r"a\", '\\', &["a"]),
        (r"a \", '\\', &["a"]),
        ("a \"b c", '\\', &["a", "\"b c"]),
        (r#""abc\"#, '\\', &["\"abc"]),
        ("k=\"v w\"x y", '\\', &["k=\"v w\"x", "y"]),
        ("a` b", '`', &["a` b"]),
        (r"a\ b", '`', &[r"a\", "b"]),
        ("", '\\', &[]),
    ];
    for (input, escape, want) in cases {
        assert_eq!(split_raw(input, *escape), *want, "input {input:?}");
    }
}

#[test]
fn name_values_new_and_legacy_forms() {
    use NameValueKind::*;
    assert_eq!(
        pairs("KEY value with  spaces", Env).unwrap(),
        [kv("KEY", Some("value with  spaces"))]
    );
    assert_eq!(pairs("  KEY \t value ", Label).unwrap(), [kv("KEY", Some("value"))]);
    assert_eq!(pairs(r"A\ B c", Env).unwrap(), [kv(r"A\", Some("B c"))]);
    let got = pairs(r#"A=1 B="two words" C=b=c D= E=a\ b"#, Env).unwrap();
    let want = [("A", "1"), ("B", "\"two words\""), ("C", "b=c"), ("D", ""), ("E", r"a\ b")];
    assert_eq!(got, want.map(|(k, v)| kv(k, Some(v))));
    let expanded: Vec<String> = got
        .iter()
        .map(|(_, v)| word(v.as_deref().unwrap_or(""), &env(&[]), '\\').unwrap())
        .collect();
    assert_eq!(expanded, ["1", "two words", "b=c", "", "a b"]);
    let label = pairs(r#""com.example.vendor"="ACME Inc""#, Label).unwrap();
    assert_eq!(label, [kv("\"com.example.vendor\"", Some("\"ACME Inc\""))]);
    let none = env(&[]);
    assert_eq!(word(&label[0].0, &none, '\\').unwrap(), "com.example.vendor");
    assert_eq!(word(label[0].1.as_deref().unwrap_or(""), &none, '\\').unwrap(), "ACME Inc");
    assert_eq!(pairs("NAME", Arg).unwrap(), [kv("NAME", None)]);
    assert_eq!(
        pairs("A=1 B C=", Arg).unwrap(),
        [kv("A", Some("1")), kv("B", None), kv("C", Some(""))]
    );
    assert_eq!(name_values("A=a` b", Env, '`').unwrap(), [kv("A", Some("a` b"))]);
}

#[test]
fn name_values_errors() {
    use NameValueKind::*;
    assert_eq!(pairs("=x", Env), Err(ExpandError::BlankName { kind: Env }));
    assert_eq!(pairs("A=1 =2", Label), Err(ExpandError::BlankName { kind: Label }));
    assert_eq!(pairs("A =x", Arg), Err(ExpandError::BlankName { kind: Arg }));
    assert_eq!(pairs("KEY", Env), Err(ExpandError::MissingValue { kind: Env }));
    assert_eq!(
        pairs("A=1 B", Env),
        Err(ExpandError::MissingEquals { kind: Env, word: "B".into() })
    );
    for kind in [Env, Label, Arg] {
        assert_eq!(pairs(" \t", kind), Err(ExpandError::NoArguments { kind }));
    }
    assert_eq!(pairs("=x", Arg).unwrap_err().to_string(), "ARG names can not be blank");
    assert_eq!(pairs("", Label).unwrap_err().to_string(), "LABEL requires at least one argument");
    assert_eq!(pairs("KEY", Env).unwrap_err().to_string(), "ENV must have two arguments");
}

#[test]
fn lookups() {
    let map: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
    let tree: BTreeMap<String, String> = map.clone().into_iter().collect();
    let list = env(&[("A", "0"), ("A", "1")]);
    for vars in [&map as &dyn Lookup, &tree, &list] {
        assert_eq!(word("$A${B:-2}", vars, '\\').as_deref(), Ok("12"));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let vars = env(&[]);
    let nest = |n: usize| format!("{}x{}", "${a:-".repeat(n), "}".repeat(n));
    assert_eq!(word(&nest(50), &vars, '\\').as_deref(), Ok("x"));
    assert_eq!(reason(&nest(100_000), &vars), WordError::TooDeep);
}

#[test]
fn arbitrary_input_never_panics() {
    let alphabet: Vec<char> = "${}:-+?#%/\\`\"' a=*\n<é0_".chars().collect();
    let vars = env(&[("a", "x*y a"), ("0", "$0")]);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..30_000 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let len = (seed >> 60) as usize;
        let input: String = (0..len)
            .map(|i| alphabet[((seed >> (i * 4 % 56)) as usize) % alphabet.len()])
            .collect();
        for escape in ['\\', '`'] {
            let _ = word(&input, &vars, escape);
            let _ = words(&input, &vars, escape);
            let _ = split_raw(&input, escape);
            for kind in [NameValueKind::Env, NameValueKind::Label, NameValueKind::Arg] {
                let _ = name_values(&input, kind, escape);
            }
        }
    }
}
