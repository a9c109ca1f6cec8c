//! `ironpod build --progress tty`: the classic builder's lines drawn as a live view on a
//! terminal. One line per step with its time (or `CACHED`); under the running step, its last
//! output lines, cleared when the step is done; a failed step's output kept and printed
//! after the view; the closing lines (`Successfully built …`) after it too.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Output lines shown under the running step.
const WINDOW: usize = 6;
/// Output lines of a step kept to print when it fails.
const KEPT: usize = 200;
/// Characters of an output line shown (longer ones are cut: a wrapped line would break the
/// view's redraw).
const LINE_CHARS: usize = 110;

/// One step of the view.
struct Step {
    bar: ProgressBar,
    started: Instant,
    cached: bool,
    output: VecDeque<String>,
}

/// The live view; feed it the builder's output through [`Write`], then [`TtyView::finish`].
pub struct TtyView {
    multi: MultiProgress,
    step: Option<Step>,
    pending: Vec<u8>,
    /// Lines after the last step (or outside any), printed after the view.
    trailer: Vec<String>,
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

/// What a terminal may show of a line the build printed: control characters (a step's
/// escape sequences could move the cursor over the view) become `?`, long lines are cut.
fn printable(line: &str) -> String {
    let mut s: String = line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .take(LINE_CHARS)
        .collect();
    if line.chars().count() > LINE_CHARS {
        s.push('…');
    }
    s.replace('\t', "    ")
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
            trailer: Vec::new(),
            after,
            closing: false,
        }
    }

    fn end_step(&mut self, failed: bool) {
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
            self.trailer.splice(0..0, step.output.into_iter().map(|l| format!("  │ {l}")));
        }
    }

    fn line(&mut self, line: &str) {
        if self.closing {
            self.trailer.push(line.to_string());
            return;
        }
        if let Some(title) = step_title(line) {
            self.end_step(false);
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(running_style());
            bar.set_prefix(title);
            bar.enable_steady_tick(Duration::from_millis(120));
            self.step =
                Some(Step { bar, started: Instant::now(), cached: false, output: VecDeque::new() });
            return;
        }
        if line.starts_with("Successfully built ") || line.starts_with("Successfully tagged ") {
            self.end_step(false);
            self.closing = true;
            self.trailer.push(line.to_string());
            return;
        }
        let Some(step) = self.step.as_mut() else {
            self.trailer.push(line.to_string());
            return;
        };
        if line == " ---> Using cache" {
            step.cached = true;
        } else if line.starts_with(" ---> ") || line.starts_with("Removing intermediate container ")
        {
            // The classic builder's bookkeeping: the view shows it as the step's state.
        } else if !line.is_empty() {
            if step.output.len() == KEPT {
                step.output.pop_front();
            }
            step.output.push_back(printable(line));
            let start = step.output.len().saturating_sub(WINDOW);
            let window: String =
                step.output.iter().skip(start).map(|l| format!("\n  │ {l}")).collect();
            step.bar.set_message(window);
        }
    }

    /// Ends the view: the open step done (or failed, its output printed under the view),
    /// then the closing lines.
    pub fn finish(&mut self, failed: bool) {
        if !self.pending.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            self.line(&rest);
        }
        self.end_step(failed);
        for l in std::mem::take(&mut self.trailer) {
            let _ = writeln!(self.after, "{l}");
        }
        let _ = self.after.flush();
    }
}

impl Write for TtyView {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        // A carriage return (a progress meter's redraw) ends a line as a newline does.
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.line(&String::from_utf8_lossy(&line[..i]));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
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

    const BUILD: &str = "Step 1/3 : FROM demo\n ---> 0123456789ab\nStep 2/3 : COPY a /a\n ---> Using cache\n ---> 1123456789ab\nStep 3/3 : RUN make\n ---> Running in 2123456789ab\n";

    #[test]
    fn steps_with_their_state_and_the_running_steps_last_lines() {
        let (mut v, term, sink) = view();
        v.write_all(BUILD.as_bytes()).unwrap();
        for i in 0..10 {
            writeln!(v, "line {i}").unwrap();
        }
        // The partial line waits for its end; a carriage return ends one too.
        v.write_all(b"progress 10%\rprogress 20%\rhalf").unwrap();
        v.write_all(b" done\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let screen = term.contents();
        assert!(screen.contains("[1/3] FROM demo"), "{screen}");
        assert!(screen.contains("[2/3] COPY a /a CACHED"), "{screen}");
        assert!(screen.contains("[3/3] RUN make"), "{screen}");
        assert!(screen.contains("│ half done"), "{screen}");
        assert!(screen.contains("│ progress 20%"), "{screen}");
        assert!(!screen.contains("│ line 5"), "only the last lines: {screen}");
        assert!(!screen.contains("Running in"), "{screen}");
        v.write_all(
            b" ---> 3123456789ab\nSuccessfully built 3123456789ab\nSuccessfully tagged x:latest\n",
        )
        .unwrap();
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
        v.write_all(BUILD.as_bytes()).unwrap();
        for i in 0..10 {
            writeln!(v, "line {i}").unwrap();
        }
        v.write_all(b"\x1b[2Jescape").unwrap();
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
