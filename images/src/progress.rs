//! Progress of blob transfers (pull and push): bars on a terminal, plain lines otherwise,
//! nothing when quiet — or, for a program that shows progress its own way (the Docker API's
//! JSON stream), structured events sent to a [`ProgressSink`].

use std::io::IsTerminal;
use std::sync::Arc;

use crate::Digest;

/// One step of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A blob transfer began (`verb`: `Downloading` or `Uploading`).
    Start {
        /// What is done.
        verb: &'static str,
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// Bytes of a blob moved so far.
    Advance {
        /// The blob.
        digest: Digest,
        /// Bytes so far.
        current: u64,
        /// Its size.
        size: u64,
    },
    /// A blob is in place.
    Done {
        /// The blob.
        digest: Digest,
        /// How: `Downloaded`, `Pushed`, `Layer already exists`, `Mounted from REPO`.
        how: String,
    },
}

/// Receives [`ProgressEvent`]s (from several transfer tasks at once).
#[derive(Clone)]
pub struct ProgressSink(pub Arc<dyn Fn(ProgressEvent) + Send + Sync>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// Where a transfer's progress goes.
pub(crate) struct Progress {
    bars: Option<indicatif::MultiProgress>,
    quiet: bool,
    sink: Option<ProgressSink>,
}

/// One blob's transfer.
pub(crate) struct Bar {
    bar: Option<indicatif::ProgressBar>,
    digest: Digest,
    size: u64,
}

impl Progress {
    pub(crate) fn new(quiet: bool, sink: Option<ProgressSink>) -> Self {
        let terminal = sink.is_none() && !quiet && std::io::stderr().is_terminal();
        Progress { bars: terminal.then(indicatif::MultiProgress::new), quiet, sink }
    }

    pub(crate) fn start(&self, verb: &'static str, d: &Digest, size: u64) -> Bar {
        let short = &d.hex()[..12];
        let mut bar = None;
        if let Some(s) = &self.sink {
            (s.0)(ProgressEvent::Start { verb, digest: d.clone(), size });
        } else if let Some(m) = &self.bars {
            let pb = m.add(indicatif::ProgressBar::new(size));
            pb.set_style(
                indicatif::ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_prefix(format!("{verb} {short}"));
            bar = Some(pb);
        } else if !self.quiet {
            eprintln!("{verb} {short} ({size} bytes)");
        }
        Bar { bar, digest: d.clone(), size }
    }

    pub(crate) fn advance(&self, b: &Bar, current: u64) {
        if let Some(s) = &self.sink {
            (s.0)(ProgressEvent::Advance { digest: b.digest.clone(), current, size: b.size });
        }
        if let Some(pb) = &b.bar {
            pb.set_position(current);
        }
    }

    /// A blob is in place: `how` it got there.
    pub(crate) fn done(&self, d: &Digest, how: &str, b: Option<Bar>) {
        if let Some(pb) = b.and_then(|b| b.bar) {
            pb.finish();
        }
        if let Some(s) = &self.sink {
            return (s.0)(ProgressEvent::Done { digest: d.clone(), how: how.to_string() });
        }
        if self.quiet {
            return;
        }
        let msg = format!("{how} {}", &d.hex()[..12]);
        match &self.bars {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}
