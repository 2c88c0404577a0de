//! What belongs to the UI alone: the selected run, the view and the overlay over it (help,
//! the fork form, the quit confirmation), toggles, the status line, the zoom window and the
//! replay's time cursor. Key handling and the main loop change it; events only set the
//! status line.

use ratatui::layout::Rect;
use wsdscope_sessions::RunId;
use wsdscope_trainer::DecayShape;

/// How important a status-line message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// The one-line message at the top: the last note from the engine, an error, or feedback on
/// a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub level: Level,
}

/// Which field of the fork form has the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkField {
    Length,
    Shape,
    Floor,
}

/// The fork form: fork a decay branch from `parent` at the step it shows. The run is paused
/// while the form is open, so that step is where the engine is (`TuiState::fork_point`).
#[derive(Debug, Clone, PartialEq)]
pub struct ForkForm {
    pub parent: RunId,
    /// The form paused the run and resumes it when it closes (false: the user had paused it,
    /// and it stays paused).
    pub resume: bool,
    pub field: ForkField,
    /// Steps (`200`) or a percentage of the fork step (`10%`).
    pub length: String,
    pub shape: DecayShape,
    /// Floor ratio of the peak lr, `0..=1`.
    pub floor: String,
    pub error: Option<String>,
}

/// A window drawn over the panels; it takes the keys while open.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Overlay {
    #[default]
    None,
    Help,
    Fork(ForkForm),
    ConfirmQuit,
}

/// Which full-screen view shows (key `v` cycles them; the branches view of key `c` goes
/// over any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Loss, lr, norms, runs and the small probes panel.
    #[default]
    Main,
    /// Per-step geometry (cos, D1, D2, K), sharpness and noise scale over steps.
    Probes,
    /// The selected run's latest 2-D landscape, 1-D slices and interpolation.
    Landscape,
}

impl View {
    /// The view after this one: Main → Probes → Landscape → Main.
    pub fn next(self) -> View {
        match self {
            View::Main => View::Probes,
            View::Probes => View::Landscape,
            View::Landscape => View::Main,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            View::Main => "main",
            View::Probes => "probes",
            View::Landscape => "landscape",
        }
    }
}

/// What belongs to the UI alone.
#[derive(Debug, Clone)]
pub struct UiState {
    /// Visible x range (in the unit of `x_axis`); `None` shows the whole run.
    pub zoom: Option<(f64, f64)>,
    pub selected: RunId,
    pub log_y: bool,
    /// The loss and norm panels leave the warmup's transient above their y range (key `o`;
    /// see `views::yrange`).
    pub clip_outliers: bool,
    pub smooth: bool,
    /// What the step charts' x axis shows: steps, tokens or training time (key `x`).
    pub x_axis: crate::cli::XAxis,
    /// The branches view: the comparison table and the endpoint fit in place of the other
    /// panels (key `c`).
    pub compare: bool,
    /// The full-screen view under the branches view (key `v`).
    pub view: View,
    pub overlay: Overlay,
    pub status: Option<Status>,
    /// Display samples the caller dropped because the UI fell behind (the recorder has them).
    pub dropped_display: u64,
    pub session_path: Option<String>,
    /// True while a live engine is attached (pause, fork and the quit confirmation apply).
    pub live: bool,
    /// Set once Stop was sent; the loop waits for the run to end.
    pub stopping: bool,
    /// The live run is another process's, reached with `wsdscope attach`: `q` detaches and
    /// leaves it running, `X` stops it.
    pub attached: bool,
    /// The pause state asked for and not yet confirmed by the engine's note.
    pub pause_intent: Option<bool>,
    /// The fork form closed with a fork and had paused the run: the main loop resumes it
    /// after sending the fork.
    pub resume_after_fork: bool,
    /// The run whose probes `p` asked for and that have not arrived yet.
    pub probing: Option<RunId>,
    /// The terminal size at the last draw, for mouse hit-testing.
    pub area: Rect,
    /// A failure outside the event stream that must stay visible (e.g. the session file could
    /// not be written), shown in red before any status message.
    pub alert: Option<String>,
    /// The time cursor, when replaying a recorded session.
    pub replay: Option<ReplayUi>,
}

/// What the replay's time cursor shows in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayUi {
    pub playing: bool,
    /// `×1`, `×10`, `×100` or `max`.
    pub speed: &'static str,
    /// Attached to a growing session (`--follow`).
    pub follow: bool,
    /// Following: the cursor stays at the end as the session grows.
    pub following: bool,
    /// Step events applied (all runs) and recorded.
    pub steps_shown: u64,
    pub steps_total: u64,
    /// Followed, and no process writes the session any more (finished, or killed).
    pub writer_gone: bool,
}

impl Default for UiState {
    fn default() -> Self {
        UiState {
            zoom: None,
            selected: 0,
            log_y: false,
            clip_outliers: true,
            smooth: true,
            x_axis: crate::cli::XAxis::Steps,
            compare: false,
            view: View::Main,
            overlay: Overlay::None,
            status: None,
            dropped_display: 0,
            session_path: None,
            live: true,
            stopping: false,
            attached: false,
            pause_intent: None,
            resume_after_fork: false,
            probing: None,
            area: Rect::default(),
            alert: None,
            replay: None,
        }
    }
}
