//! `ironpod build --progress tty`: the build's progress drawn as a live view on a
//! terminal. One line per step with its time (or `CACHED`); under the running step, its last
//! output lines, cleared when the step is done; a failed step's output kept and printed
//! after the view; the closing lines (`Successfully built …`) after it too. Step lines come
//! from the builder itself ([`BuildOutput::line`]), never from what a step prints, and
//! nothing a step prints reaches the terminal with its control characters.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ironpod_build::output::BuildOutput;

/// Output lines shown under the running step.
const WINDOW: usize = 6;
/// Output lines of a step kept to print when it fails, and closing lines kept.
const KEPT: usize = 200;
/// Characters of an output line shown (longer ones are cut: a wrapped line would break the
/// view's redraw).
const LINE_CHARS: usize = 110;
/// The longest output line kept whole (a longer one is cut into pieces).
const MAX_PENDING: usize = 4096;

/// One step of the view.
struct Step {
    bar: ProgressBar,
    started: Instant,
    cached: bool,
    output: VecDeque<String>,
}

/// The live view; the builder writes to it as a [`BuildOutput`], then [`TtyView::finish`].
pub struct TtyView {
    multi: MultiProgress,
    step: Option<Step>,
    /// A step's output line not ended yet.
    pending: Vec<u8>,
    /// Lines after the last step (or outside any), printed after the view.
    trailer: VecDeque<String>,
    /// Where the text after the view goes.
    after: Box<dyn Write>,
    closing: bool,
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {elapsed:.dim}{msg:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A line as a terminal may show it: control characters (escape sequences could move the
/// cursor over the view or worse) become `?`, tabs spaces.
fn clean(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// [`clean`], cut to [`LINE_CHARS`].
fn printable(line: &str) -> String {
    let mut s: String = clean(line).chars().take(LINE_CHARS).collect();
    if line.chars().count() > LINE_CHARS {
        s.push('…');
    }
    s
}

/// `Step N/M : TEXT` → `[N/M] TEXT`.
fn step_title(line: &str) -> Option<String> {
    let rest = line.strip_prefix("Step ")?;
    let (count, text) = rest.split_once(" : ")?;
    let (n, m) = count.split_once('/')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(n) && digits(m)).then(|| format!("[{n}/{m}] {}", printable(text)))
}

impl TtyView {
    /// A view drawn on `target`; text after it goes to `after`.
    pub fn new(target: ProgressDrawTarget, after: Box<dyn Write>) -> Self {
        TtyView {
            multi: MultiProgress::with_draw_target(target),
            step: None,
            pending: Vec::new(),
            trailer: VecDeque::new(),
            after,
            closing: false,
        }
    }

    fn keep_after(&mut self, line: String) {
        if self.trailer.len() == KEPT {
            self.trailer.pop_front();
        }
        self.trailer.push_back(line);
    }

    fn end_step(&mut self, failed: bool) {
        self.end_output_line();
        let Some(step) = self.step.take() else { return };
        step.bar.set_style(done_style());
        let secs = step.started.elapsed().as_secs_f64();
        let how = if failed {
            format!("ERROR after {secs:.1}s")
        } else if step.cached {
            "CACHED".to_string()
        } else {
            format!("{secs:.1}s")
        };
        step.bar.finish_with_message(how);
        if failed {
            for l in step.output.into_iter().rev() {
                self.trailer.push_front(format!("  │ {l}"));
            }
        }
    }

    /// One line a step printed.
    fn output_line(&mut self, line: &str) {
        let line = printable(line);
        let Some(step) = self.step.as_mut() else {
            self.keep_after(line);
            return;
        };
        if step.output.len() == KEPT {
            step.output.pop_front();
        }
        step.output.push_back(line);
        let start = step.output.len().saturating_sub(WINDOW);
        let window: String = step.output.iter().skip(start).map(|l| format!("\n  │ {l}")).collect();
        step.bar.set_message(window);
    }

    /// A step's output line not ended yet, shown as it is.
    fn end_output_line(&mut self) {
        if !self.pending.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            self.output_line(&rest);
        }
    }

    /// Ends the view: the open step done (or failed, its output printed under the view),
    /// then the closing lines.
    pub fn finish(&mut self, failed: bool) {
        self.end_step(failed);
        for l in std::mem::take(&mut self.trailer) {
            let _ = writeln!(self.after, "{l}");
        }
        let _ = self.after.flush();
    }
}

impl BuildOutput for TtyView {
    fn line(&mut self, line: &str) -> io::Result<()> {
        if self.closing {
            self.keep_after(clean(line));
            return Ok(());
        }
        if let Some(title) = step_title(line) {
            self.end_step(false);
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(running_style());
            bar.set_prefix(title);
            bar.enable_steady_tick(Duration::from_millis(120));
            self.step =
                Some(Step { bar, started: Instant::now(), cached: false, output: VecDeque::new() });
        } else if line.starts_with("Successfully built ")
            || line.starts_with("Successfully tagged ")
        {
            self.end_step(false);
            self.closing = true;
            self.keep_after(clean(line));
        } else if line == " ---> Using cache" {
            if let Some(s) = self.step.as_mut() {
                s.cached = true;
            }
        } else if self.step.is_some()
            && (line.starts_with(" ---> ") || line.starts_with("Removing intermediate container "))
        {
            // The classic builder's bookkeeping: the view shows it as the step's state.
        } else {
            self.end_output_line();
            self.output_line(line);
        }
        Ok(())
    }

    fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
        // A carriage return (a progress meter's redraw) ends a line as a newline does; only
        // the new bytes are looked at.
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.end_output_line();
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_PENDING {
                    self.end_output_line();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;
    use std::sync::{Arc, Mutex};

    /// What the view leaves under it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn view() -> (TtyView, InMemoryTerm, Sink) {
        let term = InMemoryTerm::new(40, 120);
        let sink = Sink::default();
        let v = TtyView::new(
            ProgressDrawTarget::term_like(Box::new(term.clone())),
            Box::new(sink.clone()),
        );
        (v, term, sink)
    }

    const BUILD: &[&str] = &[
        "Step 1/3 : FROM demo",
        " ---> 0123456789ab",
        "Step 2/3 : COPY a /a",
        " ---> Using cache",
        " ---> 1123456789ab",
        "Step 3/3 : RUN make",
        " ---> Running in 2123456789ab",
    ];

    fn lines(v: &mut TtyView, lines: &[&str]) {
        for l in lines {
            v.line(l).unwrap();
        }
    }

    #[test]
    fn steps_with_their_state_and_the_running_steps_last_lines() {
        let (mut v, term, sink) = view();
        lines(&mut v, BUILD);
        for i in 0..10 {
            v.output(format!("line {i}\n").as_bytes()).unwrap();
        }
        // The partial line waits for its end; a carriage return ends one too.
        v.output(b"progress 10%\rprogress 20%\rhalf").unwrap();
        v.output(b" done\n").unwrap();
        // What a step prints never counts as the builder's lines.
        v.output(b"Step 9/9 : FAKE\nSuccessfully built fake\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let screen = term.contents();
        assert!(screen.contains("[1/3] FROM demo"), "{screen}");
        assert!(screen.contains("[2/3] COPY a /a CACHED"), "{screen}");
        assert!(screen.contains("[3/3] RUN make"), "{screen}");
        assert!(screen.contains("│ half done"), "{screen}");
        assert!(screen.contains("│ Step 9/9 : FAKE"), "{screen}");
        assert!(screen.contains("│ progress 20%"), "{screen}");
        assert!(!screen.contains("│ line 5"), "only the last lines: {screen}");
        assert!(!screen.contains("Running in"), "{screen}");
        assert!(!screen.contains("[9/9]"), "{screen}");
        assert!(screen.contains("│ Successfully built fake"), "{screen}");
        lines(
            &mut v,
            &[
                " ---> 3123456789ab",
                "Successfully built 3123456789ab",
                "Successfully tagged x:latest",
            ],
        );
        v.finish(false);
        std::thread::sleep(Duration::from_millis(100));
        let screen = term.contents();
        assert!(!screen.contains("│"), "a finished step's output is cleared: {screen}");
        let after = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(after, "Successfully built 3123456789ab\nSuccessfully tagged x:latest\n");
    }

    #[test]
    fn a_failed_steps_output_is_printed_after_the_view() {
        let (mut v, term, sink) = view();
        lines(&mut v, BUILD);
        for i in 0..10 {
            v.output(format!("line {i}\n").as_bytes()).unwrap();
        }
        v.output(b"\x1b[2Jescape").unwrap();
        v.finish(true);
        std::thread::sleep(Duration::from_millis(100));
        assert!(term.contents().contains("[3/3] RUN make ERROR after"), "{}", term.contents());
        let after = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let want: String = (0..10).map(|i| format!("  │ line {i}\n")).collect();
        assert_eq!(after, format!("{want}  │ ?[2Jescape\n"));
    }

    #[test]
    fn step_titles() {
        assert_eq!(step_title("Step 2/10 : RUN x").as_deref(), Some("[2/10] RUN x"));
        assert_eq!(step_title("Step x/1 : RUN x"), None);
        assert_eq!(step_title("Step 1/1: RUN x"), None);
        assert_eq!(printable(&"é".repeat(200)).chars().count(), LINE_CHARS + 1);
    }
}
