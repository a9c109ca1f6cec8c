//! A Dockerfile read into stages of steps.
//!
//! The syntax (parser directives, line continuations, comments, JSON arrays, here-documents,
//! flags) is `parse-dockerfile`'s; this module checks what a build can do with it (flags each
//! instruction takes, values they need), keeps each step's line for error messages and its
//! text for the image's history, and leaves words unexpanded: build arguments and variables
//! change from step to step, so the builder expands them when it gets there.

use std::collections::HashSet;

use parse_dockerfile as pd;

/// A Dockerfile that cannot be built, with the line it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile:{line}: {message}")]
pub struct DockerfileError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The escape character (`\`, or `` ` `` from an `# escape=` directive).
    pub escape: char,
    /// `ARG`s before the first `FROM` (usable in `FROM` lines, and in a stage that
    /// declares them again).
    pub global_args: Vec<Step>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// One `FROM` and the steps up to the next.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its name (`FROM image AS name`), lowercase as Docker compares them.
    pub name: Option<String>,
    /// The base image word (`scratch`, a reference, or an earlier stage's name); unexpanded.
    pub base: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// The `FROM` line.
    pub line: usize,
    /// The steps after `FROM`.
    pub steps: Vec<Step>,
}

/// One instruction.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its first line.
    pub line: usize,
    /// The instruction as written (continuations joined, comment lines dropped).
    pub text: String,
    /// What it does.
    pub instruction: Instruction,
}

/// The shell and exec forms of RUN, CMD, ENTRYPOINT and HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    /// `["prog", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `prog arg`: run by the stage's shell.
    Shell(String),
}

/// A source of COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A path (or glob) in the context or the `--from` stage/image.
    Path(String),
    /// A here-document's body, and whether variables in it are expanded (unquoted
    /// delimiter).
    HereDoc {
        /// The delimiter, which names the file made from the body.
        name: String,
        /// The body.
        body: String,
        /// Whether `$VAR`s in it are expanded.
        expand: bool,
    },
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// `--from=STAGE|IMAGE` (COPY only).
    pub from: Option<String>,
    /// `--chown=USER[:GROUP]`.
    pub chown: Option<String>,
    /// `--chmod=MODE`.
    pub chmod: Option<String>,
    /// The sources, unexpanded.
    pub sources: Vec<CopySource>,
    /// The destination, unexpanded.
    pub dest: String,
}

/// HEALTHCHECK's options and command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckSpec {
    /// `--interval`, `--timeout`, `--start-period`, `--start-interval` in nanoseconds.
    pub interval: Option<i64>,
    /// See `interval`.
    pub timeout: Option<i64>,
    /// See `interval`.
    pub start_period: Option<i64>,
    /// See `interval`.
    pub start_interval: Option<i64>,
    /// `--retries`.
    pub retries: Option<i64>,
    /// The probe.
    pub command: CommandForm,
}

/// What a step does. Words are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// RUN: a command in a microVM; its changes become a layer.
    Run {
        /// The command.
        command: CommandForm,
        /// `--network=default|none`.
        network: Option<String>,
    },
    /// COPY.
    Copy(CopySpec),
    /// ADD.
    Add(CopySpec),
    /// ENV's `KEY=VALUE …` text.
    Env(String),
    /// ARG's `NAME[=DEFAULT] …` text.
    Arg(String),
    /// LABEL's `KEY=VALUE …` text.
    Label(String),
    /// WORKDIR.
    Workdir(String),
    /// USER.
    User(String),
    /// CMD.
    Cmd(CommandForm),
    /// ENTRYPOINT.
    Entrypoint(CommandForm),
    /// EXPOSE's ports.
    Expose(Vec<String>),
    /// VOLUME's paths.
    Volume(Vec<String>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// SHELL.
    Shell(Vec<String>),
    /// HEALTHCHECK (`None`: `HEALTHCHECK NONE`).
    Healthcheck(Option<HealthcheckSpec>),
    /// ONBUILD's instruction text, recorded for images built FROM this one.
    Onbuild(String),
    /// MAINTAINER (the image's author).
    Maintainer(String),
}

/// Reads a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    let parsed = pd::parse(text)
        .map_err(|e| DockerfileError { line: e.line(), message: parse_message(&e) })?;
    let escape = parsed.parser_directives.escape.as_ref().map_or('\\', |d| d.value.value);
    let starts: Vec<usize> = parsed.instructions.iter().map(keyword_start).collect();
    let mut out = Dockerfile { escape, global_args: Vec::new(), stages: Vec::new() };
    let mut names = HashSet::new();
    for (i, inst) in parsed.instructions.iter().enumerate() {
        let start = starts[i];
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let line = line_of(text, start);
        let source = instruction_text(&text[start..end], escape);
        let err = |message: String| DockerfileError { line, message };
        if let pd::Instruction::From(f) = inst {
            let mut platform = None;
            for flag in &f.options {
                match flag_name(flag) {
                    "platform" => platform = Some(flag_value(flag, line)?),
                    other => return Err(err(format!("FROM does not take --{other}"))),
                }
            }
            let name = f.as_.as_ref().map(|(_, n)| n.value.to_ascii_lowercase());
            if let Some(n) = &name {
                if !valid_stage_name(n) {
                    return Err(err(format!("invalid stage name {n:?}")));
                }
                if !names.insert(n.clone()) {
                    return Err(err(format!("duplicate stage name {n:?}")));
                }
            }
            out.stages.push(Stage {
                name,
                base: f.image.value.to_string(),
                platform,
                line,
                steps: Vec::new(),
            });
            continue;
        }
        let instruction = convert(inst, text, escape, line)?;
        let step = Step { line, text: source, instruction };
        match out.stages.last_mut() {
            Some(stage) => stage.steps.push(step),
            None => out.global_args.push(step),
        }
    }
    Ok(out)
}

fn parse_message(e: &pd::Error) -> String {
    // The crate's message ends with " at line L column C": the caller prefixes the line.
    let m = e.to_string();
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m,
    }
}

fn valid_stage_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// The 1-based line of byte `pos`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn keyword_start(i: &pd::Instruction<'_>) -> usize {
    use pd::Instruction as I;
    match i {
        I::Add(x) => x.add.span.start,
        I::Arg(x) => x.arg.span.start,
        I::Cmd(x) => x.cmd.span.start,
        I::Copy(x) => x.copy.span.start,
        I::Entrypoint(x) => x.entrypoint.span.start,
        I::Env(x) => x.env.span.start,
        I::Expose(x) => x.expose.span.start,
        I::From(x) => x.from.span.start,
        I::Healthcheck(x) => x.healthcheck.span.start,
        I::Label(x) => x.label.span.start,
        I::Maintainer(x) => x.maintainer.span.start,
        I::Onbuild(x) => x.onbuild.span.start,
        I::Run(x) => x.run.span.start,
        I::Shell(x) => x.shell.span.start,
        I::Stopsignal(x) => x.stopsignal.span.start,
        I::User(x) => x.user.span.start,
        I::Volume(x) => x.volume.span.start,
        I::Workdir(x) => x.workdir.span.start,
        _ => 0,
    }
}

/// Joins continued lines as Docker does (a line ending in the escape character, then
/// blanks, continues): the escape and the newline go, and so do comment lines and empty
/// lines inside the continuation. The text ends with the first line that does not continue.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut first = true;
    for line in raw.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !first {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
        }
        first = false;
        match line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
            Some(head) => out.push_str(head),
            None => {
                out.push_str(line);
                break;
            }
        }
    }
    out.trim().to_string()
}

/// An instruction's text as written, for the history and messages: continuations joined,
/// and a here-document's body left out.
fn instruction_text(raw: &str, escape: char) -> String {
    join_continuations(raw, escape)
}

fn flag_name<'a>(f: &'a pd::Flag<'_>) -> &'a str {
    &f.name.value
}

fn flag_value(f: &pd::Flag<'_>, line: usize) -> Result<String, DockerfileError> {
    match &f.value {
        Some(v) => Ok(v.value.to_string()),
        None => Err(DockerfileError { line, message: format!("--{} needs a value", f.name.value) }),
    }
}

/// Checks flags against what an instruction takes; returns (name, value) pairs.
fn flags(
    options: &[pd::Flag<'_>],
    what: &str,
    allowed: &[&str],
    refused: &[(&str, &str)],
    line: usize,
) -> Result<Vec<(String, String)>, DockerfileError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for f in options {
        let name = flag_name(f);
        if let Some((_, why)) = refused.iter().find(|(n, _)| *n == name) {
            return Err(DockerfileError {
                line,
                message: format!("{what} --{name} is not supported by ironpod build: {why}"),
            });
        }
        if !allowed.contains(&name) {
            return Err(DockerfileError {
                line,
                message: format!("{what} does not take --{name}"),
            });
        }
        if !seen.insert(name.to_string()) {
            return Err(DockerfileError { line, message: format!("{what}: --{name} given twice") });
        }
        out.push((name.to_string(), flag_value(f, line)?));
    }
    Ok(out)
}

fn take(flags: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let i = flags.iter().position(|(n, _)| n == name)?;
    Some(flags.remove(i).1)
}

fn command(c: &pd::Command<'_>, escape: char, line: usize) -> Result<CommandForm, DockerfileError> {
    match c {
        pd::Command::Exec(a) => {
            Ok(CommandForm::Exec(a.value.iter().map(|s| s.value.to_string()).collect()))
        }
        pd::Command::Shell(s) => Ok(CommandForm::Shell(join_continuations(s.value, escape))),
        _ => Err(DockerfileError { line, message: "unknown command form".into() }),
    }
}

fn strings(a: &pd::JsonOrStringArray<'_, 1>) -> Vec<String> {
    match a {
        pd::JsonOrStringArray::Json(v) => v.value.iter().map(|s| s.value.to_string()).collect(),
        pd::JsonOrStringArray::String(v) => v.iter().map(|s| s.value.to_string()).collect(),
    }
}

fn copy_spec(
    options: &[pd::Flag<'_>],
    src: &[pd::Source<'_>],
    dest: &pd::UnescapedString<'_>,
    what: &str,
    text: &str,
    line: usize,
) -> Result<CopySpec, DockerfileError> {
    let (allowed, refused): (&[&str], &[(&str, &str)]) = if what == "COPY" {
        (
            &["from", "chown", "chmod"],
            &[
                ("link", "layers are always made on top of the previous ones"),
                ("parents", "a BuildKit labs flag"),
                ("exclude", "a BuildKit labs flag"),
            ],
        )
    } else {
        (
            &["chown", "chmod"],
            &[
                ("checksum", "remote sources are not fetched"),
                ("keep-git-dir", "git sources are not fetched"),
                ("link", "layers are always made on top of the previous ones"),
            ],
        )
    };
    let mut f = flags(options, what, allowed, refused, line)?;
    let mut sources = Vec::new();
    for s in src {
        match s {
            pd::Source::Path(p) => sources.push(CopySource::Path(p.value.to_string())),
            pd::Source::HereDoc(h) => {
                // The delimiter names the file: it is the word after `<<` (and `-`, quotes).
                let head = &text[..h.span.start];
                let name = heredoc_name(head).ok_or_else(|| DockerfileError {
                    line,
                    message: "cannot tell a here-document's name".into(),
                })?;
                sources.push(CopySource::HereDoc {
                    name,
                    body: h.value.to_string(),
                    expand: h.expand,
                });
            }
            _ => return Err(DockerfileError { line, message: format!("{what}: unknown source") }),
        }
    }
    Ok(CopySpec {
        from: take(&mut f, "from"),
        chown: take(&mut f, "chown"),
        chmod: take(&mut f, "chmod"),
        sources,
        dest: dest.value.to_string(),
    })
}

/// The delimiter of the last `<<WORD` before a here-document's body.
fn heredoc_name(head: &str) -> Option<String> {
    let i = head.rfind("<<")?;
    let rest = head[i + 2..].trim_start_matches('-');
    let word: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace())
        .filter(|c| *c != '"' && *c != '\'')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// Go's duration syntax (`1m30s`, `500ms`, `1.5h`) in nanoseconds (Docker's flags' parser,
/// which `run --health-*` uses too).
pub fn parse_duration(s: &str) -> Option<i64> {
    ironpod_pods::health::parse_duration(s).ok().and_then(|n| i64::try_from(n).ok())
}

fn healthcheck(
    h: &pd::HealthcheckInstruction<'_>,
    escape: char,
    line: usize,
) -> Result<Option<HealthcheckSpec>, DockerfileError> {
    let allowed = ["interval", "timeout", "start-period", "start-interval", "retries"];
    let mut f = flags(&h.options, "HEALTHCHECK", &allowed, &[], line)?;
    let command = match &h.arguments {
        pd::HealthcheckArguments::Cmd { arguments, .. } => command(arguments, escape, line)?,
        pd::HealthcheckArguments::None { .. } => {
            if !f.is_empty() {
                return Err(DockerfileError {
                    line,
                    message: "HEALTHCHECK NONE takes no options".into(),
                });
            }
            return Ok(None);
        }
        _ => return Err(DockerfileError { line, message: "HEALTHCHECK: unknown form".into() }),
    };
    let mut duration = |name: &str| -> Result<Option<i64>, DockerfileError> {
        let Some(v) = take(&mut f, name) else { return Ok(None) };
        match parse_duration(&v) {
            Some(d) if d == 0 || d >= 1_000_000 => Ok(Some(d)),
            Some(_) => Err(DockerfileError {
                line,
                message: format!("HEALTHCHECK --{name} cannot be less than 1ms"),
            }),
            None => Err(DockerfileError {
                line,
                message: format!("HEALTHCHECK --{name}: {v:?} is not a duration"),
            }),
        }
    };
    let interval = duration("interval")?;
    let timeout = duration("timeout")?;
    let start_period = duration("start-period")?;
    let start_interval = duration("start-interval")?;
    let retries = match take(&mut f, "retries") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(DockerfileError {
                    line,
                    message: format!("HEALTHCHECK --retries: {v:?} is not a count"),
                })
            }
        },
    };
    Ok(Some(HealthcheckSpec { interval, timeout, start_period, start_interval, retries, command }))
}

fn convert(
    inst: &pd::Instruction<'_>,
    text: &str,
    escape: char,
    line: usize,
) -> Result<Instruction, DockerfileError> {
    use pd::Instruction as I;
    Ok(match inst {
        I::Run(r) => {
            let mut f = flags(
                &r.options,
                "RUN",
                &["network"],
                &[
                    ("mount", "a RUN step sees only its image's files"),
                    ("security", "RUN steps are never privileged"),
                ],
                line,
            )?;
            let network = take(&mut f, "network");
            if let Some(n) = &network {
                if n != "default" && n != "none" {
                    return Err(DockerfileError {
                        line,
                        message: format!("RUN --network={n}: only default and none are supported"),
                    });
                }
            }
            let command = match r.here_docs.as_slice() {
                [] => command(&r.arguments, escape, line)?,
                [doc] => {
                    let rest = match &r.arguments {
                        pd::Command::Shell(s) => s.value.trim(),
                        _ => "",
                    };
                    if rest.is_empty() {
                        // `RUN <<EOF`: the body is the script.
                        CommandForm::Shell(doc.value.to_string())
                    } else {
                        // `RUN <<EOF cmd`: the shell gets the whole here-document.
                        // Up to the end of the delimiter's line, after the body.
                        let start = keyword_start(inst) + 3;
                        let mut end = doc.span.end;
                        if text[end..].starts_with('\n') {
                            end += 1;
                        }
                        end += text[end..].find('\n').unwrap_or(text.len() - end);
                        CommandForm::Shell(text[start..end].trim().to_string())
                    }
                }
                _ => {
                    return Err(DockerfileError {
                        line,
                        message: "RUN takes one here-document".into(),
                    })
                }
            };
            Instruction::Run { command, network }
        }
        I::Copy(c) => {
            Instruction::Copy(copy_spec(&c.options, &c.src, &c.dest, "COPY", text, line)?)
        }
        I::Add(a) => Instruction::Add(copy_spec(&a.options, &a.src, &a.dest, "ADD", text, line)?),
        I::Env(e) => Instruction::Env(e.arguments.value.to_string()),
        I::Arg(a) => Instruction::Arg(a.arguments.value.to_string()),
        I::Label(l) => Instruction::Label(l.arguments.value.to_string()),
        I::Workdir(w) => Instruction::Workdir(w.arguments.value.to_string()),
        I::User(u) => Instruction::User(u.arguments.value.to_string()),
        I::Cmd(c) => Instruction::Cmd(command(&c.arguments, escape, line)?),
        I::Entrypoint(e) => Instruction::Entrypoint(command(&e.arguments, escape, line)?),
        I::Expose(e) => {
            Instruction::Expose(e.arguments.iter().map(|s| s.value.to_string()).collect())
        }
        I::Volume(v) => Instruction::Volume(strings(&v.arguments)),
        I::Stopsignal(s) => Instruction::StopSignal(s.arguments.value.to_string()),
        I::Shell(s) => {
            Instruction::Shell(s.arguments.iter().map(|s| s.value.to_string()).collect())
        }
        I::Healthcheck(h) => Instruction::Healthcheck(healthcheck(h, escape, line)?),
        I::Maintainer(m) => Instruction::Maintainer(m.name.value.to_string()),
        I::Onbuild(o) => {
            let inner = &*o.instruction;
            if matches!(inner, I::From(_) | I::Onbuild(_) | I::Maintainer(_)) {
                return Err(DockerfileError {
                    line,
                    message: "ONBUILD cannot trigger FROM, ONBUILD or MAINTAINER".into(),
                });
            }
            // Checked now, so that a bad trigger fails this build, not a later one.
            convert(inner, text, escape, line)?;
            Instruction::Onbuild(join_continuations(&text[keyword_start(inner)..], escape))
        }
        I::From(_) => {
            return Err(DockerfileError { line, message: "FROM in an unexpected place".into() })
        }
        _ => return Err(DockerfileError { line, message: "unknown instruction".into() }),
    })
}

#[cfg(test)]
#[path = "dockerfile_tests.rs"]
mod tests;
