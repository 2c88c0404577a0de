//! Terminal setup and teardown: raw mode, alternate screen and mouse capture on entry; all of
//! it undone on exit, on an error return (the guard's `Drop`) and on a panic in any thread
//! (a panic hook restores the terminal before the panic message is printed).

use std::io::{self, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// True while the terminal is in the TUI's modes and must be restored.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set by the panic hook: some thread panicked, so the UI loop should give up.
static PANICKED: AtomicBool = AtomicBool::new(false);
/// Set when the process was asked to end (SIGINT, SIGTERM): the UI loop quits.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// The terminal in TUI mode; restores it when dropped.
pub struct TerminalGuard {
    terminal: Term,
}

impl TerminalGuard {
    /// Installs the panic hook (once per process), then enters raw mode, the alternate screen
    /// and mouse capture.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, EnableMouseCapture) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    pub fn terminal(&mut self) -> &mut Term {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves every TUI mode, if the terminal is in them. Idempotent; errors are ignored because
/// there is nothing better to do with them while tearing down.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(
            io::stdout(),
            DisableMouseCapture,
            LeaveAlternateScreen,
            Show
        );
    }
}

/// Asks the UI loop to quit (the process received SIGINT or SIGTERM).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// True once the process was asked to end.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// True once any thread has panicked since the hook was installed.
pub fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            restore();
            previous(info);
        }));
    });
}
