//! Reading a session file, finished or still growing: the run table, the exact event stream
//! the live run produced, full series for plots, and min/max buckets of any step range for the
//! UI, read in slices so a million-step dataset is never loaded whole.

mod events;
mod follow;
mod open;
mod repair;
mod runs;
mod series;
mod session;

pub use session::{RunInfo, Session};
