//! One file per `cargo xtask` verb (besides `setup`, which has its own folder).

pub mod bench;
pub mod build;
pub mod lab;
pub mod man;
pub mod package;
pub mod run;
pub mod test;
