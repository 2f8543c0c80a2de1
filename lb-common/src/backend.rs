//! The backends array: dense backend indices, allocated by the controller, resolved to
//! addresses. The kernel never sees backend names.

/// Value of the backends array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Backend address (wire order).
    pub addr: u32,
    /// Backend port (wire order).
    pub port: u16,
    /// Address family, [`crate::net::FAMILY_IPV4`].
    pub family: u8,
    /// Bit set of `BACKEND_F_*`.
    pub flags: u8,
    /// Effective weight in thousandths of a configured weight unit, for policies that
    /// compare load to capacity (least connections).
    pub weight_milli: u32,
    /// Id of the service this backend slot belongs to, so that a restarted controller can
    /// recover every id from the kernel alone.
    pub service: u32,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 16);

/// The slot holds a configured backend (an all-zero slot is free).
pub const BACKEND_F_PRESENT: u8 = 1 << 0;
