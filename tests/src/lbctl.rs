//! Runs the real `lbctl` binary against a lab's `lbd`, as an operator would, and
//! captures what it printed and how it exited. Every run is bounded: lbctl's own
//! `--timeout`, and a kill after [`RUN_BOUND`] should lbctl itself hang.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::process::{output_within, workspace_bin};

/// Path of the `lbctl` binary: env `LBCTL_BIN`, else next to the test executable.
pub fn lbctl_path() -> PathBuf {
    workspace_bin("lbctl", "LBCTL_BIN")
}

/// lbctl's own limit on a request in tests (`LBCTL_TIMEOUT`).
pub const REQUEST_TIMEOUT: &str = "30s";

/// How long a run may take before it is killed and the test fails.
pub const RUN_BOUND: Duration = Duration::from_secs(60);

pub struct Lbctl {
    socket: PathBuf,
}

/// What one `lbctl` run did.
#[derive(Debug)]
pub struct LbctlOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl LbctlOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl Lbctl {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    /// Runs `lbctl --socket SOCKET ARGS...` (through `wrapper`, e.g. `setpriv`, if any).
    pub fn run_wrapped(&self, wrapper: &[&str], args: &[&str]) -> LbctlOutput {
        let bin = lbctl_path();
        let mut cmd = match wrapper.split_first() {
            None => Command::new(&bin),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg("--").arg(&bin);
                c
            }
        };
        cmd.arg("--socket").arg(&self.socket).args(args);
        if std::env::var_os("LBCTL_TIMEOUT").is_none() {
            cmd.env("LBCTL_TIMEOUT", REQUEST_TIMEOUT);
        }
        let out = output_within(cmd, RUN_BOUND).unwrap_or_else(|e| panic!("{e}"));
        LbctlOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> LbctlOutput {
        self.run_wrapped(&[], args)
    }

    /// Runs `lbctl ARGS...`, which must succeed; returns its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.success(),
            "lbctl {} failed ({:?}): {}{}",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Runs `lbctl -o json ARGS...` and parses its stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "lbctl {} printed invalid JSON ({e}):\n{text}",
                args.join(" ")
            )
        })
    }
}
