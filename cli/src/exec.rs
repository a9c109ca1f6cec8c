//! `ironpod exec`: run another process in a running container, talking to its pod's agent
//! directly (stdio on their own vsock streams).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ironpod_pods::agent_client::{AgentClient, ClientError};
use ironpod_pods::spec::merge_env;
use ironpod_protocol::{ErrorKind, ExecProcess, ProcessRef, RequestBody, StdioStream};

use crate::containers::{agent, find};
use crate::{terminal, Failure};

/// Arguments of `ironpod exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open and pass it to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Start the process and return.
    #[arg(short, long)]
    detach: bool,
    /// Environment variable.
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// User: NAME[:GROUP] or UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Container.
    container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

fn random_id() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn copy_out(mut from: UnixStream, to: fn() -> Box<dyn Write>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = to();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || w.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = w.flush();
        }
    })
}

/// `ironpod exec`.
pub fn exec(root: &Path, a: ExecArgs) -> Result<i32, Failure> {
    let rec = find(root, &a.container)?;
    let mut ctl = agent(&rec)?;
    let uds = rec.vsock.clone().unwrap_or_default();
    let uds = Path::new(&uds);
    let spec: oci_spec::runtime::Spec = serde_json::from_str(&rec.spec)
        .map_err(|e| Failure::Runtime(format!("bad spec record: {e}")))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(a.command.clone()));
    process.set_terminal(Some(a.tty));
    let base = process.env().clone().unwrap_or_default();
    let mut extra = a.env.clone();
    if a.tty {
        extra.insert(0, "TERM=xterm".into());
    }
    process.set_env(Some(merge_env(&[&base, &extra])));
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            return Err(Failure::Usage(format!("the working directory {w:?} is not absolute")));
        }
        process.set_cwd(w.into());
    }
    if let Some(u) = &a.user {
        if u.is_empty() || u.contains(['\0', '/']) {
            return Err(Failure::Usage(format!("invalid user {u:?}")));
        }
    }
    let io =
        ExecIo { interactive: a.interactive, tty: a.tty, detach: a.detach, user: a.user.clone() };
    run_process(&mut ctl, uds, &rec.id, process, &io)
}

/// How an exec'd process meets the caller's terminal.
pub struct ExecIo {
    /// Pass stdin.
    pub interactive: bool,
    /// A pseudo-terminal.
    pub tty: bool,
    /// Start it and return.
    pub detach: bool,
    /// User to look up in the container (`NAME[:GROUP]`).
    pub user: Option<String>,
}

/// Runs `process` in container `id` of the VM at `uds` with the caller's stdio; returns its
/// exit code (`ironpod exec`, `ironpod kube exec`).
pub fn run_process(
    ctl: &mut AgentClient,
    uds: &Path,
    id: &str,
    mut process: oci_spec::runtime::Process,
    a: &ExecIo,
) -> Result<i32, Failure> {
    let local_tty = a.tty && terminal::is_tty(0);
    if a.tty {
        if let Some((rows, cols)) = terminal::size(0).or_else(|| terminal::size(1)) {
            let b = oci_spec::runtime::BoxBuilder::default()
                .height(rows as u32)
                .width(cols as u32)
                .build();
            if let Ok(b) = b {
                process.set_console_size(Some(b));
            }
        }
    }
    let exec_id = random_id();
    let pref = ProcessRef::exec(id, &exec_id);
    let rt = |e: ClientError| Failure::Runtime(e.to_string());
    ctl.exec(ExecProcess {
        container: id.to_string(),
        exec_id: exec_id.clone(),
        process: Box::new(process),
        stdin: a.interactive,
        user: a.user.clone(),
    })
    .map_err(|e| match &e {
        ClientError::Agent(ae) => Failure::Runtime(ae.message.clone()),
        _ => rt(e),
    })?;
    let open = |which| {
        AgentClient::open(uds, Duration::from_secs(30))
            .and_then(|c| {
                c.into_stream(RequestBody::OpenStdio { process: pref.clone(), stream: which })
            })
            .map_err(rt)
    };
    let mut pumps = Vec::new();
    if !a.detach {
        pumps.push(copy_out(open(StdioStream::Stdout)?, || Box::new(std::io::stdout())));
        if !a.tty {
            pumps.push(copy_out(open(StdioStream::Stderr)?, || Box::new(std::io::stderr())));
        }
    }
    let stdin = if a.interactive && !a.detach { Some(open(StdioStream::Stdin)?) } else { None };
    let signals = a.tty.then(terminal::SignalRelay::start);
    let _raw = if local_tty { terminal::RawMode::enter(0).ok() } else { None };
    if let Err(e) = ctl.start(&pref) {
        drop(_raw);
        return match e {
            ClientError::Agent(ae) => {
                eprintln!("ironpod: {}", ae.message);
                Ok(match ae.kind {
                    ErrorKind::NotFound => 127,
                    ErrorKind::PermissionDenied => 126,
                    _ => 125,
                })
            }
            e => Err(rt(e)),
        };
    }
    if a.detach {
        return Ok(0);
    }
    if let Some(mut s) = stdin {
        std::thread::spawn(move || {
            let mut inp = std::io::stdin().lock();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = inp.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
        });
    }
    if let Some(signals) = signals {
        let (uds, pref) = (uds.to_path_buf(), pref.clone());
        std::thread::spawn(move || {
            let Ok(mut c) = AgentClient::open(&uds, Duration::from_secs(10)) else { return };
            for sig in signals {
                if sig == libc::SIGWINCH {
                    if let Some((rows, cols)) = terminal::size(0).or_else(|| terminal::size(1)) {
                        let _ = c.resize(&pref, rows, cols);
                    }
                } else {
                    let _ = c.signal(&pref, sig, false);
                }
            }
        });
    }
    let mut waiter = AgentClient::open(uds, Duration::from_secs(30)).map_err(rt)?;
    waiter.set_timeout(Duration::from_secs(60 * 60 * 24 * 365)).map_err(rt)?;
    let status = waiter.wait(&pref).map_err(rt)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    for p in pumps {
        while !p.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(status.code)
}
