//! `deploy/cloud-init/`: the gateway's and the backend's user data validate with Debian's
//! `cloud-init schema`, every `@VARIABLE@` they use is documented in their header (and
//! none documented is unused), the backend's user data carries `lb-backend.sh` and
//! `lb-backend.service` exactly as they are in the repository (the lab test runs those
//! files), and the gateway's lbd config is one lbd accepts once its variables are filled.
use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_yaml_ng::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloud-init")
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `content` of the `write_files` entry for `path`.
fn written(user_data: &str, path: &str) -> String {
    let doc: Value = serde_yaml_ng::from_str(user_data).expect("user data is YAML");
    doc["write_files"]
        .as_sequence()
        .expect("write_files")
        .iter()
        .find(|f| f["path"].as_str() == Some(path))
        .unwrap_or_else(|| panic!("no write_files entry for {path}"))["content"]
        .as_str()
        .expect("content is text")
        .to_string()
}

/// `@NAME@` placeholders in `text`.
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        if !name.is_empty() && after[name.len()..].starts_with('@') {
            out.insert(name.clone());
            rest = &after[name.len() + 1..];
        } else {
            rest = after;
        }
    }
    out
}

#[test]
fn the_user_data_validates_with_cloud_init_schema() {
    for name in ["gateway.yaml", "backend.yaml"] {
        let path = dir().join(name);
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("running cloud-init (Debian package cloud-init, installed by cargo xtask setup): {e}")
            });
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Valid cloud-config"),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_variable_used_is_documented_in_the_header_and_every_documented_one_used() {
    for name in ["gateway.yaml", "backend.yaml"] {
        let text = read(name);
        let (header, body): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with('#'));
        // A header line documenting a variable starts with it: `#   @NAME@  what`.
        let documented: BTreeSet<String> = header
            .iter()
            .filter_map(|l| l.trim_start_matches('#').trim_start().strip_prefix('@'))
            .filter_map(|l| Some(l.split_once('@')?.0.to_string()))
            .collect();
        assert_eq!(placeholders(&body.join("\n")), documented, "{name}");
    }
}

#[test]
fn the_backend_user_data_carries_the_script_and_unit_as_they_are() {
    let user_data = read("backend.yaml");
    assert_eq!(
        written(&user_data, "/usr/local/sbin/lb-backend"),
        read("lb-backend.sh")
    );
    assert_eq!(
        written(&user_data, "/etc/systemd/system/lb-backend.service"),
        read("lb-backend.service")
    );
}

#[test]
fn the_gateway_config_is_one_lbd_accepts() {
    let config = written(&read("gateway.yaml"), "/etc/lbd/lb.yaml");
    let values = [
        ("LB_ZONE", "az-a"),
        ("LB_INTERFACES", "ens5, ens6"),
        ("LB_API_LISTEN", "10.1.0.1:9500"),
        ("LB_SERVICE", "web"),
        ("LB_VIP", "10.0.0.100"),
        ("LB_PORT", "80"),
        ("LB_HEALTH_PORT", "8080"),
        ("LB_DEREGISTRATION_DELAY", "300s"),
    ];
    let mut filled = config.clone();
    for (name, value) in values {
        filled = filled.replace(&format!("@{name}@"), value);
    }
    assert_eq!(placeholders(&filled), BTreeSet::new(), "{filled}");
    let parsed =
        lb_userspace::model::config::parse(&filled).unwrap_or_else(|e| panic!("{e}\n{filled}"));
    assert_eq!(parsed.services[0].name, "web");
    assert_eq!(parsed.interfaces, ["ens5", "ens6"]);
}
