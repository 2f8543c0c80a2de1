//! The packet trace as operators see it: the API's streaming route, its metrics, and
//! the lines it prints. The ring buffer's reader is [`crate::kernel::trace`].
pub mod metrics;
pub mod route;
pub mod view;
