//! Image commands: import, images, image inspect, tag, rmi, history.

use std::path::{Path, PathBuf};

use ironpod_images::ImageStore;

/// Arguments of `ironpod import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Root filesystem tarball (tar or tar.gz).
    file: PathBuf,
    /// Name for the image, e.g. `demo` or `demo:1`.
    name: String,
    /// Dockerfile instruction for the image's configuration (CMD, ENTRYPOINT, ENV, WORKDIR,
    /// USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL), as `docker import --change`; repeatable.
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
}

/// Arguments of `ironpod images`.
#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ironpod save`.
#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// Output file (default: standard output, which must not be a terminal).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Images.
    #[arg(required = true)]
    images: Vec<String>,
}

/// Arguments of `ironpod load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Input file (default: standard input).
    #[arg(short, long)]
    input: Option<PathBuf>,
}

/// Registry connection flags shared by pull and push.
#[derive(clap::Args, Debug)]
pub struct RegistryFlags {
    /// Allow plain HTTP and unverified TLS for this registry.
    #[arg(long)]
    insecure: bool,
    /// Trust this CA certificate (PEM) for the registry's TLS.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

impl RegistryFlags {
    fn options(&self, platform: Option<String>) -> ironpod_images::RegistryOptions {
        ironpod_images::RegistryOptions {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            platform,
            quiet: self.quiet,
            ..Default::default()
        }
    }
}

/// Arguments of `ironpod pull`.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Image reference.
    image: String,
    /// Platform to pick from a multi-platform image.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    #[command(flatten)]
    flags: RegistryFlags,
}

/// Arguments of `ironpod push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image reference (its registry is where it goes).
    image: String,
    #[command(flatten)]
    flags: RegistryFlags,
}

/// Arguments of `ironpod login`.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Registry host[:port].
    registry: String,
    /// User name.
    #[arg(short, long)]
    username: String,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Password (prefer --password-stdin: arguments are visible to other processes).
    #[arg(short, long)]
    password: Option<String>,
    #[command(flatten)]
    flags: RegistryFlags,
}

fn open(root: &Path) -> Result<ImageStore, String> {
    ImageStore::open(root).map_err(|e| e.to_string())
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Human-readable size, as docker prints it.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string() + UNITS[u]
    }
}

/// `ironpod import FILE NAME`: prints the new image id.
pub fn import(root: &Path, a: ImportArgs) -> Result<(), String> {
    let s = open(root)?.import_with(&a.file, &a.name, &a.changes).map_err(|e| e.to_string())?;
    println!("{}", s.id);
    Ok(())
}

/// `ironpod images`.
pub fn list(root: &Path, a: ImagesArgs) -> Result<(), String> {
    let images = open(root)?.list().map_err(|e| e.to_string())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&images).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("{:<40} {:<16} {:<14} {:<22} SIZE", "REPOSITORY", "TAG", "IMAGE ID", "CREATED");
    for i in images {
        for n in &i.names {
            let (repo, tag) = match n.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (n.as_str(), "<none>"),
            };
            println!(
                "{:<40} {:<16} {:<14} {:<22} {}",
                repo,
                tag,
                short_id(&i.id),
                i.created,
                human(i.size)
            );
        }
    }
    Ok(())
}

/// `ironpod image inspect REF…`: a JSON array, like docker.
pub fn inspect(root: &Path, refs: &[String]) -> Result<(), String> {
    let store = open(root)?;
    let mut out = Vec::new();
    for r in refs {
        out.push(store.inspect(r).map_err(|e| e.to_string())?);
    }
    println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    Ok(())
}

/// `ironpod tag SRC DST`.
pub fn tag(root: &Path, source: &str, target: &str) -> Result<(), String> {
    open(root)?.tag(source, target).map_err(|e| e.to_string())
}

/// `ironpod rmi REF…`: every reference is tried; fails if any failed.
pub fn rmi(root: &Path, refs: &[String], force: bool) -> Result<(), String> {
    let store = open(root)?;
    let mut failed = Vec::new();
    for r in refs {
        match store.remove(r, force) {
            Ok((untagged, deleted)) => {
                for n in untagged {
                    println!("Untagged: {n}");
                }
                for d in deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(e) => {
                eprintln!("ironpod: {e}");
                failed.push(r.clone());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("could not remove {}", failed.join(", ")))
    }
}

/// `ironpod save [-o FILE] REF…`.
pub fn save(root: &Path, a: SaveArgs) -> Result<(), String> {
    use std::io::IsTerminal;
    let store = open(root)?;
    match a.output {
        Some(out) => store.save(&a.images, &out).map_err(|e| e.to_string()),
        None => {
            if std::io::stdout().is_terminal() {
                return Err(
                    "refusing to write an archive to a terminal: use -o FILE or redirect".into()
                );
            }
            let tmp = root.join("tmp").join(format!("save-{}.tar", std::process::id()));
            let r = store.save(&a.images, &tmp).map_err(|e| e.to_string()).and_then(|()| {
                let mut f = std::fs::File::open(&tmp).map_err(|e| e.to_string())?;
                std::io::copy(&mut f, &mut std::io::stdout().lock())
                    .map_err(|e| e.to_string())
                    .map(|_| ())
            });
            let _ = std::fs::remove_file(&tmp);
            r
        }
    }
}

/// `ironpod load [-i FILE]`.
pub fn load(root: &Path, a: LoadArgs) -> Result<(), String> {
    let store = open(root)?;
    let (path, tmp) = match a.input {
        Some(p) => (p, None),
        None => {
            let tmp = root.join("tmp").join(format!("load-{}.tar", std::process::id()));
            let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
            std::io::copy(&mut std::io::stdin().lock(), &mut f).map_err(|e| e.to_string())?;
            (tmp.clone(), Some(tmp))
        }
    };
    let r = store.load(&path);
    if let Some(t) = tmp {
        let _ = std::fs::remove_file(t);
    }
    for n in r.map_err(|e| e.to_string())? {
        println!("Loaded image: {n}");
    }
    Ok(())
}

/// `ironpod pull REF`: prints the manifest digest and the name.
pub fn pull(root: &Path, a: PullArgs) -> Result<(), String> {
    let s = open(root)?
        .pull(&a.image, &a.flags.options(Some(a.platform.clone())))
        .map_err(|e| e.to_string())?;
    println!("Digest: {}", s.manifest);
    println!("Pulled {}", a.image);
    Ok(())
}

/// `ironpod push REF`.
pub fn push(root: &Path, a: PushArgs) -> Result<(), String> {
    let d = open(root)?.push(&a.image, &a.flags.options(None)).map_err(|e| e.to_string())?;
    println!("{}: digest: {d}", a.image);
    Ok(())
}

/// `ironpod login REGISTRY -u USER (--password-stdin | -p PASSWORD)`.
pub fn login(root: &Path, a: LoginArgs) -> Result<(), String> {
    let password = match (a.password_stdin, a.password) {
        (true, None) => {
            let mut p = String::new();
            std::io::stdin().read_line(&mut p).map_err(|e| e.to_string())?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (false, Some(p)) => p,
        _ => return Err("give exactly one of --password-stdin and --password".into()),
    };
    ironpod_images::check_login(&a.registry, &a.username, &password, &a.flags.options(None))
        .map_err(|e| e.to_string())?;
    ironpod_images::auth::login(root, &a.registry, &a.username, &password)
        .map_err(|e| e.to_string())?;
    println!("Login Succeeded");
    Ok(())
}

/// `ironpod logout REGISTRY`.
pub fn logout(root: &Path, registry: &str) -> Result<(), String> {
    if ironpod_images::auth::logout(root, registry).map_err(|e| e.to_string())? {
        println!("Removing login credentials for {registry}");
        Ok(())
    } else {
        Err(format!("not logged in to {registry}"))
    }
}

/// `ironpod history REF`.
pub fn history(root: &Path, image: &str) -> Result<(), String> {
    let h = open(root)?.history(image).map_err(|e| e.to_string())?;
    println!("{:<22} {:<50} COMMENT", "CREATED", "CREATED BY");
    for e in h {
        println!(
            "{:<22} {:<50} {}",
            e.created().clone().unwrap_or_default(),
            e.created_by().clone().unwrap_or_default(),
            e.comment().clone().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
        assert_eq!(human(4_200_000_000), "4.2GB");
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
