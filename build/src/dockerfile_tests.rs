use super::*;

fn one(df: &str) -> Instruction {
    let d = parse(&format!("FROM scratch\n{df}\n")).unwrap();
    assert_eq!(d.stages[0].steps.len(), 1, "{df}");
    d.stages[0].steps[0].instruction.clone()
}

fn error(df: &str) -> DockerfileError {
    parse(df).unwrap_err()
}

#[test]
fn stages_global_args_and_lines() {
    let d = parse(
        "# a comment\nARG BASE=demo\nARG V\n\nFROM ${BASE} AS Build\nRUN echo a\n\nFROM scratch\nCOPY --from=build /a /b\n",
    )
    .unwrap();
    assert_eq!(d.escape, '\\');
    assert_eq!(d.global_args.len(), 2);
    assert_eq!(d.global_args[0].instruction, Instruction::Arg("BASE=demo".into()));
    assert_eq!(d.global_args[1].line, 3);
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[0].name.as_deref(), Some("build"));
    assert_eq!(d.stages[0].base, "${BASE}");
    assert_eq!(d.stages[0].line, 5);
    assert_eq!(d.stages[0].steps[0].line, 6);
    assert_eq!(d.stages[0].steps[0].text, "RUN echo a");
    assert_eq!(d.stages[1].name, None);
    assert_eq!(d.stages[1].line, 8);
    match &d.stages[1].steps[0].instruction {
        Instruction::Copy(c) => {
            assert_eq!(c.from.as_deref(), Some("build"));
            assert_eq!(c.sources, vec![CopySource::Path("/a".into())]);
            assert_eq!(c.dest, "/b");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn continuations_are_joined_without_comment_lines() {
    let d = parse("FROM scratch\nRUN echo a \\\n# inside\n\n  && echo b\nCMD [\"x\"]\n").unwrap();
    let run = &d.stages[0].steps[0];
    assert_eq!(
        run.instruction,
        Instruction::Run {
            command: CommandForm::Shell("echo a   && echo b".into()),
            network: None
        }
    );
    assert_eq!(run.text, "RUN echo a   && echo b");
    assert_eq!(d.stages[0].steps[1].line, 6);
    assert_eq!(join_continuations("a `\n b", '`'), "a  b");
    assert_eq!(join_continuations("a\nb", '\\'), "a");
}

#[test]
fn escape_directive() {
    let d = parse("# escape=`\nFROM scratch\nRUN dir c:\\ `\n  && echo x\n").unwrap();
    assert_eq!(d.escape, '`');
    assert_eq!(
        d.stages[0].steps[0].instruction,
        Instruction::Run {
            command: CommandForm::Shell("dir c:\\   && echo x".into()),
            network: None
        }
    );
}

#[test]
fn exec_and_shell_forms() {
    assert_eq!(
        one("CMD [\"sh\", \"-c\", \"echo $HOME\"]"),
        Instruction::Cmd(CommandForm::Exec(vec!["sh".into(), "-c".into(), "echo $HOME".into()]))
    );
    assert_eq!(
        one("ENTRYPOINT top -b"),
        Instruction::Entrypoint(CommandForm::Shell("top -b".into()))
    );
    assert_eq!(
        one("SHELL [\"/bin/bash\", \"-c\"]"),
        Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
    assert_eq!(one("VOLUME [\"/a\", \"/b\"]"), Instruction::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(one("VOLUME /a /b"), Instruction::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(one("EXPOSE 80 53/udp"), Instruction::Expose(vec!["80".into(), "53/udp".into()]));
    assert_eq!(one("ENV A=1 B=\"x y\""), Instruction::Env("A=1 B=\"x y\"".into()));
    assert_eq!(one("LABEL \"k\"='v w'"), Instruction::Label("\"k\"='v w'".into()));
    assert_eq!(one("USER app:app"), Instruction::User("app:app".into()));
    assert_eq!(one("WORKDIR /srv"), Instruction::Workdir("/srv".into()));
    assert_eq!(one("STOPSIGNAL SIGINT"), Instruction::StopSignal("SIGINT".into()));
    assert_eq!(one("MAINTAINER me"), Instruction::Maintainer("me".into()));
    assert_eq!(one("onbuild run echo hi"), Instruction::Onbuild("run echo hi".into()));
}

#[test]
fn copy_and_add_flags() {
    match one("COPY --chown=1:2 --chmod=0755 a* b/ /dst/") {
        Instruction::Copy(c) => {
            assert_eq!(c.chown.as_deref(), Some("1:2"));
            assert_eq!(c.chmod.as_deref(), Some("0755"));
            assert_eq!(c.sources.len(), 2);
            assert_eq!(c.dest, "/dst/");
        }
        other => panic!("{other:?}"),
    }
    match one("COPY [\"a b\", \"/d/\"]") {
        Instruction::Copy(c) => assert_eq!(c.sources, vec![CopySource::Path("a b".into())]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(one("ADD --chown=app x.tar /"), Instruction::Add(_)));
    assert!(error("FROM scratch\nADD --from=x a /\n").message.contains("ADD does not take --from"));
    let e = error("FROM scratch\nCOPY --link a /\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("not supported"), "{e}");
    assert!(error("FROM scratch\nCOPY --chown=1 --chown=2 a /\n").message.contains("twice"));
    assert!(error("FROM scratch\nCOPY --chown a /\n").message.contains("needs a value"));
}

#[test]
fn heredocs() {
    match one("COPY <<EOF /etc/motd\nhello $USER\nEOF") {
        Instruction::Copy(c) => assert_eq!(
            c.sources,
            vec![CopySource::HereDoc {
                name: "EOF".into(),
                body: "hello $USER\n".into(),
                expand: true
            }]
        ),
        other => panic!("{other:?}"),
    }
    match one("COPY <<'END' /x\n$kept\nEND") {
        Instruction::Copy(c) => assert!(
            matches!(&c.sources[0], CopySource::HereDoc { expand: false, name, .. } if name == "END")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        one("RUN <<EOF\necho one\necho two\nEOF"),
        Instruction::Run {
            command: CommandForm::Shell("echo one\necho two\n".into()),
            network: None
        }
    );
    assert_eq!(
        one("RUN <<EOF cat > /f\nbody\nEOF"),
        Instruction::Run {
            command: CommandForm::Shell("<<EOF cat > /f\nbody\nEOF".into()),
            network: None
        }
    );
    let d = parse("FROM scratch\nRUN <<EOF\nFROM x\nEOF\nCMD [\"y\"]\n").unwrap();
    assert_eq!(d.stages.len(), 1, "a body is not instructions");
    assert_eq!(d.stages[0].steps[1].line, 5);
}

#[test]
fn run_flags() {
    assert_eq!(
        one("RUN --network=none true"),
        Instruction::Run {
            command: CommandForm::Shell("true".into()),
            network: Some("none".into())
        }
    );
    assert!(error("FROM scratch\nRUN --network=host true\n")
        .message
        .contains("only default and none"));
    assert!(error("FROM scratch\nRUN --mount=type=cache,target=/x true\n")
        .message
        .contains("not supported"));
    assert!(error("FROM scratch\nRUN --nope true\n").message.contains("does not take --nope"));
}

#[test]
fn healthcheck() {
    match one("HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 CMD wget -q localhost") {
        Instruction::Healthcheck(Some(h)) => {
            assert_eq!(h.interval, Some(5_000_000_000));
            assert_eq!(h.timeout, Some(90_000_000_000));
            assert_eq!(h.retries, Some(3));
            assert_eq!(h.command, CommandForm::Shell("wget -q localhost".into()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(one("HEALTHCHECK NONE"), Instruction::Healthcheck(None));
    assert!(error("FROM scratch\nHEALTHCHECK --interval=soon CMD true\n")
        .message
        .contains("not a duration"));
    assert!(error("FROM scratch\nHEALTHCHECK --interval=10ns CMD true\n")
        .message
        .contains("less than 1ms"));
    assert!(error("FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n")
        .message
        .contains("not a count"));
    assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
    assert_eq!(parse_duration("500ms"), Some(500_000_000));
    assert_eq!(parse_duration("0"), Some(0));
    for bad in ["", "5", "s", "5x", "1..2s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn errors_name_their_line() {
    let e = error("FROM scratch\n\nFROB x\n");
    assert_eq!(e.line, 3);
    assert!(e.to_string().starts_with("Dockerfile:3: "), "{e}");
    assert!(e.message.to_lowercase().contains("unknown instruction"), "{e}");
    let e = error("RUN true\n");
    assert_eq!(e.line, 1);
    let e = error("FROM a AS x\nFROM b AS X\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("duplicate"), "{e}");
    assert!(error("").message.contains("FROM") || error("").line == 1);
    // Not JSON: the shell form, as Docker reads it.
    assert_eq!(
        one("CMD [\"unterminated"),
        Instruction::Cmd(CommandForm::Shell("[\"unterminated".into()))
    );
    let e = error("FROM scratch\nONBUILD FROM x\n");
    assert!(e.message.contains("ONBUILD cannot"), "{e}");
    assert!(error("FROM scratch\nCOPY <<EOF /x\nno end\n").line >= 2);
}

#[test]
fn odd_inputs_never_panic() {
    let pieces = [
        "FROM", " scratch", "\n", "\\", "`", "RUN", "<<", "EOF", "[", "\"", "#", "--x=", "ONBUILD",
        " ", "COPY", "ENV",
    ];
    let mut seed = 7u64;
    for _ in 0..3000 {
        let mut s = String::new();
        for _ in 0..(seed % 12) {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
        }
        let _ = parse(&s);
    }
}
