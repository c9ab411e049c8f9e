//! Progress inside a long task (training epochs, bytes ingested): a bar on a terminal (`indicatif`), and
//! elsewhere (a file, a log collector, JSON logs) a line at most every ten seconds once a step has run that
//! long, so that a short run prints nothing extra and a long one shows it is alive.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written at most.
const LINE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Epochs,
}

/// The terminal's bars, shared so that concurrent tasks draw one block of bars instead of overwriting each
/// other.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

fn terminal() -> bool {
    !crate::binary::json_logs() && std::io::stderr().is_terminal()
}

/// Writes `line` on stderr, above the progress bars when they are drawn.
pub fn eprint_line(line: &str) {
    if terminal() {
        let _ = bars().println(line);
    } else {
        eprintln!("{line}");
    }
}

#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    unit: Unit,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Mutex<Option<Instant>>,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64, unit: Unit) -> Self {
        let label = label.into();
        let bar = terminal().then(|| {
            let template = match unit {
                Unit::Bytes => {
                    "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
                }
                Unit::Epochs => "{msg:24} [{bar:30}] epoch {pos}/{len} {elapsed}",
            };
            let bar = bars().add(ProgressBar::new(total));
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.clone());
            bar
        });
        Self {
            label,
            total,
            unit,
            bar,
            started: Instant::now(),
            last_line: Mutex::new(None),
        }
    }

    /// `done` of the total so far.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.started) < LINE_EVERY {
            return;
        }
        let Ok(mut last) = self.last_line.lock() else {
            return;
        };
        if last.is_some_and(|t| now.duration_since(t) < LINE_EVERY) {
            return;
        }
        *last = Some(now);
        let unit = match self.unit {
            Unit::Bytes => "bytes",
            Unit::Epochs => "epochs",
        };
        let elapsed = now.duration_since(self.started).as_secs_f64();
        crate::binary::say(
            "INFO",
            &format!(
                "progress {}: {done}/{} {unit} ({elapsed:.0}s)",
                self.label, self.total
            ),
            "progress",
            &[
                ("step", self.label.clone().into()),
                ("done", done.into()),
                ("total", self.total.into()),
                ("unit", unit.into()),
                ("seconds", elapsed.into()),
            ],
        );
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            bars().remove(bar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_a_short_step_prints_nothing_and_a_long_one_is_throttled() {
        // the test's stderr is captured, not a terminal: no bar
        let p = Progress::new("x", 10, Unit::Epochs);
        assert!(p.bar.is_none());
        p.set(1);
        assert!(
            p.last_line.lock().is_ok_and(|l| l.is_none()),
            "a short step writes no line"
        );
        let mut p = Progress::new("y", 10, Unit::Bytes);
        p.started = Instant::now() - Duration::from_secs(30);
        p.set(3);
        let first = *p.last_line.lock().unwrap_or_else(|e| e.into_inner());
        assert!(first.is_some());
        p.set(4);
        assert_eq!(
            *p.last_line.lock().unwrap_or_else(|e| e.into_inner()),
            first,
            "throttled"
        );
    }
}
