//! The Debian package (`cargo xtask package`) on this machine: it builds, installs with
//! its system user, `lbd --check` accepts its example config (run as that user with the
//! unit's capabilities, in a namespace holding the config's NICs), its unit passes
//! `systemd-analyze verify`, and a purge leaves nothing behind: every path naming lbd
//! or lbctl under /etc, /usr, /var, /run and /home, and the account databases, are as
//! before. The debug build is packaged (`--dev`): seconds, not an optimised build.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lb_tests::{netns::unique_prefix, output_within, NetNs};

/// Where the package's files, and anything its scripts make, could be.
const ROOTS: &[&str] = &["/etc", "/usr", "/var", "/run", "/home"];

/// The account databases the maintainer scripts edit.
const ACCOUNTS: &[&str] = &["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"];

/// Every path under [`ROOTS`] whose name mentions lbd or lbctl, and the account files.
fn snapshot() -> (BTreeSet<PathBuf>, Vec<String>) {
    let mut paths = BTreeSet::new();
    for root in ROOTS {
        walk(Path::new(root), &mut paths);
    }
    let accounts = ACCOUNTS
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {f}: {e}")))
        .collect();
    (paths, accounts)
}

/// man-db's cache of formatted pages: man-db writes a page's cat file there (its daily
/// job and `man` itself may), and ages it out itself; no package owns it, so a purge
/// cannot remove it and a cat file made from lbd's page while it was installed may stay.
const MAN_CACHE: &str = "/var/cache/man";

fn walk(dir: &Path, found: &mut BTreeSet<PathBuf>) {
    if dir.starts_with(MAN_CACHE) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.to_string_lossy();
        if name.contains("lbd") || name.contains("lbctl") {
            found.insert(path.clone());
        }
        // Not into other file systems' trees that cannot hold the package's files.
        if entry.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with("/run/netns") {
            walk(&path, found);
        }
    }
}

/// `program args`, bounded; its output, or a panic naming it.
fn run(program: &str, args: &[&str], bound: Duration) -> std::process::Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    output_within(cmd, bound).unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

fn installed() -> bool {
    let out = run(
        "dpkg-query",
        &["-W", "-f=${Status}", "lbd"],
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout).contains("installed")
}

/// dpkg, waiting (bounded) while another dpkg or apt holds its lock.
fn dpkg(args: &[&str]) -> std::process::Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = run("dpkg", args, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("lock") {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dpkg {args:?}: {stderr}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Purges the package on drop, so that a failed test leaves the machine as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let _ = dpkg(&["--purge", "lbd"]);
        }
        let _ = std::fs::remove_dir("/sys/fs/bpf/lbd");
    }
}

fn build_package() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace)
        .args(["xtask", "package", "--dev"]);
    let out = output_within(cmd, Duration::from_secs(900)).expect("cargo xtask package");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo xtask package --dev: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = stdout.lines().last().expect("the package's path");
    assert!(deb.ends_with(".deb"), "{stdout}");
    PathBuf::from(deb)
}

#[test]
fn the_package_installs_checks_its_example_config_and_purges_without_a_trace() {
    assert!(
        !installed(),
        "lbd is installed on this machine: the test would install over it and purge it"
    );
    let deb = build_package();
    let before = snapshot();

    let guard = Installed;
    let out = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(out.status.success(), "dpkg -i: {out:?}");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let account = passwd
        .lines()
        .find(|l| l.starts_with("lbd:"))
        .unwrap_or_else(|| panic!("no lbd user: {passwd}"));
    let uid: u32 = account.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system user: {account}");
    assert!(account.ends_with(":/usr/sbin/nologin"), "{account}");
    let listed =
        String::from_utf8_lossy(&run("dpkg", &["-L", "lbd"], Duration::from_secs(30)).stdout)
            .into_owned();
    for file in [
        "/usr/bin/lbd",
        "/usr/bin/lbctl",
        "/lib/systemd/system/lbd.service",
        "/etc/lbd/lb.yaml",
        "/usr/share/man/man8/lbd.8.gz",
        "/usr/share/man/man1/lbctl-backend-drain.1.gz",
        "/usr/share/bash-completion/completions/lbctl",
        "/usr/share/zsh/vendor-completions/_lbctl",
        "/usr/share/fish/vendor_completions.d/lbctl.fish",
        "/usr/share/doc/lbd/examples/prometheus/prometheus.yml",
        "/usr/share/doc/lbd/examples/bird/lb-node.conf",
    ] {
        assert!(listed.lines().any(|l| l == file), "{file} not in: {listed}");
    }
    let stat = run(
        "stat",
        &["-c", "%a %U:%G", "/etc/lbd/lb.yaml", "/etc/lbd"],
        Duration::from_secs(10),
    );
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout),
        "640 root:lbd\n750 root:lbd\n"
    );
    for binary in ["/usr/bin/lbd", "/usr/bin/lbctl"] {
        let version = run(binary, &["--version"], Duration::from_secs(10));
        let version = String::from_utf8_lossy(&version.stdout);
        assert!(version.contains(" 0.1.0 (commit "), "{binary}: {version}");
    }
    let verify = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/lbd.service"],
        Duration::from_secs(60),
    );
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{verify:?}"
    );

    // `lbd --check` as the unit's ExecStartPre runs it: as lbd, with the unit's
    // capabilities, in a namespace holding the example's NICs.
    let ns = NetNs::create(&format!("{}pkg", unique_prefix()));
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    let pins = run(
        "install",
        &[
            "-d",
            "-o",
            "lbd",
            "-g",
            "lbd",
            "-m",
            "0700",
            "/sys/fs/bpf/lbd",
        ],
        Duration::from_secs(10),
    );
    assert!(pins.status.success(), "{pins:?}");
    let caps = "-all,+bpf,+net_admin,+perfmon";
    let check = run(
        "nsenter",
        &[
            &format!("--net={}", ns.path().display()),
            "setpriv",
            "--reuid=lbd",
            "--regid=lbd",
            "--init-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
            "--no-new-privs",
            "/usr/bin/lbd",
            "--check",
            "--config",
            "/etc/lbd/lb.yaml",
        ],
        Duration::from_secs(60),
    );
    assert!(check.status.success(), "lbd --check: {check:?}");
    drop(ns);
    std::fs::remove_dir("/sys/fs/bpf/lbd").unwrap();

    let out = dpkg(&["--purge", "lbd"]);
    assert!(out.status.success(), "dpkg --purge: {out:?}");
    drop(guard);
    let after = snapshot();
    let left: Vec<&PathBuf> = after.0.difference(&before.0).collect();
    assert!(left.is_empty(), "the purge left {left:?}");
    let gone: Vec<&PathBuf> = before.0.difference(&after.0).collect();
    assert!(
        gone.is_empty(),
        "the purge removed what was there before: {gone:?}"
    );
    for (file, (was, is)) in ACCOUNTS.iter().zip(before.1.iter().zip(&after.1)) {
        assert_eq!(was, is, "{file} differs after the purge");
    }
}
