//! The systemd unit's privileges, reproduced with `setpriv` (systemd need not be PID 1
//! here): `lbd` runs as a user of its own with exactly the unit's capabilities
//! (`AmbientCapabilities` = `CapabilityBoundingSet` = CAP_BPF CAP_NET_ADMIN CAP_PERFMON,
//! `NoNewPrivileges`) and forwards traffic; with CAP_BPF or CAP_NET_ADMIN fewer it stops,
//! naming the one it lacks; with CAP_PERFMON fewer it still runs, and names what that
//! costs. And the system calls lbd makes stay within the unit's `SystemCallFilter`.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::{chown, PermissionsExt as _},
    path::Path,
    process::Command,
    time::Duration,
};

use lb_tests::{lab_config, lab_run_dir, lbd_path, scenario::three_zones, Lab, RunningLb};

/// lbd's user in these tests: a uid and gid no account uses (setpriv takes numbers), so
/// the test needs no user created on the machine.
const LBD_UID: u32 = 64_721;

/// The unit's capabilities, in setpriv's syntax.
const UNIT_CAPS: [&str; 3] = ["bpf", "net_admin", "perfmon"];

/// Where labs pin their data paths (`lb_tests::running_lb`).
const PIN_ROOT: &str = "/sys/fs/bpf/lb-tests";

/// Makes what the unit's `RuntimeDirectory=` and its `ExecStartPre=+` commands make: the
/// run directory and the pin directory, owned by lbd's user, below a directory others
/// may cross (as the unit opens the 0700 bpffs root to `o+x`).
fn directories_for_the_user(lab: &Lab) {
    let run = lab_run_dir(lab);
    let pins = Path::new(PIN_ROOT).join(lab.prefix());
    std::fs::create_dir_all(PIN_ROOT).unwrap();
    let root_mode = std::fs::metadata(PIN_ROOT).unwrap().permissions().mode();
    std::fs::set_permissions(PIN_ROOT, std::fs::Permissions::from_mode(root_mode | 0o001)).unwrap();
    for dir in [&run, &pins] {
        std::fs::create_dir_all(dir).unwrap();
        chown(dir, Some(LBD_UID), Some(LBD_UID)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// `setpriv` giving `caps` as the unit does (ambient, inheritable and bounding sets), as
/// lbd's user, with no_new_privs.
fn as_the_unit(caps: &[&str]) -> Vec<String> {
    let list = caps.iter().map(|c| format!(",+{c}")).collect::<String>();
    vec![
        "setpriv".into(),
        format!("--reuid={LBD_UID}"),
        format!("--regid={LBD_UID}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
        "--no-new-privs".into(),
    ]
}

/// A `/proc/PID/status` field.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
        .to_string()
}

#[test]
fn lbd_as_its_own_user_with_the_units_capabilities_forwards_traffic() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    directories_for_the_user(&lab);
    let wrapper = as_the_unit(&UNIT_CAPS);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let lb = RunningLb::start_wrapped(lab, &config, &wrapper);
    let pid = lb.lbd.pid();
    let uid = LBD_UID.to_string();
    assert_eq!(
        status_field(pid, "Uid:")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [uid.as_str(); 4]
    );
    assert!(
        lb.lbd.log().contains("CAP_PERFMON dropped"),
        "{}",
        lb.lbd.log()
    );
    let result = lb.burst(30, Duration::from_secs(3), Duration::from_secs(120));
    assert!(
        result.failed.is_empty() && result.ok == 30,
        "{} of 30 connections failed: {:?}\nlbd log:\n{}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)],
        lb.lbd.log()
    );
    let socket = std::fs::metadata(lb.socket()).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&socket), LBD_UID);
    assert!(lb.lbctl().ok(&["service", "list"]).contains("web"));
}

/// Each capability of the unit taken away in turn, lbd started as its user.
#[test]
fn with_one_capability_fewer_lbd_fails_naming_it_or_warns_of_the_cost() {
    let lab = three_zones();
    let config_path = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix()));
    std::fs::write(&config_path, lab_config(&lab, &[1, 1, 1])).unwrap();
    let config = config_path.to_str().unwrap();
    let lbd = lbd_path();
    let expected = BTreeMap::from([
        (
            "bpf",
            "lbd lacks CAP_BPF (to create maps and load programs)",
        ),
        (
            "net_admin",
            "lbd lacks CAP_NET_ADMIN (to load an XDP program and attach it to NICs)",
        ),
    ]);
    for (missing, message) in &expected {
        directories_for_the_user(&lab);
        let caps: Vec<&str> = UNIT_CAPS.into_iter().filter(|c| c != missing).collect();
        let mut args = as_the_unit(&caps);
        args.extend(["--".into(), lbd.display().to_string(), "--config".into()]);
        args.push(config.into());
        let args: Vec<&str> = args[1..].iter().map(String::as_str).collect();
        let mut d = lab.spawn_daemon(lab.lb_ns(), Path::new("setpriv"), &args);
        let status = d
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("lbd without {missing} kept running: {}", d.log()));
        let log = d.log();
        assert_eq!(status.code(), Some(1), "without {missing}: {log}");
        assert!(log.contains(message), "without {missing}: {log}");
        let other = expected.values().find(|m| *m != message).unwrap();
        assert!(!log.contains(other), "only the missing one is named: {log}");
        let _ = lb_userspace::kernel::pins::PinDir::new(Path::new(PIN_ROOT).join(lab.prefix()))
            .remove_all();
    }
    let _ = std::fs::remove_file(&config_path);
    let _ = std::fs::remove_dir_all(lab_run_dir(&lab));

    // Without CAP_PERFMON lbd serves, with a program the kernel hardened, and says so.
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    directories_for_the_user(&lab);
    let wrapper = as_the_unit(&["bpf", "net_admin"]);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let lb = RunningLb::start_wrapped(lab, &config, &wrapper);
    assert!(
        lb.lbd.log().contains("loaded without CAP_PERFMON"),
        "{}",
        lb.lbd.log()
    );
    let result = lb.burst(10, Duration::from_secs(3), Duration::from_secs(60));
    assert_eq!(result.ok, 10, "{:?}", result.failed);
}

/// The syscalls in systemd's group `name`, groups within it expanded.
fn syscall_group(name: &str, into: &mut BTreeSet<String>) {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect("running systemd-analyze (cargo xtask setup installs systemd)");
    assert!(out.status.success(), "{out:?}");
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if entry.starts_with('@') {
            syscall_group(entry, into);
        } else {
            into.insert(entry.to_string());
        }
    }
}

/// The system calls named in an `strace -f` log.
fn traced_syscalls(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|line| {
            // "1234 name(args" or "1234 <... name resumed>"; signals and exits have
            // no call.
            let rest = line.split_once(' ')?.1.trim_start();
            let rest = rest.strip_prefix("<... ").unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && rest[name.len()..].starts_with(['(', ' '])).then_some(name)
        })
        .filter(|name| !name.starts_with("SIG") && name != "exited" && name != "killed")
        .collect()
}

/// lbd started, serving traffic and the API, reloaded and stopped under strace: every
/// system call it made is in the unit's `SystemCallFilter=@system-service bpf`.
#[test]
fn lbd_makes_only_the_system_calls_the_units_filter_allows() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let trace = std::env::temp_dir().join(format!("{}-strace", lab.prefix()));
    let trace_arg = trace.to_str().unwrap().to_string();
    let wrapper = ["strace", "-f", "-qq", "-o", &trace_arg];
    let mut lb = RunningLb::start_wrapped(lab, &config, &wrapper);
    let result = lb.burst(10, Duration::from_secs(3), Duration::from_secs(60));
    assert_eq!(result.ok, 10, "{:?}", result.failed);
    lb.lbctl().ok(&[
        "backend",
        "drain",
        "web",
        &format!("{}:8080", lb.lab.backend_addr(0)),
    ]);
    // The daemon's pid is strace's: lbd is its child.
    let children = format!("/proc/{0}/task/{0}/children", lb.lbd.pid());
    let lbd: libc::pid_t = std::fs::read_to_string(&children)
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("strace has no child in {children}"));
    let mark = lb.lbd.log_len();
    // SAFETY: kill(2) on lbd's pid, a process of this test's.
    unsafe { libc::kill(lbd, libc::SIGHUP) };
    lb.lbd
        .wait_for_log_after(mark, "SIGHUP: reloaded", Duration::from_secs(30))
        .expect("lbd reloads");
    // SAFETY: as above.
    unsafe { libc::kill(lbd, libc::SIGTERM) };
    let status = lb
        .lbd
        .wait_exit(Duration::from_secs(30))
        .expect("lbd stops on SIGTERM");
    assert!(status.success(), "{status:?}: {}", lb.lbd.log());
    let log = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    let used = traced_syscalls(&log);
    assert!(used.contains("bpf") && used.contains("sendto"), "{used:?}");
    let mut allowed = BTreeSet::from(["bpf".to_string()]);
    syscall_group("@system-service", &mut allowed);
    let outside: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "lbd made system calls outside the unit's filter: {outside:?}"
    );
}

/// `systemd-analyze security` scores the unit as shipped; docs/operations.md prints the
/// score, and this keeps it low (it was 5.9, MEDIUM, with root and fewer protections).
#[test]
fn the_units_exposure_stays_low() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/lbd.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("running systemd-analyze (cargo xtask setup installs systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for lbd.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {out:?}"));
    assert!(score <= 1.8, "exposure {score}:\n{text}");
}
