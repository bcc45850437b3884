//! Progress on stderr for people watching a terminal: one line per record
//! that moves bytes. In a pipeline log (stderr not a terminal) or with
//! `--quiet` it draws nothing, so CI logs stay readable and stderr stays
//! for errors.

use std::io::IsTerminal as _;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Draws only when stderr is a terminal and the user did not ask for
    /// quiet.
    pub fn for_stderr(quiet: bool) -> Progress {
        Progress::new(!quiet && std::io::stderr().is_terminal())
    }

    pub fn new(enabled: bool) -> Progress {
        Progress {
            bars: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// A byte counter for one record, labelled `label`; hidden when
    /// progress is off, so callers update it unconditionally.
    pub fn bytes(&self, label: &str) -> ProgressBar {
        let Some(bars) = &self.bars else {
            return ProgressBar::hidden();
        };
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} {binary_bytes} ({binary_bytes_per_sec}) {wide_msg}",
        )
        .expect("the template is valid");
        let bar = bars.add(ProgressBar::no_length().with_style(style));
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    }
}
