//! Running other programs: print what runs, and when it fails, say which command failed.
//!
//! Every verb goes through these helpers so that a failure message always names the
//! command line that failed, and its exit code can be passed on unchanged.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context, Result};

/// The command line as a shell user would type it, with the variables that were set
/// for it in front (except `PATH`, which is long and always the same).
pub fn show(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    for arg in cmd.get_args() {
        parts.push(quote(&arg.to_string_lossy()));
    }
    parts.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+@,%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn announce(cmd: &Command) {
    eprintln!("$ {}", show(cmd));
}

/// Runs the command (printing it first) and fails if it does not exit with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("command failed ({}): {}", describe(status), show(cmd));
    }
    Ok(())
}

/// Runs the command (printing it first) and returns how it ended; a non-zero exit is
/// not an error here, the caller decides.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    announce(cmd);
    cmd.status()
        .with_context(|| format!("could not start `{}`", show(cmd)))
}

/// Runs the command without printing anything and returns its stdout; fails (with the
/// command's stderr in the message) if it does not exit with 0.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !output.status.success() {
        bail!(
            "command failed ({}): {}\n{}",
            describe(output.status),
            show(cmd),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` printed something that is not UTF-8", show(cmd)))
}

/// Whether the command starts and exits with 0; prints nothing. For checks.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Replaces this process with the command (printing it first), so that signals such
/// as Ctrl-C reach it directly and its exit code is ours. Returns only on failure.
pub fn exec(cmd: &mut Command) -> anyhow::Error {
    announce(cmd);
    let err = cmd.exec();
    anyhow::Error::new(err).context(format!("could not start `{}`", show(cmd)))
}

/// The exit code to pass on for a finished command; a signal becomes 128 + its number,
/// as a shell reports it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_quotes_only_what_needs_it() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--", "--test-threads=2", "a b", "it's"])
            .env("LLVM_PREFIX", "/x/y")
            .env("PATH", "/bin");
        assert_eq!(
            show(&cmd),
            r"LLVM_PREFIX=/x/y cargo test -- --test-threads=2 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn run_names_the_failed_command() {
        let err = run(Command::new("false").arg("--flag")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "command failed (exit code 1): false --flag"
        );
    }
}
