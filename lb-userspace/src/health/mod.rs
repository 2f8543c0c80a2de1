//! Health checking: the state machine of one backend ([`machine`], pure), passive
//! ejection from the data path's counters ([`passive`], pure), one probe over the
//! network ([`probe`]), and the tokio tasks that probe every backend on its interval
//! ([`checker`]).
pub mod checker;
pub mod machine;
pub mod passive;
pub mod probe;
