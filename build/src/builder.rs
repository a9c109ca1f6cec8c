//! The build: the stages a target needs, step by step, each step's image kept in the build
//! cache under a key of its parent image and what the step does (for COPY and ADD, the
//! digest of what they copy), so an unchanged step is found instead of made again. Output is
//! Docker's classic builder's (`Step n/N : …`, ` ---> Using cache`, ` ---> Running in …`,
//! `Successfully built …`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ironpod_images::{Digest, ImageStore, RegistryOptions};
use sha2::{Digest as _, Sha256};

use crate::config::RunConfig;
use crate::context::Context;
use crate::dockerfile::{self, Dockerfile, Instruction, Stage};
use crate::error::BuildError;
use crate::expand::{self, NameValueKind};
use crate::output::BuildOutput;
use crate::steps::{StageFiles, StageState};

/// Build arguments every build knows without an `ARG` (Docker's predefined proxy ones);
/// they stay out of the history.
pub const PREDEFINED_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// When the base image is pulled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pull {
    /// When it is not here.
    #[default]
    Missing,
    /// Always (`--pull`).
    Always,
}

/// What `ironpod build` was asked.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile: absolute (the user's `-f`), or relative to the context (read inside
    /// it); default `CONTEXT/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// `-t` names.
    pub tags: Vec<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: Pull,
    /// `--label` (a LABEL step at the end of the target stage).
    pub labels: Vec<(String, String)>,
    /// `--network` for RUN steps (`none`, or a network's name; `None`: the default one).
    pub network: Option<String>,
    /// `--timestamp` / SOURCE_DATE_EPOCH: every time in the image (and in the layers made
    /// here, no later than it), for layers that are the same bytes on every rebuild.
    pub timestamp: Option<u64>,
    /// `-q`: only the image id at the end.
    pub quiet: bool,
}

/// The built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// Its id (the config's digest).
    pub id: Digest,
    /// Its manifest digest.
    pub manifest: Digest,
}

/// Short form of an image or container id, as Docker prints them.
pub fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// A cache key over its parts.
pub fn cache_key(parent: Option<&Digest>, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(parent.map_or("scratch".to_string(), |p| p.to_string()).as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// One build.
pub struct Builder<'a> {
    pub(crate) root: PathBuf,
    pub(crate) store: ImageStore,
    pub(crate) opts: BuildOptions,
    pub(crate) out: &'a mut dyn BuildOutput,
    pub(crate) context: Context,
    pub(crate) escape: char,
    pub(crate) used_args: BTreeSet<String>,
    pub(crate) global_args: Vec<(String, String)>,
    pub(crate) step_no: usize,
    pub(crate) steps_total: usize,
    pub(crate) scratch: tempfile::TempDir,
    /// Built stages: (name, image, files).
    pub(crate) stages: Vec<(Option<String>, Option<Digest>, StageFiles)>,
    /// Which stages were built.
    pub(crate) built: Vec<bool>,
}

/// Builds the image `opts` describe under state root `root`; progress goes to `out`.
pub fn build(
    root: &Path,
    mut opts: BuildOptions,
    out: &mut dyn BuildOutput,
) -> Result<Built, BuildError> {
    // As BuildKit: a SOURCE_DATE_EPOCH build argument sets the build's time.
    if opts.timestamp.is_none() {
        if let Some(v) = opts.build_args.get("SOURCE_DATE_EPOCH") {
            let t = v.parse::<u64>().map_err(|_| {
                BuildError::step(1, format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))
            })?;
            opts.timestamp = Some(t);
        }
    }
    let context = Context::open(&opts.context)?;
    // A Dockerfile in the context is read inside it (links too); an absolute `-f` names
    // the user's own file.
    let text = match &opts.dockerfile {
        Some(p) if p.is_absolute() => crate::context::read_small_file(p),
        Some(p) => crate::context::read_small(context.root(), &p.to_string_lossy()),
        None => crate::context::read_small(context.root(), "Dockerfile"),
    }
    .map_err(|e| {
        let shown = opts.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into());
        BuildError::io(format!("Cannot locate specified Dockerfile: {}", shown.display()))(e)
    })?;
    let df = dockerfile::parse(&text)?;
    let store = ImageStore::open(root)?;
    let builds = root.join("builds");
    std::fs::create_dir_all(&builds).map_err(BuildError::io(format!("{}", builds.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&builds)
        .map_err(BuildError::io(format!("{}", builds.display())))?;
    let mut b = Builder {
        root: root.to_path_buf(),
        store,
        escape: df.escape,
        opts,
        out,
        context,
        used_args: BTreeSet::new(),
        global_args: Vec::new(),
        step_no: 0,
        steps_total: 0,
        scratch,
        stages: Vec::new(),
        built: Vec::new(),
    };
    b.run(&df)
}

impl Builder<'_> {
    pub(crate) fn say(&mut self, line: &str) {
        if !self.opts.quiet {
            let _ = self.out.line(line);
        }
    }

    /// The time every image and history entry of this build gets.
    pub(crate) fn created(&self) -> String {
        match self.opts.timestamp {
            Some(t) => ironpod_images::time::format_rfc3339(t),
            None => ironpod_images::time::now_rfc3339(),
        }
    }

    /// Index of the stage `name` (a name, or a number) among the first `before` stages.
    pub(crate) fn stage_index(df: &Dockerfile, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = df.stages[..before].iter().position(|s| s.name.as_deref() == Some(&lower))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    /// The stages the target needs, in order.
    fn needed(&self, df: &Dockerfile, target: usize) -> Result<Vec<usize>, BuildError> {
        let mut need = BTreeSet::from([target]);
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            let stage = &df.stages[i];
            let vars = self.global_args.clone();
            let base = expand::word(&stage.base, &vars, self.escape).unwrap_or_default();
            let mut refs = vec![(base, stage.line, false)];
            for s in &stage.steps {
                if let Instruction::Copy(c) = &s.instruction {
                    if let Some(f) = &c.from {
                        // Expanded as far as can be known before the stage runs.
                        let f = expand::word(f, &vars, self.escape).unwrap_or_else(|_| f.clone());
                        refs.push((f, s.line, true));
                    }
                }
            }
            for (r, line, numbers) in refs {
                let lower = r.to_ascii_lowercase();
                let by_name = df.stages.iter().position(|s| s.name.as_deref() == Some(&lower));
                let by_number = r.parse::<usize>().ok().filter(|n| numbers && *n < df.stages.len());
                let Some(j) = by_name.or(by_number) else { continue };
                if j >= i {
                    return Err(BuildError::step(
                        line,
                        format!("invalid from flag value {r}: refers to the current or a later build stage"),
                    ));
                }
                if need.insert(j) {
                    todo.push(j);
                }
            }
        }
        Ok(need.into_iter().collect())
    }

    fn run(&mut self, df: &Dockerfile) -> Result<Built, BuildError> {
        // ARGs before the first FROM: their values serve FROM lines.
        for step in &df.global_args {
            let Instruction::Arg(raw) = &step.instruction else { continue };
            let pairs = expand::name_values(raw, NameValueKind::Arg, self.escape)
                .map_err(|e| BuildError::step(step.line, e.to_string()))?;
            for (k, default) in pairs {
                let vars = self.global_args.clone();
                let name = expand::word(&k, &vars, self.escape)
                    .map_err(|e| BuildError::step(step.line, e.to_string()))?;
                let value = match self.opts.build_args.get(&name) {
                    Some(v) => {
                        self.used_args.insert(name.clone());
                        Some(v.clone())
                    }
                    None => match default {
                        Some(d) => Some(
                            expand::word(&d, &vars, self.escape)
                                .map_err(|e| BuildError::step(step.line, e.to_string()))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    self.global_args.retain(|(n, _)| *n != name);
                    self.global_args.push((name, v));
                }
            }
        }
        let target = match &self.opts.target {
            Some(t) => {
                let lower = t.to_ascii_lowercase();
                df.stages.iter().position(|s| s.name.as_deref() == Some(&lower)).ok_or_else(
                    || {
                        BuildError::step(
                            1,
                            format!("failed to reach build target {t} in Dockerfile"),
                        )
                    },
                )?
            }
            None => df.stages.len() - 1,
        };
        let needed = self.needed(df, target)?;
        self.steps_total = needed.iter().map(|i| 1 + df.stages[*i].steps.len()).sum::<usize>()
            + usize::from(!self.opts.labels.is_empty());
        self.stages = vec![(None, None, StageFiles::default()); df.stages.len()];
        self.built = vec![false; df.stages.len()];
        for &i in &needed {
            let stage = &df.stages[i];
            let mut st = self.from(df, i, stage)?;
            for step in &stage.steps {
                self.step(df, i, &mut st, step)?;
            }
            if i == target && !self.opts.labels.is_empty() {
                self.label_step(&mut st, stage.line)?;
            }
            self.stages[i] = (stage.name.clone(), st.parent.clone(), st.files.clone());
            self.built[i] = true;
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| {
                !self.used_args.contains(*k)
                    && !PREDEFINED_ARGS.contains(&k.as_str())
                    && k.as_str() != "SOURCE_DATE_EPOCH"
            })
            .collect();
        if !unused.is_empty() {
            let names = unused.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
            self.say(&format!("[Warning] One or more build-args [{names}] were not consumed"));
        }
        let Some(manifest) = self.stages[target].1.clone() else {
            return Err(BuildError::step(
                df.stages[target].line,
                "No image was generated. Is your Dockerfile empty?",
            ));
        };
        let id = self.store.image_id(&manifest)?;
        if self.opts.quiet {
            let _ = self.out.line(&id.to_string());
        }
        self.say(&format!("Successfully built {}", short(&id.to_string())));
        for t in self.opts.tags.clone() {
            let s = self.store.tag_manifest(&manifest, &t)?;
            let name = s
                .names
                .iter()
                .find(|n| {
                    ironpod_images::familiar(
                        &ironpod_images::ImageName::parse(&t).map(|n| n.full()).unwrap_or_default(),
                    ) == **n
                })
                .cloned()
                .unwrap_or(t);
            self.say(&format!("Successfully tagged {name}"));
        }
        Ok(Built { id, manifest })
    }

    /// FROM: the stage's base (scratch, an earlier stage, or an image, pulled when asked or
    /// missing), then the base image's ONBUILD triggers.
    fn from(&mut self, df: &Dockerfile, i: usize, stage: &Stage) -> Result<StageState, BuildError> {
        self.step_no += 1;
        let name = stage.name.as_ref().map(|n| format!(" AS {n}")).unwrap_or_default();
        let text = format!("FROM {}{name}", stage.base);
        self.say(&format!("Step {}/{} : {text}", self.step_no, self.steps_total));
        let vars = self.global_args.clone();
        let base = expand::word(&stage.base, &vars, self.escape)
            .map_err(|e| BuildError::step(stage.line, e.to_string()))?;
        if let Some(p) = &stage.platform {
            let p = expand::word(p, &vars, self.escape)
                .map_err(|e| BuildError::step(stage.line, e.to_string()))?;
            if !["", "linux/amd64", "linux/x86_64", "amd64"].contains(&p.as_str()) {
                return Err(BuildError::step(
                    stage.line,
                    format!("--platform={p}: ironpod builds linux/amd64 images"),
                ));
            }
        }
        if base.is_empty() {
            return Err(BuildError::step(stage.line, "base name should not be blank"));
        }
        let mut st = StageState::default();
        if base == "scratch" {
            return Ok(st);
        }
        if let Some(j) = Self::stage_index(df, &base, i)
            .filter(|j| df.stages[*j].name.as_deref() == Some(&base.to_ascii_lowercase()))
        {
            st.parent = self.stages[j].1.clone();
            st.files = self.stages[j].2.clone();
        } else {
            // Its files are read when a step needs them.
            st.parent = Some(self.base_image(&base, stage.line)?);
        }
        if let Some(p) = &st.parent {
            st.config = RunConfig::of_image(&self.store.raw_config(p)?);
            st.author = self.store.raw_config(p)?["author"].as_str().map(str::to_string);
            let id = self.store.image_id(p)?;
            self.say(&format!(" ---> {}", short(&id.to_string())));
        }
        let triggers = st.config.take_onbuild();
        if !triggers.is_empty() {
            self.say(&format!(
                "# Executing {} build trigger{}",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ));
            let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
            let parsed = dockerfile::parse(&text).map_err(|e| {
                BuildError::step(
                    stage.line,
                    format!("the base image's ONBUILD trigger: {}", e.message),
                )
            })?;
            for mut step in parsed.stages.into_iter().flat_map(|s| s.steps) {
                step.line = stage.line;
                self.trigger(df, i, &mut st, &step)?;
            }
        }
        Ok(st)
    }

    /// The base image `base`: here, or pulled.
    pub(crate) fn base_image(&mut self, base: &str, line: usize) -> Result<Digest, BuildError> {
        let present = match self.store.resolve(base) {
            Ok(d) => Some(d),
            Err(ironpod_images::ImageError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match (present, self.opts.pull) {
            (Some(d), Pull::Missing) => Ok(d),
            _ => {
                let opts =
                    RegistryOptions { platform: Some("linux/amd64".into()), ..Default::default() };
                self.store
                    .pull(base, &opts)
                    .map_err(|e| BuildError::step(line, format!("pull {base}: {e}")))?;
                Ok(self.store.resolve(base)?)
            }
        }
    }
}

/// Reads `--build-arg` values: `K=V`, or `K` (its value from this process's environment,
/// left out when unset there).
pub fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some(("", _)) => return Err(format!("invalid build-arg {a:?}: the name is empty")),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}
