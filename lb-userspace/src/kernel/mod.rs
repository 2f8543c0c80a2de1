//! The data path in the kernel: the embedded XDP object loaded with its maps sized from
//! config, attached to NICs, pinned for the next lbd, and the
//! [`crate::dataplane::Dataplane`] over its maps.
pub mod ebpf_object;
pub mod link_watch;
mod links;
mod load;
mod lookups;
pub mod mmap_array;
pub mod pin_lock;
pub mod pins;
pub mod privileges;
pub mod service_index;
pub mod trace;

pub use links::LinkChange;
pub use load::{ifindex_of, map_sizes, KernelDataplane, LiveState};
