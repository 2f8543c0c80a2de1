//! bpffs at /sys/fs/bpf: `lbd` pins its maps and links there so that a restart drops
//! no flows, and the machine does not mount it at boot.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::{Need, Step};
use crate::cmd;

pub const MOUNT_POINT: &str = "/sys/fs/bpf";

pub struct Bpffs;

/// Whether /proc/mounts has a `bpf` file system at `mount_point`.
fn mounted_in(mounts: &str, mount_point: &str) -> bool {
    // Each line: device, mount point, type, options, dump, pass.
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _device = fields.next();
        fields.next() == Some(mount_point) && fields.next() == Some("bpf")
    })
}

impl Step for Bpffs {
    fn name(&self) -> String {
        format!("bpffs at {MOUNT_POINT}")
    }

    fn needed_for(&self) -> Need {
        Need::Run
    }

    fn needs_root(&self) -> bool {
        true
    }

    fn check(&self) -> bool {
        fs::read_to_string("/proc/mounts").is_ok_and(|mounts| mounted_in(&mounts, MOUNT_POINT))
    }

    fn action(&self) -> String {
        format!("mounting it (mount -t bpf bpf {MOUNT_POINT})")
    }

    fn apply(&self) -> Result<()> {
        if !Path::new(MOUNT_POINT).is_dir() {
            fs::create_dir_all(MOUNT_POINT)
                .with_context(|| format!("cannot create {MOUNT_POINT}"))?;
        }
        cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", MOUNT_POINT]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_mounts() {
        let without = "sysfs /sys sysfs rw,relatime 0 0\n";
        let with = "sysfs /sys sysfs rw,relatime 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        let other_type = "none /sys/fs/bpf tmpfs rw 0 0\n";
        assert!(!mounted_in(without, MOUNT_POINT));
        assert!(mounted_in(with, MOUNT_POINT));
        assert!(!mounted_in(other_type, MOUNT_POINT));
    }
}
