//! The things `wsdscope` does, one module per subcommand.

pub mod bench;
pub mod record;
