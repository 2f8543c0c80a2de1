//! Health checking: the state machine of one backend ([`machine`], pure), flap damping
//! ([`flap`], pure), passive ejection from the data path's counters ([`passive`], pure),
//! what is kept of each backend's probes for the operator ([`record`]), one probe over
//! the network ([`probe`], a UDP one in [`probe_udp`]), and the tokio tasks that probe every backend on its interval
//! ([`checker`]); DSR backends' probes sent through their tunnel ([`tunnel`], pure).
pub mod checker;
pub mod flap;
pub mod machine;
pub mod passive;
pub mod probe;
pub mod probe_udp;
pub mod record;
pub mod socket_mark;
pub mod tunnel;
