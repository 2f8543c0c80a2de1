//! `--e2e-profile DIR`: one more, unrecorded round of two saturated rows for `lbd` and
//! nftables under `perf record -a -g`, to read where the CPU goes (`perf report
//! --comms ...` limited to the bench's tasks; other engineers' builds share the machine).
use std::{path::Path, process::Command, time::Duration};

use super::{
    variants::{activate, Variant},
    Options, Workload,
};
use crate::{process::output_within, topology::Lab};

/// The rows profiled, for the variants in [`PROFILED_VARIANTS`].
pub const PROFILED: [Workload; 2] = [Workload::IperfUpload, Workload::WrkKeepAlive];
pub const PROFILED_VARIANTS: [Variant; 2] = [Variant::Xdp, Variant::Nftables];

/// One more round of the [`PROFILED`] rows for the [`PROFILED_VARIANTS`], each under
/// `perf record -a -g` (every CPU, call graphs) for the row's length, written to
/// `DIR/<variant>-<row>.data`. Not recorded: perf's sampling costs CPU itself.
pub fn record(opts: &Options, lab: &Lab, lbd: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    for variant in PROFILED_VARIANTS {
        let active = activate(lab, variant, lbd, super::server_workers(opts));
        for workload in PROFILED {
            let out = dir.join(format!("{}-{}.data", variant.key(), workload.key()));
            let out_arg = out.to_str().expect("UTF-8 path").to_string();
            let seconds = format!("{}", opts.saturated_seconds.ceil() as u64);
            let mut perf = Command::new("perf");
            perf.args([
                "record", "-a", "-g", "-o", &out_arg, "--", "sleep", &seconds,
            ]);
            let recording =
                std::thread::spawn(move || output_within(perf, Duration::from_secs(120)));
            let load = workload.run(opts, lab.client_ns(), &active);
            match recording.join().expect("perf thread") {
                Ok(o) if o.status.success() => println!(
                    "profile: {} {}: {} ({:.2} {})",
                    variant.key(),
                    workload.key(),
                    out.display(),
                    workload.rate(&load),
                    if workload.bytes_based() {
                        "Gbit/s"
                    } else {
                        "req/s"
                    },
                ),
                Ok(o) => eprintln!(
                    "profile: perf record failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("profile: perf record: {e}"),
            }
        }
    }
}
