//! The `wsdscope` application as a library: the command line, the modes (one per
//! subcommand), the live pipeline and the terminal UI. The binary (`main.rs`) only parses and
//! dispatches; the render benchmark and the tests import these modules from here.

pub mod analysis;
pub mod attach;
pub mod cli;
pub mod live;
pub mod memory;
pub mod modes;
pub mod palette;
pub mod predict;
pub mod progress;
pub mod settings;
pub mod sibling_table;
pub mod signals;
pub mod threads;
pub mod tui;
