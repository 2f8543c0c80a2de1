//! `lbd`'s own lifecycle on a namespace lab: one lbd per pin directory, `lbd --detach`
//! needing nothing but the pin directory, a start (or `--check`) that refuses what would
//! fail before touching the live data path, a NIC deleted and created again, a program
//! detached under a running lbd, and the documented exit statuses.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use lb_common::limits::{LAYOUT_VERSION, MAP_LAYOUT, OLDEST_ADOPTED_LAYOUT};
use lb_tests::{
    burst, lab_config,
    lbd_metrics::{self, get},
    lbd_path, netns,
    running_lb::pin_dir,
    scenario::three_zones,
    Lab, RunningLb, VIP, VIP_PORT,
};
use lb_userspace::kernel::pins::PinDir;

const METRICS: &str = lbd_metrics::METRICS_LISTEN;

/// Polls `/readyz` until it answers `status` (bounded).
fn wait_readyz(lab: &Lab, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(lab, "/readyz").status;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz answered {got}, not {status}, for 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of one exported sample, e.g. `lb_interface_attached{interface="lbc"}`.
fn sample(lab: &Lab, series: &str) -> Option<f64> {
    lbd_metrics::sample(&get(lab, "/metrics").body, series)
}

/// The id of the XDP program on `dev` in the LB namespace, if any.
fn xdp_prog(lab: &Lab, dev: &str) -> Option<String> {
    let out = netns::ns_ip(lab.lb_ns(), &["-d", "link", "show", dev]);
    out.split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

/// Runs lbd (through `wrapper`, if any) in the LB namespace until it exits by itself;
/// its exit code and everything it printed.
fn run_lbd(lab: &Lab, wrapper: &[&str], args: &[&str]) -> (Option<i32>, String) {
    let lbd = lbd_path();
    let lbd = lbd.to_str().unwrap();
    let mut d = match wrapper.split_first() {
        None => lab.spawn_daemon(lab.lb_ns(), lbd.as_ref(), args),
        Some((program, rest)) => {
            let mut all = rest.to_vec();
            all.extend(["--", lbd]);
            all.extend(args);
            lab.spawn_daemon(lab.lb_ns(), program.as_ref(), &all)
        }
    };
    let status = d
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("lbd {args:?} did not exit; log:\n{}", d.log()));
    (status.code(), d.log())
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(lab: &Lab, name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}-{name}", lab.prefix()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `n` connections through the VIP: every one answered.
fn all_connect(lab: &Lab, n: usize) {
    let r = burst(
        lab.client_ns(),
        VIP,
        VIP_PORT,
        n,
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    r.assert_all_answered(n);
    assert_eq!(r.per_backend.values().sum::<usize>(), n);
}

fn config_arg(lb: &RunningLb) -> String {
    lb.config_path().to_str().unwrap().to_string()
}

#[test]
fn a_second_lbd_on_the_same_pin_dir_is_refused_and_the_first_keeps_forwarding() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    let programs = (xdp_prog(&lb.lab, "lbc"), xdp_prog(&lb.lab, "lbb"));
    assert!(programs.0.is_some() && programs.1.is_some(), "{programs:?}");
    let holder = format!("in use by another lbd (pid {})", lb.lbd.pid());

    let (code, log) = run_lbd(&lb.lab, &[], &["--config", &config_arg(&lb)]);
    assert_eq!(code, Some(75), "{log}");
    assert!(
        log.contains("refusing to start") && log.contains(&holder),
        "{log}"
    );
    assert!(!log.contains("attached"), "{log}");
    assert_eq!(
        (xdp_prog(&lb.lab, "lbc"), xdp_prog(&lb.lab, "lbb")),
        programs
    );
    assert!(lb.lbd.is_running());
    all_connect(&lb.lab, 60);

    // Nor may `--detach` pull the data path from under a running lbd...
    let (code, log) = run_lbd(&lb.lab, &[], &["--detach", "--config", &config_arg(&lb)]);
    assert_eq!(code, Some(75), "{log}");
    assert!(
        log.contains("refusing to detach") && log.contains(&holder) && log.contains("--force"),
        "{log}"
    );
    assert_eq!(
        (xdp_prog(&lb.lab, "lbc"), xdp_prog(&lb.lab, "lbb")),
        programs
    );
    all_connect(&lb.lab, 60);

    // ...unless forced.
    let (code, log) = run_lbd(
        &lb.lab,
        &[],
        &["--detach", "--force", "--config", &config_arg(&lb)],
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("detached from lbb, lbc"), "{log}");
    assert_eq!(xdp_prog(&lb.lab, "lbc"), None);
    assert_eq!(xdp_prog(&lb.lab, "lbb"), None);
    lb.stop_lbd();
}

#[test]
fn detach_needs_nothing_but_the_pin_directory() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    lb.stop_lbd();
    // A corrupt state file and a config whose services are invalid.
    std::fs::write(lb.state_file(), "services: [ { name: web, vip: nope").unwrap();
    let broken = TempFile::new(
        &lb.lab,
        "broken.yaml",
        &config.replace("port: 80\n", "port: 0\n"),
    );
    let (code, log) = run_lbd(&lb.lab, &[], &["--detach", "--config", broken.path()]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("detached from lbb, lbc"), "{log}");
    assert_eq!(xdp_prog(&lb.lab, "lbc"), None);
    assert!(!pin_dir(&lb.lab).exists());

    // The config-less form, on a data path attached again.
    std::fs::remove_file(lb.state_file()).unwrap();
    lb.restart_lbd();
    lb.stop_lbd();
    assert!(xdp_prog(&lb.lab, "lbc").is_some());
    let dir = pin_dir(&lb.lab);
    let (code, log) = run_lbd(
        &lb.lab,
        &[],
        &["--detach", "--pin-dir", dir.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("detached from lbb, lbc"), "{log}");
    assert_eq!(xdp_prog(&lb.lab, "lbc"), None);
    assert_eq!(xdp_prog(&lb.lab, "lbb"), None);
    assert!(!dir.exists());
}

/// The layout version pinned in `dir`'s LB_LAYOUT map.
fn pinned_layout(dir: &Path) -> u32 {
    let data = MapData::from_pin(PinDir::new(dir).map_path(MAP_LAYOUT)).unwrap();
    let map: Array<MapData, u32> = Array::try_from(Map::Array(data)).unwrap();
    map.get(&0, 0).unwrap()
}

/// Sets the layout version pinned in `dir`'s LB_LAYOUT map.
fn set_pinned_layout(dir: &Path, version: u32) {
    let data = MapData::from_pin(PinDir::new(dir).map_path(MAP_LAYOUT)).unwrap();
    let mut map: Array<MapData, u32> = Array::try_from(Map::Array(data)).unwrap();
    map.set(0, version, 0).unwrap();
}

#[test]
fn check_and_start_refuse_what_would_fail_at_start_and_leave_the_data_path_alone() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    // The data path stays pinned and forwarding with no lbd: what a failed start of
    // the next one must not disturb.
    lb.stop_lbd();
    let programs = (xdp_prog(&lb.lab, "lbc"), xdp_prog(&lb.lab, "lbb"));
    let short_token = TempFile::new(&lb.lab, "short-token", "0123456789\n");
    // Owner-only, so that its length is what is refused.
    std::fs::set_permissions(&short_token.0, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_token = |token: &str| {
        config.replace(
            "api:\n  socket: ",
            &format!("api:\n  listen: 127.0.0.1:9470\n  token_file: {token}\n  socket: "),
        )
    };
    let missing = format!("{}-no-such-token", short_token.path());
    let cases = [
        (
            with_token(&missing),
            "api.token_file: reading api.token_file",
        ),
        (
            with_token(short_token.path()),
            "the token must be at least 16 characters",
        ),
        (
            config.replace(
                "interfaces: [lbc, lbb]",
                "interfaces: [lbc, lbb, nosuchnic0]",
            ),
            "interfaces[2]: interface nosuchnic0 does not exist",
        ),
        (
            format!("{config}limits: {{ flow_table_size: 2147483647 }}\n"),
            "limits.flow_table_size: 2147483647 is more than the kernel allows",
        ),
        // Pinned maps sized for another config: refused, not resized under live flows.
        (
            format!("{config}limits: {{ flow_table_size: 2048 }}\n"),
            "pin_dir: pinned map FLOWS is type 9",
        ),
    ];
    for (i, (text, named)) in cases.iter().enumerate() {
        let file = TempFile::new(&lb.lab, &format!("case{i}.yaml"), text);
        for args in [
            vec!["--check", "--config", file.path()],
            vec!["--config", file.path()],
        ] {
            let (code, log) = run_lbd(&lb.lab, &[], &args);
            assert_eq!(code, Some(78), "{args:?}: {log}");
            assert!(
                log.contains(named),
                "{args:?}: expected {named:?} in:\n{log}"
            );
            assert!(!log.contains("attached"), "{log}");
        }
        assert_eq!(
            (xdp_prog(&lb.lab, "lbc"), xdp_prog(&lb.lab, "lbb")),
            programs
        );
    }

    // A pinned layout of another version, newer or older than this lbd reads: refused at
    // --check and at start.
    for version in [LAYOUT_VERSION + 1, OLDEST_ADOPTED_LAYOUT - 1] {
        set_pinned_layout(&pin_dir(&lb.lab), version);
        for args in [
            vec!["--check", "--config", &config_arg(&lb)],
            vec!["--config", &config_arg(&lb)],
        ] {
            let (code, log) = run_lbd(&lb.lab, &[], &args);
            assert_eq!(code, Some(78), "{log}");
            let named = format!(
                "pinned maps have layout version {version}, this lbd uses {LAYOUT_VERSION}"
            );
            assert!(log.contains(&named), "{log}");
        }
    }
    set_pinned_layout(&pin_dir(&lb.lab), LAYOUT_VERSION);

    // A listener address in use: found at start (`--check` runs beside a live lbd, which
    // holds its own, so it does not look).
    let taken = lb.lab.run_in(lb.lab.lb_ns(), || {
        std::net::TcpListener::bind(METRICS).unwrap()
    });
    let (code, log) = run_lbd(&lb.lab, &[], &["--config", &config_arg(&lb)]);
    assert_eq!(code, Some(78), "{log}");
    assert!(
        log.contains("metrics.listen: cannot listen on 127.0.0.1:9464"),
        "{log}"
    );
    drop(taken);
    assert_eq!(
        (xdp_prog(&lb.lab, "lbc"), xdp_prog(&lb.lab, "lbb")),
        programs
    );
    all_connect(&lb.lab, 60);

    // And the unchanged file still starts, adopting the data path. A build that reads an
    // older layout as it is starts on that one here and must stamp the pins with its own,
    // so that the older lbd refuses them; this one reads only its own layout.
    if OLDEST_ADOPTED_LAYOUT < LAYOUT_VERSION {
        set_pinned_layout(&pin_dir(&lb.lab), OLDEST_ADOPTED_LAYOUT);
    }
    lb.restart_lbd();
    assert!(lb.lbd.log().contains("adopting the data path pinned"));
    assert_eq!(pinned_layout(&pin_dir(&lb.lab)), LAYOUT_VERSION);
    all_connect(&lb.lab, 20);
}

#[test]
fn a_deleted_and_recreated_nic_gets_the_data_path_back() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    wait_readyz(&lb.lab, 200);
    let attached = r#"lb_interface_attached{interface="lbc"}"#;
    assert_eq!(sample(&lb.lab, attached), Some(1.0));

    let mark = lb.lbd.log_len();
    lb.lab.delete_client_nic();
    let log = lb
        .lbd
        .wait_for_log_after(
            mark,
            "is gone: nothing is forwarded on it",
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(log.contains("lbc (ifindex"), "{log}");
    wait_readyz(&lb.lab, 503);
    assert_eq!(sample(&lb.lab, attached), Some(0.0));
    assert_eq!(
        sample(&lb.lab, r#"lb_interface_attached{interface="lbb"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &lb.lab,
            r#"lb_interface_events_total{interface="lbc",event="lost"}"#
        ),
        Some(1.0)
    );

    let mark = lb.lbd.log_len();
    lb.lab.create_client_nic();
    lb.lbd
        .wait_for_log_after(mark, "lbc is back (ifindex", Duration::from_secs(10))
        .unwrap();
    wait_readyz(&lb.lab, 200);
    assert!(xdp_prog(&lb.lab, "lbc").is_some());
    assert_eq!(sample(&lb.lab, attached), Some(1.0));
    assert_eq!(
        sample(
            &lb.lab,
            r#"lb_interface_events_total{interface="lbc",event="attached"}"#
        ),
        Some(1.0)
    );
    all_connect(&lb.lab, 60);

    // Re-created while no lbd runs: the pinned link is severed, and the next lbd
    // replaces it instead of failing.
    lb.lbd.signal(libc::SIGKILL);
    assert!(lb.lbd.wait_exit(Duration::from_secs(5)).is_some());
    lb.lab.delete_client_nic();
    lb.lab.create_client_nic();
    assert_eq!(xdp_prog(&lb.lab, "lbc"), None);
    lb.restart_lbd();
    let log = lb.lbd.log();
    assert!(log.contains("lbc's pinned XDP link was severed"), "{log}");
    assert!(xdp_prog(&lb.lab, "lbc").is_some());
    wait_readyz(&lb.lab, 200);
    all_connect(&lb.lab, 60);
}

/// Runs bpftool (another tool acting on lbd's link); panics on failure.
fn bpftool(args: &[&str]) -> String {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .output()
        .expect("running bpftool");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bpftool {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_detached_program_is_attached_again_unless_the_pins_were_removed() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    wait_readyz(&lb.lab, 200);
    let program = xdp_prog(&lb.lab, "lbc").expect("lb_xdp on lbc");
    let event = |interface: &str, event: &str| {
        format!(r#"lb_interface_events_total{{interface="{interface}",event="{event}"}}"#)
    };
    let attached = |interface: &str| format!(r#"lb_interface_attached{{interface="{interface}"}}"#);

    // Another tool detaches lbd's link from lbc; the pin stays, on a defunct link.
    let dir = pin_dir(&lb.lab);
    let link = dir.join("links").join("lbc");
    let link_id = || {
        let show = bpftool(&["link", "show", "pinned", link.to_str().unwrap()]);
        show.split(':').next().unwrap().trim().to_string()
    };
    let first_link = link_id();
    let mark = lb.lbd.log_len();
    bpftool(&["link", "detach", "pinned", link.to_str().unwrap()]);
    let log = lb
        .lbd
        .wait_for_log_after(mark, "lbc is back (ifindex", Duration::from_secs(10))
        .unwrap();
    assert!(
        log.contains("lb_xdp is no longer attached to lbc (ifindex")
            && log.contains("XDP programs there: []"),
        "{log}"
    );
    assert_eq!(xdp_prog(&lb.lab, "lbc"), Some(program.clone()));
    // A new link, pinned in the old one's place.
    assert_ne!(link_id(), first_link);
    wait_readyz(&lb.lab, 200);
    assert_eq!(sample(&lb.lab, &event("lbc", "lost")), Some(1.0));
    assert_eq!(sample(&lb.lab, &event("lbc", "attached")), Some(1.0));
    assert_eq!(sample(&lb.lab, &event("lbb", "lost")), None);
    assert_eq!(sample(&lb.lab, &attached("lbc")), Some(1.0));
    all_connect(&lb.lab, 60);

    // An operator takes the node out with a forced detach: lbd says so and stays out.
    let mark = lb.lbd.log_len();
    let (code, log) = run_lbd(
        &lb.lab,
        &[],
        &["--detach", "--force", "--pin-dir", dir.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{log}");
    let log = lb
        .lbd
        .wait_for_log_after(
            mark,
            "lbd stays detached and not ready until it is restarted",
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(log.contains("which detached lb_xdp from lbc, lbb"), "{log}");
    wait_readyz(&lb.lab, 503);
    for nic in ["lbc", "lbb"] {
        assert_eq!(sample(&lb.lab, &attached(nic)), Some(0.0), "{nic}");
    }
    assert_eq!(sample(&lb.lab, &event("lbc", "lost")), Some(2.0));
    assert_eq!(sample(&lb.lab, &event("lbb", "lost")), Some(1.0));
    // Neither a SIGHUP nor the checks during a burst of connections bring it back.
    let mark = lb.lbd.log_len();
    lb.lbd.signal(libc::SIGHUP);
    lb.lbd
        .wait_for_log_after(mark, "SIGHUP: reloaded", Duration::from_secs(10))
        .unwrap();
    let r = lb.burst(4, Duration::from_secs(1), Duration::from_secs(20));
    assert_eq!((r.attempted, r.ok), (4, 0), "{:?}", r.per_backend);
    assert_eq!(get(&lb.lab, "/readyz").status, 503);
    assert_eq!(sample(&lb.lab, &event("lbc", "attached")), Some(1.0));
    assert_eq!(xdp_prog(&lb.lab, "lbc"), None);
    assert_eq!(xdp_prog(&lb.lab, "lbb"), None);
    assert!(!dir.exists());

    // A restart attaches again.
    lb.stop_lbd();
    lb.restart_lbd();
    wait_readyz(&lb.lab, 200);
    assert!(xdp_prog(&lb.lab, "lbc").is_some() && xdp_prog(&lb.lab, "lbb").is_some());
    all_connect(&lb.lab, 60);
}

#[test]
fn exit_status_is_2_for_bad_arguments_and_1_for_a_kernel_failure() {
    for args in [vec!["--no-such-flag"], vec!["--pin-dir", "/sys/fs/bpf/x"]] {
        let mut cmd = std::process::Command::new(lbd_path());
        cmd.args(&args);
        let out = lb_tests::output_within(cmd, Duration::from_secs(30)).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let mut cmd = std::process::Command::new(lbd_path());
    cmd.arg("--help");
    let help = lb_tests::output_within(cmd, Duration::from_secs(30)).unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for code in ["  0 ", "  1 ", "  2 ", "  75 ", "  78 "] {
        assert!(
            help.contains(code),
            "--help documents exit status {code}:\n{help}"
        );
    }

    // No capability at all: the config is fine, loading into the kernel fails.
    let lab = three_zones();
    let config = TempFile::new(&lab, "lbd.yaml", &lab_config(&lab, &[1, 1, 1]));
    let (code, log) = run_lbd(
        &lab,
        &["setpriv", "--bounding-set=-all", "--inh-caps=-all"],
        &["--config", config.path()],
    );
    let _ = PinDir::new(pin_dir(&lab)).remove_all();
    let _ = std::fs::remove_dir_all(lb_tests::lab_run_dir(&lab));
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("loading the XDP object into the kernel"),
        "{log}"
    );
    assert_eq!(xdp_prog(&lab, "lbc"), None);
}

#[test]
fn sighup_refuses_keys_set_up_once_at_start_and_keeps_running_as_before() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    let state_file = lb.state_file().display().to_string();
    let moved = config
        .replace(&state_file, "/var/lib/lbd-elsewhere/state.yaml")
        .replace("pin_dir: ", "metrics:\n  listen: 127.0.0.1:9999\npin_dir: ");
    let err = lb.reload(&moved).unwrap_err();
    assert!(
        err.contains("state_file: cannot change") && err.contains("metrics.listen: cannot change"),
        "{err}"
    );
    let dump = lb.lbctl().ok(&["config", "dump"]);
    assert!(
        dump.contains(&format!("state_file: {state_file}")),
        "{dump}"
    );
    assert!(dump.contains("listen: 127.0.0.1:9464"), "{dump}");
    assert_eq!(get(&lb.lab, "/readyz").status, 200);
    all_connect(&lb.lab, 30);
}
