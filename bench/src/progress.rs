//! Progress while the bench runs: one `indicatif` bar over the selected
//! scenarios (drawn only when stderr is a terminal), and [`note!`] for
//! status lines that must not tear the bar.

use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Starts the bar over `len` scenarios.
pub fn start(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} scenarios: {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    let _ = BAR.set(bar.clone());
    bar
}

/// Prints one status line above the bar (or to stderr without one).
pub fn line(text: &str) {
    match BAR.get() {
        Some(bar) if !bar.is_hidden() && !bar.is_finished() => bar.println(text),
        _ => eprintln!("{text}"),
    }
}

/// `eprintln!` that keeps the progress bar intact.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::progress::line(&format!($($arg)*))
    };
}
