//! Property tests of the config parser on hostile input: whatever the bytes, parsing
//! returns a config or an error naming a problem, and never panics; a config that is
//! accepted survives a round trip through YAML unchanged.
use proptest::prelude::*;

use super::*;

const VALID: &str = "node: { zone: az-a }\ninterfaces: [eth0, eth1]\nservices:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    policy: round_robin\n    backends:\n      - { address: 10.1.0.11, port: 8080, zone: az-a, weight: 3 }\n      - { address: 10.1.0.12, port: 8080, zone: az-b }\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Err(e) = parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn mutated_valid_files_are_accepted_or_rejected_with_a_message(
        at in 0usize..VALID.len(),
        cut in 0usize..20,
        insert in "[ -~\\n]{0,12}",
    ) {
        let at = (0..=at).rev().find(|i| VALID.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + cut).min(VALID.len());
        let text = format!("{}{}{}", &VALID[..at], insert, &VALID[end..]);
        match parse(&text) {
            Ok(config) => {
                let again = serde_yaml_ng::to_string(&config).unwrap();
                prop_assert_eq!(parse(&again).unwrap(), config);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
