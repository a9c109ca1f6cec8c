use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};

use super::*;

struct Ctx {
    dir: tempfile::TempDir,
    context: Context,
}

fn ctx(files: &[(&str, &str, u32)]) -> Ctx {
    let dir = tempfile::tempdir().unwrap();
    for (p, data, mode) in files {
        let path = dir.path().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
    }
    let context = Context::open(dir.path()).unwrap();
    Ctx { dir, context }
}

/// (path, kind char, mode, uid, gid, content or link target)
type Row = (String, char, u32, u64, u64, String);

fn entries(layer: &Path) -> Vec<Row> {
    let mut a = tar::Archive::new(File::open(layer).unwrap());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => 'f',
        };
        let mut data = String::new();
        if kind == 'l' || kind == 'h' {
            data = e.link_name().unwrap().unwrap().to_string_lossy().into_owned();
        } else {
            e.read_to_string(&mut data).unwrap();
        }
        let p = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        out.push((p, kind, h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), data));
    }
    out
}

fn image_with(dirs: &[&str]) -> ImageFs {
    let mut b = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("{d}/"), io::empty()).unwrap();
    }
    let mut fs = ImageFs::new();
    fs.apply_layer(&b.into_inner().unwrap()[..]).unwrap();
    fs
}

fn copy(c: &Ctx, srcs: &[&str], opts: CopyOptions, fs: &ImageFs) -> Result<Vec<Row>, BuildError> {
    let mut sources = Vec::new();
    for s in srcs {
        sources.extend(c.context.sources(s).unwrap());
    }
    let out = c.dir.path().join("layer.tar");
    write_layer(&Input::Context { context: &c.context, sources }, &opts, fs, &out)?;
    Ok(entries(&out))
}

fn opts(dest: &str) -> CopyOptions {
    CopyOptions { dest: dest.into(), workdir: "/".into(), ..Default::default() }
}

#[test]
fn a_file_to_a_path_into_a_directory_and_relative_to_workdir() {
    let c = ctx(&[("a.txt", "A", 0o640)]);
    let fs = image_with(&["etc"]);
    let e = copy(&c, &["a.txt"], opts("/opt/app/b.txt"), &fs).unwrap();
    assert_eq!(
        e,
        vec![
            ("opt".into(), 'd', 0o755, 0, 0, String::new()),
            ("opt/app".into(), 'd', 0o755, 0, 0, String::new()),
            ("opt/app/b.txt".into(), 'f', 0o640, 0, 0, "A".into()),
        ]
    );
    // An existing directory takes the file by its name; so does a trailing slash.
    let e = copy(&c, &["a.txt"], opts("/etc"), &fs).unwrap();
    assert_eq!(e.last().unwrap().0, "etc/a.txt");
    assert_eq!(e.len(), 1, "existing directories are not written again");
    let e = copy(&c, &["a.txt"], opts("/new/"), &fs).unwrap();
    assert_eq!(e.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["new", "new/a.txt"]);
    let mut o = opts("rel/x.txt");
    o.workdir = "/srv/app".into();
    let e = copy(&c, &["a.txt"], o, &fs).unwrap();
    assert_eq!(e.last().unwrap().0, "srv/app/rel/x.txt");
}

#[test]
fn directories_copy_their_contents_and_links_stay_links() {
    let c = ctx(&[("site/index.html", "hi", 0o644), ("site/css/a.css", "x", 0o600)]);
    symlink("index.html", c.dir.path().join("site/home.html")).unwrap();
    let e = copy(&c, &["site"], opts("/www"), &ImageFs::new()).unwrap();
    let names: Vec<_> = e.iter().map(|x| (x.0.as_str(), x.1)).collect();
    assert_eq!(
        names,
        [
            ("www", 'd'),
            ("www/css", 'd'),
            ("www/css/a.css", 'f'),
            ("www/home.html", 'l'),
            ("www/index.html", 'f')
        ]
    );
    assert_eq!(e[3].5, "index.html");
    assert_eq!(e[2].2, 0o600);
}

#[test]
fn several_sources_need_a_directory() {
    let c = ctx(&[("a", "1", 0o644), ("b", "2", 0o644)]);
    let err = copy(&c, &["a", "b"], opts("/dst"), &ImageFs::new()).unwrap_err();
    assert!(err.to_string().contains("must be a directory and end with a /"), "{err}");
    let e = copy(&c, &["a", "b"], opts("/dst/"), &ImageFs::new()).unwrap();
    assert_eq!(e.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["dst", "dst/a", "dst/b"]);
}

#[test]
fn chown_chmod_and_clamped_times() {
    let c = ctx(&[("d/f", "x", 0o600)]);
    let mut o = opts("/dst/");
    o.ids = Some((1000, 50));
    o.chmod = Some(0o755);
    o.clamp_mtime = Some(1000);
    let out = c.dir.path().join("l.tar");
    let sources = c.context.sources("d").unwrap();
    write_layer(&Input::Context { context: &c.context, sources }, &o, &ImageFs::new(), &out)
        .unwrap();
    let mut a = tar::Archive::new(File::open(&out).unwrap());
    for e in a.entries().unwrap() {
        let h = e.unwrap().header().clone();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 50));
        assert!(h.mtime().unwrap() <= 1000);
    }
    let e = entries(&out);
    assert_eq!(e[1].2, 0o755, "chmod applies to files");
    assert_eq!(parse_chmod("0644"), Ok(0o644));
    assert!(parse_chmod("u+x").is_err());
    assert!(parse_chmod("77777").is_err());
}

#[test]
fn add_unpacks_archives_and_copies_other_files() {
    let c = ctx(&[("plain.txt", "not a tar", 0o644)]);
    // A gzip tar with a file owned by 7:8.
    let mut b =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o600);
    h.set_uid(7);
    h.set_gid(8);
    b.append_data(&mut h, "inner/x", &b"xyz"[..]).unwrap();
    let gz = b.into_inner().unwrap().finish().unwrap();
    fs::write(c.dir.path().join("bundle.tar.gz"), gz).unwrap();
    let mut o = opts("/opt");
    o.unpack = true;
    let e = copy(&c, &["bundle.tar.gz"], o.clone(), &ImageFs::new()).unwrap();
    assert_eq!(
        e.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["opt", "opt/inner", "opt/inner/x"]
    );
    assert_eq!((e[2].3, e[2].4, e[2].5.as_str()), (7, 8, "xyz"));
    let e = copy(&c, &["plain.txt"], o, &ImageFs::new()).unwrap();
    assert_eq!(e.last().unwrap().0, "opt", "not an archive: copied as the file /opt");
}

#[test]
fn heredocs_become_files() {
    let c = ctx(&[]);
    let out = c.dir.path().join("h.tar");
    let input = Input::HereDoc { name: "EOF".into(), body: "hello\n".into() };
    write_layer(&input, &opts("/etc/motd"), &image_with(&["etc"]), &out).unwrap();
    let e = entries(&out);
    assert_eq!(e, vec![("etc/motd".into(), 'f', 0o644, 0, 0, "hello\n".into())]);
    write_layer(&input, &opts("/dir/"), &ImageFs::new(), &out).unwrap();
    assert_eq!(entries(&out).last().unwrap().0, "dir/EOF");
}

#[test]
fn destinations_follow_the_image_s_links() {
    let c = ctx(&[("a.txt", "A", 0o644)]);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "usr/bin/", io::empty()).unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    b.append_link(&mut l, "bin", "usr/bin").unwrap();
    let mut fs = ImageFs::new();
    fs.apply_layer(&b.into_inner().unwrap()[..]).unwrap();
    // Written where the link leads, never as a directory over the link.
    let e = copy(&c, &["a.txt"], opts("/bin/"), &fs).unwrap();
    assert_eq!(e.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["usr/bin/a.txt"]);
    let e = copy(&c, &["a.txt"], opts("/bin/new/x.txt"), &fs).unwrap();
    assert_eq!(
        e.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["usr/bin/new", "usr/bin/new/x.txt"]
    );
}

#[test]
fn whiteout_names_are_refused_not_copied_as_deletions() {
    let c = ctx(&[("etc/.wh.passwd", "x", 0o644), ("ok.txt", "y", 0o644)]);
    let err = copy(&c, &["etc"], opts("/etc/"), &ImageFs::new()).unwrap_err();
    assert!(err.to_string().contains(".wh.passwd: a name starting with .wh."), "{err}");
    assert!(copy(&c, &["ok.txt"], opts("/x"), &ImageFs::new()).is_ok());
}
