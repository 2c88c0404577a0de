//! The things `wsdscope` does, one module per subcommand.

pub mod attach;
pub mod bench;
pub mod compare_sessions;
pub mod export;
pub mod inspect;
pub mod kernels;
pub mod plot;
pub mod probe_coverage;
pub mod record;
pub mod replay;
pub mod run;
