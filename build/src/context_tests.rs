use std::os::unix::fs::symlink;

use super::*;

fn ctx(files: &[(&str, &str)], ignore: Option<&str>) -> (tempfile::TempDir, Context) {
    let dir = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = dir.path().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        if let Some(d) = p.strip_suffix('/') {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        } else {
            fs::write(&path, data).unwrap();
        }
    }
    if let Some(i) = ignore {
        fs::write(dir.path().join(".dockerignore"), i).unwrap();
    }
    let c = Context::open(dir.path()).unwrap();
    (dir, c)
}

fn rels(v: &[Source]) -> Vec<&str> {
    v.iter().map(|s| s.rel.as_str()).collect()
}

#[test]
fn sources_by_name_and_glob() {
    let (_d, c) =
        ctx(&[("a.txt", "a"), ("b.txt", "b"), ("sub/c.txt", "c"), ("sub/deep/d.md", "d")], None);
    assert_eq!(rels(&c.sources("a.txt").unwrap()), ["a.txt"]);
    assert_eq!(rels(&c.sources("/a.txt").unwrap()), ["a.txt"], "a leading / is the context's root");
    assert_eq!(rels(&c.sources("./sub/../b.txt").unwrap()), ["b.txt"]);
    assert_eq!(rels(&c.sources("*.txt").unwrap()), ["a.txt", "b.txt"]);
    assert_eq!(rels(&c.sources("sub/*").unwrap()), ["sub/c.txt", "sub/deep"]);
    assert_eq!(rels(&c.sources("*/*.txt").unwrap()), ["sub/c.txt"]);
    assert!(c.sources("sub").unwrap()[0].is_dir);
    assert_eq!(rels(&c.sources(".").unwrap()), [""]);
    let e = c.sources("missing").unwrap_err();
    assert!(e.contains("file not found in build context"), "{e}");
    assert!(c.sources("*.none").unwrap_err().contains("no source files"));
    assert!(c.sources("../etc/passwd").unwrap_err().contains("outside the build context"));
    assert!(c.sources("sub/../../x").unwrap_err().contains("outside the build context"));
}

#[test]
fn dockerignore_hides_sources_and_walks() {
    let (_d, c) = ctx(
        &[
            ("keep.txt", "k"),
            ("secret.key", "s"),
            ("docs/a.md", "a"),
            ("docs/keep.md", "k"),
            ("logs/x.log", "x"),
        ],
        Some("*.key\ndocs\n!docs/keep.md\nlogs\n"),
    );
    assert!(c.sources("secret.key").unwrap_err().contains("excluded by .dockerignore"));
    assert!(c.sources("logs/x.log").is_err());
    assert_eq!(rels(&c.sources("*").unwrap()), [".dockerignore", "keep.txt"]);
    let root = c.sources(".").unwrap();
    let mut seen = Vec::new();
    c.walk(&root[0], &mut |e| {
        seen.push(e.sub.to_string());
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, [".dockerignore", "docs/keep.md", "keep.txt"]);
}

#[test]
fn links_stay_inside_the_context() {
    let (d, c) = ctx(&[("real/f.txt", "f")], None);
    symlink("real", d.path().join("alias")).unwrap();
    symlink("/real/f.txt", d.path().join("abs")).unwrap();
    symlink("../../../../etc/passwd", d.path().join("out")).unwrap();
    let s = c.sources("alias/f.txt").unwrap();
    assert_eq!(s[0].path, c.root().join("real/f.txt"));
    assert_eq!(c.sources("abs").unwrap()[0].path, c.root().join("real/f.txt"));
    // `..` stops at the context's root: /etc/passwd there does not exist.
    assert!(c.sources("out").is_err());
    // Walking a directory keeps links as links.
    let mut kinds = Vec::new();
    c.walk(&c.sources(".").unwrap()[0], &mut |e| {
        kinds.push((e.sub.to_string(), e.meta.file_type().is_symlink()));
        Ok(())
    })
    .unwrap();
    assert!(kinds.contains(&("out".to_string(), true)));
}

#[test]
fn digest_follows_content_not_time() {
    let (d, c) = ctx(&[("a.txt", "one"), ("dir/b", "two")], None);
    let s = c.sources(".").unwrap();
    let first = c.digest(&s).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(d.path().join("a.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(c.digest(&s).unwrap(), first, "times do not count");
    fs::write(d.path().join("a.txt"), "One").unwrap();
    assert_ne!(c.digest(&s).unwrap(), first);
    fs::write(d.path().join("a.txt"), "one").unwrap();
    fs::set_permissions(d.path().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(c.digest(&s).unwrap(), first, "modes count");
}

#[test]
fn glob_matches_that_are_links_stay_inside_and_ignored_targets_stay_out() {
    let (d, c) = ctx(&[("real.txt", "r"), ("secret/key", "k")], Some("secret\n"));
    symlink("/etc/passwd", d.path().join("host.txt")).unwrap();
    symlink("secret", d.path().join("alias")).unwrap();
    // `/etc/passwd` inside the context does not exist: the match is refused, the host's
    // file never read.
    assert!(c.sources("*.txt").is_err());
    // A link to an ignored directory does not bring it in.
    assert!(c.sources("alias").is_err());
    fs::create_dir_all(d.path().join("etc")).unwrap();
    fs::write(d.path().join("etc/passwd"), "context's own").unwrap();
    let s = c.sources("*.txt").unwrap();
    assert_eq!(s[0].path, c.root().join("etc/passwd"), "followed inside the context");
    assert_eq!(rels(&s), ["host.txt", "real.txt"]);
}
