//! One module per `databelt` command: its flags (`Args`) and `run`.

pub mod bench;
pub mod certs;
pub mod deploy;
pub mod describe;
pub mod elect;
pub mod invoke;
pub mod placement;
pub mod run;
pub mod runs;
pub mod scenario;
pub mod serve;
pub mod state;
pub mod up;
