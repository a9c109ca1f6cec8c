//! One step of a stage: what it changes (configuration, a layer made on the host, or a
//! layer a RUN made in a microVM), its history entry, and its cache key.

use ironpod_images::{BuildStep, Digest};
use sha2::{Digest as _, Sha256};

use crate::builder::{cache_key, short, Builder, PREDEFINED_ARGS};
use crate::config::{check_signal, RunConfig};
use crate::copy::{self, CopyOptions, Input};
use crate::copy_from;
use crate::dockerfile::{CopySource, CopySpec, Dockerfile, Instruction, Step};
use crate::error::BuildError;
use crate::expand::{self, NameValueKind};
use crate::imagefs::ImageFs;
use crate::output::BuildOutput;
use crate::run::{self, RunSpec};

/// Where a stage is.
#[derive(Debug, Clone, Default)]
pub struct StageState {
    /// Its image so far (`None`: nothing yet after `FROM scratch`).
    pub parent: Option<Digest>,
    /// Its files, read up to some layer of `parent` (see [`Builder::files`]).
    pub files: StageFiles,
    /// Its run configuration so far.
    pub config: RunConfig,
    /// `ARG`s declared in the stage: name and value (`None`: declared without one).
    pub args: Vec<(String, Option<String>)>,
    /// Whether a CMD of this stage was set (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// The image's author (MAINTAINER).
    pub author: Option<String>,
}

/// A stage's files as far as they were needed: its image's layers are read only when a
/// step needs its files (an unchanged rebuild, every step from the cache, reads none).
#[derive(Debug, Clone, Default)]
pub struct StageFiles {
    fs: ImageFs,
    /// Layers of the stage's image applied to `fs`, bottom first.
    applied: usize,
}

impl StageState {
    /// Variables a step's words see: build arguments, then the environment (which wins).
    fn vars(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self.valued_args().collect();
        v.extend(self.config.env());
        v
    }

    /// The stage's build arguments that have a value.
    fn valued_args(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.args.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
    }

    /// Build arguments with values that the environment does not override, sorted (what a
    /// RUN sees besides the image's variables, and its history prefix shows).
    fn run_args(&self) -> Vec<(String, String)> {
        let env: Vec<String> = self.config.env().into_iter().map(|(k, _)| k).collect();
        let mut v: Vec<(String, String)> =
            self.valued_args().filter(|(k, _)| !env.contains(k)).collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    }
}

fn at(line: usize) -> impl Fn(expand::ExpandError) -> BuildError {
    move |e| BuildError::step(line, e.to_string())
}

/// A here-document's body with variables expanded and nothing else touched.
fn expand_body(
    body: &str,
    vars: &dyn expand::Lookup,
    escape: char,
    line: usize,
) -> Result<String, BuildError> {
    let mut guarded = String::with_capacity(body.len());
    for c in body.chars() {
        if c == '"' || c == '\'' || c == escape {
            guarded.push(escape);
        }
        guarded.push(c);
    }
    expand::word(&guarded, vars, escape).map_err(at(line))
}

impl Builder<'_> {
    /// A step of stage `i`, announced.
    pub(crate) fn step(
        &mut self,
        df: &Dockerfile,
        i: usize,
        st: &mut StageState,
        step: &Step,
    ) -> Result<(), BuildError> {
        self.step_no += 1;
        self.say(&format!("Step {}/{} : {}", self.step_no, self.steps_total, step.text));
        self.exec(df, i, st, step)
    }

    /// A base image's ONBUILD trigger, run as part of FROM.
    pub(crate) fn trigger(
        &mut self,
        df: &Dockerfile,
        i: usize,
        st: &mut StageState,
        step: &Step,
    ) -> Result<(), BuildError> {
        self.exec(df, i, st, step)
    }

    fn exec(
        &mut self,
        df: &Dockerfile,
        i: usize,
        st: &mut StageState,
        step: &Step,
    ) -> Result<(), BuildError> {
        let line = step.line;
        let esc = self.escape;
        let vars = st.vars();
        match &step.instruction {
            Instruction::Env(raw) | Instruction::Label(raw) => {
                let is_env = matches!(step.instruction, Instruction::Env(_));
                let kind = if is_env { NameValueKind::Env } else { NameValueKind::Label };
                for (k, v) in expand::name_values(raw, kind, esc).map_err(at(line))? {
                    let k = expand::word(&k, &vars, esc).map_err(at(line))?;
                    let v =
                        expand::word(v.as_deref().unwrap_or(""), &vars, esc).map_err(at(line))?;
                    if k.is_empty() {
                        return Err(BuildError::step(
                            line,
                            format!("{kind} names can not be blank"),
                        ));
                    }
                    if is_env {
                        st.config.set_env(&k, &v);
                    } else {
                        st.config.set_label(&k, &v);
                    }
                }
                self.commit_config(st, step)
            }
            Instruction::Arg(raw) => {
                for (k, default) in
                    expand::name_values(raw, NameValueKind::Arg, esc).map_err(at(line))?
                {
                    let name = expand::word(&k, &vars, esc).map_err(at(line))?;
                    let value = match self.opts.build_args.get(&name) {
                        Some(v) => {
                            self.used_args.insert(name.clone());
                            Some(v.clone())
                        }
                        None => match default {
                            Some(d) => Some(expand::word(&d, &vars, esc).map_err(at(line))?),
                            None => self
                                .global_args
                                .iter()
                                .find(|(n, _)| *n == name)
                                .map(|(_, v)| v.clone()),
                        },
                    };
                    st.args.retain(|(n, _)| *n != name);
                    st.args.push((name, value));
                }
                self.commit_config(st, step)
            }
            Instruction::Workdir(raw) => {
                let dir = expand::word(raw, &vars, esc).map_err(at(line))?;
                if dir.is_empty() {
                    return Err(BuildError::step(line, "WORKDIR cannot be empty"));
                }
                let dir = st.config.set_workdir(&dir);
                // A missing working directory is made, in a layer of this step.
                let created_by = format!("/bin/sh -c #(nop) {}", step.text);
                let key = self.key(
                    st.parent.as_ref(),
                    &["WORKDIR", &created_by, &st.config.to_value().to_string()],
                );
                // The same parent has the same files: a step made before (with a layer or
                // without) answers whether the directory is there, without reading them.
                let (_, config_only) = self.config_key(st, step);
                if self.cached(st, &key)? || self.cached(st, &config_only)? {
                    return Ok(());
                }
                if self.files(st)?.is_dir(&dir) {
                    return self.commit_config(st, step);
                }
                let tar = self.scratch.path().join(format!("workdir-{}.tar", self.step_no));
                let opts = CopyOptions {
                    dest: format!("{dir}/"),
                    workdir: "/".into(),
                    clamp_mtime: self.opts.timestamp,
                    ..Default::default()
                };
                copy::write_dirs(&opts, self.files(st)?, &tar)?;
                self.commit_layer(st, &created_by, &key, Some(&tar))
            }
            Instruction::User(raw) => {
                let u = expand::word(raw, &vars, esc).map_err(at(line))?;
                if u.is_empty() {
                    return Err(BuildError::step(line, "USER cannot be empty"));
                }
                st.config.0.insert("User".into(), u.into());
                self.commit_config(st, step)
            }
            Instruction::Cmd(c) => {
                st.config.set_cmd(c);
                st.cmd_set = true;
                self.commit_config(st, step)
            }
            Instruction::Entrypoint(c) => {
                st.config.set_entrypoint(c, st.cmd_set);
                self.commit_config(st, step)
            }
            Instruction::Expose(ports) => {
                for p in ports {
                    for w in expand::words(p, &vars, esc).map_err(at(line))? {
                        st.config.expose(&w).map_err(|e| BuildError::step(line, e))?;
                    }
                }
                self.commit_config(st, step)
            }
            Instruction::Volume(paths) => {
                for p in paths {
                    let p = expand::word(p, &vars, esc).map_err(at(line))?;
                    st.config.add_volume(&p).map_err(|e| BuildError::step(line, e))?;
                }
                self.commit_config(st, step)
            }
            Instruction::StopSignal(s) => {
                let s = expand::word(s, &vars, esc).map_err(at(line))?;
                check_signal(&s).map_err(|e| BuildError::step(line, e))?;
                st.config.0.insert("StopSignal".into(), s.into());
                self.commit_config(st, step)
            }
            Instruction::Shell(v) => {
                st.config.0.insert("Shell".into(), serde_json::json!(v));
                self.commit_config(st, step)
            }
            Instruction::Healthcheck(h) => {
                st.config.set_healthcheck(h.as_ref());
                self.commit_config(st, step)
            }
            Instruction::Onbuild(t) => {
                st.config.add_onbuild(t);
                self.commit_config(st, step)
            }
            Instruction::Maintainer(m) => {
                st.author = Some(m.clone());
                self.commit_config(st, step)
            }
            Instruction::Copy(spec) => self.copy(df, i, st, step, spec, false),
            Instruction::Add(spec) => self.copy(df, i, st, step, spec, true),
            Instruction::Run { command, network } => {
                let Some(parent) = st.parent.clone() else {
                    return Err(BuildError::step(line, "RUN on an empty image (FROM scratch with nothing in it): there is no program to run"));
                };
                let argv = st.config.argv(command);
                let args = st.run_args();
                let shown: Vec<&(String, String)> =
                    args.iter().filter(|(k, _)| !PREDEFINED_ARGS.contains(&k.as_str())).collect();
                let mut created_by = String::new();
                if !shown.is_empty() {
                    created_by.push_str(&format!("|{} ", shown.len()));
                    for (k, v) in &shown {
                        created_by.push_str(&format!("{k}={v} "));
                    }
                }
                created_by.push_str(&argv.join(" "));
                let network = match network.as_deref() {
                    Some("none") => Some("none".to_string()),
                    _ => self.opts.network.clone(),
                };
                let key = self
                    .key(Some(&parent), &["RUN", &created_by, network.as_deref().unwrap_or("")]);
                if self.cached(st, &key)? {
                    return Ok(());
                }
                // The predefined proxy arguments reach RUN without an ARG (and stay out of
                // the history and the cache key, as Docker keeps them).
                let mut env: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                for (k, v) in &self.opts.build_args {
                    if PREDEFINED_ARGS.contains(&k.as_str()) && !args.iter().any(|(n, _)| n == k) {
                        env.push(format!("{k}={v}"));
                        self.used_args.insert(k.clone());
                    }
                }
                let spec = RunSpec {
                    image: parent,
                    argv: argv.clone(),
                    env,
                    user: st.config.user(),
                    workdir: Some(st.config.workdir()),
                    network,
                };
                let mut ctr = String::new();
                let quiet = self.opts.quiet;
                let scratch = self.scratch.path().to_path_buf();
                let root = self.root.clone();
                let mut sink = std::io::sink();
                let out: &mut dyn BuildOutput = if quiet { &mut sink } else { &mut *self.out };
                let mut started = |id: &str, out: &mut dyn BuildOutput| {
                    ctr = id.to_string();
                    let _ = out.line(&format!(" ---> Running in {}", short(id)));
                };
                let ran = run::run(&root, &spec, out, &mut started, &scratch)
                    .map_err(|e| BuildError::step(line, e.to_string()))?;
                if ran.code != 0 {
                    return Err(BuildError::Run { line, command: argv.join(" "), code: ran.code });
                }
                self.say(&format!("Removing intermediate container {}", short(&ctr)));
                let layer = ran.layer.ok_or_else(|| {
                    BuildError::step(line, "the step's changes did not come back")
                })?;
                let path = match self.opts.timestamp {
                    Some(t) => {
                        let clamped = self.scratch.path().join(format!("run-{}.tar", self.step_no));
                        copy::clamp_times(layer.path(), &clamped, t)?;
                        clamped
                    }
                    None => layer.path().to_path_buf(),
                };
                self.commit_layer(st, &created_by, &key, Some(&path))
            }
        }
    }

    /// COPY or ADD.
    fn copy(
        &mut self,
        df: &Dockerfile,
        i: usize,
        st: &mut StageState,
        step: &Step,
        spec: &CopySpec,
        add: bool,
    ) -> Result<(), BuildError> {
        let line = step.line;
        let esc = self.escape;
        let vars = st.vars();
        let what = if add { "ADD" } else { "COPY" };
        let dest = expand::word(&spec.dest, &vars, esc).map_err(at(line))?;
        let ids = match &spec.chown {
            Some(c) => {
                let c = expand::word(c, &vars, esc).map_err(at(line))?;
                let numeric =
                    c.split_once(':').and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
                match numeric {
                    // Numbers need no passwd or group file.
                    Some(ids) => Some(ids),
                    None => Some(self.files(st)?.ids(&c).map_err(|e| BuildError::step(line, e))?),
                }
            }
            None => None,
        };
        let chmod = match &spec.chmod {
            Some(c) => {
                let c = expand::word(c, &vars, esc).map_err(at(line))?;
                Some(copy::parse_chmod(&c).map_err(|e| BuildError::step(line, e))?)
            }
            None => None,
        };
        let opts = CopyOptions {
            dest: dest.clone(),
            workdir: st.config.workdir(),
            ids,
            chmod,
            unpack: add,
            clamp_mtime: self.opts.timestamp,
        };
        if let Some(from) = &spec.from {
            let from = expand::word(from, &vars, esc).map_err(at(line))?;
            return self.copy_from(df, i, st, &from, spec, opts, &dest, line);
        }
        let context = self.context.clone();
        let (input, kind, digest) = match spec.sources.as_slice() {
            [CopySource::HereDoc { name, body, expand: e }] => {
                let body = if *e { expand_body(body, &vars, esc, line)? } else { body.clone() };
                let digest =
                    format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
                (Input::HereDoc { name: name.clone(), body }, "file", digest)
            }
            sources => {
                let mut found = Vec::new();
                for s in sources {
                    let CopySource::Path(p) = s else {
                        return Err(BuildError::step(
                            line,
                            format!("{what}: a here-document must be the only source"),
                        ));
                    };
                    let p = expand::word(p, &vars, esc).map_err(at(line))?;
                    if add && (p.contains("://") || p.starts_with("git@")) {
                        return Err(BuildError::step(line, format!("ADD {p}: remote sources are not fetched by ironpod build; download into the context and ADD the file")));
                    }
                    found.extend(
                        context
                            .sources(&p)
                            .map_err(|e| BuildError::step(line, format!("{what} failed: {e}")))?,
                    );
                }
                let digest = context.digest(&found)?;
                let kind = match found.as_slice() {
                    [one] if one.is_dir => "dir",
                    [_] => "file",
                    _ => "multi",
                };
                (Input::Context { context: &context, sources: found }, kind, digest)
            }
        };
        let created_by = format!("/bin/sh -c #(nop) {what} {kind}:{digest} in {dest} ");
        let key = self.key(
            st.parent.as_ref(),
            &[
                what,
                &created_by,
                &opts.workdir,
                &format!("{:?} {:?}", opts.ids, opts.chmod),
                &st.config.to_value().to_string(),
            ],
        );
        if self.cached(st, &key)? {
            return Ok(());
        }
        let tar = self.scratch.path().join(format!("copy-{}.tar", self.step_no));
        copy::write_layer(&input, &opts, self.files(st)?, &tar)
            .map_err(|e| BuildError::step(line, format!("{what} failed: {e}")))?;
        self.commit_layer(st, &created_by, &key, Some(&tar))
    }

    /// `COPY --from=FROM`.
    #[allow(clippy::too_many_arguments)]
    fn copy_from(
        &mut self,
        df: &Dockerfile,
        i: usize,
        st: &mut StageState,
        from: &str,
        spec: &CopySpec,
        opts: CopyOptions,
        dest: &str,
        line: usize,
    ) -> Result<(), BuildError> {
        let esc = self.escape;
        let vars = st.vars();
        let (manifest, fs) = self.source_image(df, i, from, line)?;
        let layers = match &manifest {
            Some(m) => self.store.layers_of(m)?,
            None => Vec::new(),
        };
        let mut paths = Vec::new();
        for s in &spec.sources {
            let CopySource::Path(p) = s else {
                return Err(BuildError::step(line, "COPY --from takes paths, not here-documents"));
            };
            let p = expand::word(p, &vars, esc).map_err(at(line))?;
            let found = copy_from::image_sources(&fs, &p)
                .map_err(|e| BuildError::step(line, format!("COPY failed: {e}")))?;
            paths.extend(found);
        }
        let mut h = Sha256::new();
        h.update(manifest.as_ref().map(|m| m.to_string()).unwrap_or_default().as_bytes());
        for p in &paths {
            h.update(p.as_bytes());
            h.update([0]);
        }
        let digest = format!("{:x}", h.finalize());
        let kind = match paths.as_slice() {
            [one] if fs.is_dir(one) => "dir",
            [_] => "file",
            _ => "multi",
        };
        let created_by = format!("/bin/sh -c #(nop) COPY {kind}:{digest} in {dest} ");
        let owners = format!("{:?} {:?}", opts.ids, opts.chmod);
        let config = st.config.to_value().to_string();
        let key =
            self.key(st.parent.as_ref(), &["COPY", &created_by, &opts.workdir, &owners, &config]);
        if self.cached(st, &key)? {
            return Ok(());
        }
        let store = &self.store;
        let open = |n: usize| -> Result<Box<dyn std::io::Read>, BuildError> {
            let l = layers
                .get(n)
                .ok_or_else(|| BuildError::step(line, "a layer of the source is missing"))?;
            Ok(store.open_layer(l)?)
        };
        let input = Input::Image { fs: &fs, layers: &open, paths };
        let tar = self.scratch.path().join(format!("copy-{}.tar", self.step_no));
        copy::write_layer(&input, &opts, self.files(st)?, &tar)
            .map_err(|e| BuildError::step(line, format!("COPY failed: {e}")))?;
        self.commit_layer(st, &created_by, &key, Some(&tar))
    }

    /// The image and files `COPY --from=FROM` reads: an earlier stage (by name or number),
    /// or an image (pulled when missing).
    fn source_image(
        &mut self,
        df: &Dockerfile,
        i: usize,
        from: &str,
        line: usize,
    ) -> Result<(Option<Digest>, ImageFs), BuildError> {
        let lower = from.to_ascii_lowercase();
        let by_name = df.stages.iter().position(|s| s.name.as_deref() == Some(&lower));
        let by_number = from.parse::<usize>().ok().filter(|n| *n < df.stages.len());
        if let Some(j) = by_name.or(by_number) {
            if j >= i {
                return Err(BuildError::step(
                    line,
                    format!("invalid from flag value {from}: refers to the current or a later build stage"),
                ));
            }
            if !self.built[j] {
                return Err(BuildError::step(
                    line,
                    format!("COPY --from={from}: that stage was not built (a --from that depends on a stage's own ARG cannot be known before the stage runs)"),
                ));
            }
            // Read once: the stage keeps what was read for later uses.
            let mut files = std::mem::take(&mut self.stages[j].2);
            let caught_up = self.catch_up(&mut files, self.stages[j].1.as_ref());
            self.stages[j].2 = files;
            caught_up?;
            return Ok((self.stages[j].1.clone(), self.stages[j].2.fs.clone()));
        }
        let manifest = self.base_image(from, line)?;
        let mut files = StageFiles::default();
        self.catch_up(&mut files, Some(&manifest))?;
        Ok((Some(manifest), files.fs))
    }

    /// A step's cache key: its parent, what it does, and the build's timestamp (a step made
    /// without `--timestamp` is not the same image as one made with it).
    fn key(&self, parent: Option<&Digest>, parts: &[&str]) -> String {
        let stamp = format!("{:?}", self.opts.timestamp);
        let mut all: Vec<&str> = parts.to_vec();
        all.push(&stamp);
        cache_key(parent, &all)
    }

    /// `--label`s: a LABEL step at the end of the target stage (values as given, never
    /// expanded).
    pub(crate) fn label_step(
        &mut self,
        st: &mut StageState,
        line: usize,
    ) -> Result<(), BuildError> {
        let labels = self.opts.labels.clone();
        let text = format!(
            "LABEL {}",
            labels.iter().map(|(k, v)| format!("{k:?}={v:?}")).collect::<Vec<_>>().join(" ")
        );
        self.step_no += 1;
        self.say(&format!("Step {}/{} : {text}", self.step_no, self.steps_total));
        for (k, v) in &labels {
            st.config.set_label(k, v);
        }
        let step = Step { line, text, instruction: Instruction::Label(String::new()) };
        self.commit_config(st, &step)
    }

    /// A step that changes only the configuration.
    fn commit_config(&mut self, st: &mut StageState, step: &Step) -> Result<(), BuildError> {
        let (created_by, key) = self.config_key(st, step);
        if self.cached(st, &key)? {
            return Ok(());
        }
        self.commit_layer(st, &created_by, &key, None)
    }

    /// A config-only step's history line and cache key.
    fn config_key(&self, st: &StageState, step: &Step) -> (String, String) {
        let created_by = format!("/bin/sh -c #(nop) {}", step.text);
        let key = self.key(
            st.parent.as_ref(),
            &[
                "CONFIG",
                &created_by,
                &st.config.to_value().to_string(),
                st.author.as_deref().unwrap_or(""),
            ],
        );
        (created_by, key)
    }

    /// Looks the step up in the cache (unless `--no-cache`); on a hit the stage moves on to
    /// the cached image.
    fn cached(&mut self, st: &mut StageState, key: &str) -> Result<bool, BuildError> {
        if self.opts.no_cache {
            return Ok(false);
        }
        let Some(hit) = self.store.cached_step(key)? else { return Ok(false) };
        self.advance(st, hit)?;
        self.say(" ---> Using cache");
        let id = self.store.image_id(st.parent.as_ref().expect("just set"))?;
        self.say(&format!(" ---> {}", short(&id.to_string())));
        Ok(true)
    }

    /// Stores the step's image and moves the stage on to it.
    fn commit_layer(
        &mut self,
        st: &mut StageState,
        created_by: &str,
        key: &str,
        layer: Option<&std::path::Path>,
    ) -> Result<(), BuildError> {
        let step = BuildStep {
            parent: st.parent.as_ref(),
            layer,
            config: st.config.to_value(),
            created: self.created(),
            created_by: created_by.to_string(),
            author: st.author.clone(),
            cache_key: key,
        };
        let made = self.store.add_step(&step)?;
        if let Some(tar) = layer {
            if tar.starts_with(self.scratch.path()) {
                // Stored (compressed) now: the build's scratch copy goes at once.
                let _ = std::fs::remove_file(tar);
            }
        }
        self.advance(st, made)?;
        let id = self.store.image_id(st.parent.as_ref().expect("just set"))?;
        self.say(&format!(" ---> {}", short(&id.to_string())));
        Ok(())
    }

    /// Moves the stage to image `next` (a child of its current image): its configuration
    /// becomes the stage's; its files are read when a step needs them.
    fn advance(&mut self, st: &mut StageState, next: Digest) -> Result<(), BuildError> {
        st.config = RunConfig::of_image(&self.store.raw_config(&next)?);
        st.parent = Some(next);
        Ok(())
    }

    /// The stage's files, its image's layers not read yet applied first.
    pub(crate) fn files<'a>(&self, st: &'a mut StageState) -> Result<&'a ImageFs, BuildError> {
        self.catch_up(&mut st.files, st.parent.as_ref())?;
        Ok(&st.files.fs)
    }

    /// Applies the layers of `image` that `files` has not seen yet.
    pub(crate) fn catch_up(
        &self,
        files: &mut StageFiles,
        image: Option<&Digest>,
    ) -> Result<(), BuildError> {
        let Some(image) = image else { return Ok(()) };
        for l in self.store.layers_of(image)?.iter().skip(files.applied) {
            let r = self.store.open_layer(l)?;
            files.fs.apply_layer(r)?;
            files.applied += 1;
        }
        Ok(())
    }
}
