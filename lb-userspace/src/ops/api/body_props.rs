//! Property tests of request bodies on hostile input: whatever the bytes, a body parses
//! or is refused with a 400 naming the problem, never a panic; a service body that
//! parses is either added to the desired state as a whole valid config or refused with
//! a message.
use axum::http::StatusCode;
use proptest::prelude::*;

use super::body::parse;
use crate::{
    model::config::{self, BackendConfig, ServiceConfig},
    model::desired::edit::{self, Edit, WeightBody},
};

const SERVICE: &str = r#"{"name":"api","vip":"10.0.0.101","port":443,"policy":"least_conn","backends":[{"address":"10.1.0.21","port":8443,"zone":"az-a","weight":3}]}"#;
const BASE: &str = "node: { zone: az-a }\ninterfaces: [eth0]\nservices:\n  - { name: web, vip: 10.0.0.100, port: 80, backends: [{ address: 10.1.0.11, port: 8080, zone: az-a }] }\n";

fn refused_well<T>(result: Result<T, super::error::ApiError>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            prop_assert!(!e.message.is_empty());
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn arbitrary_bytes_are_parsed_or_refused_with_a_400(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        refused_well(parse::<ServiceConfig>(&bytes))?;
        refused_well(parse::<BackendConfig>(&bytes))?;
        refused_well(parse::<WeightBody>(&bytes))?;
    }

    #[test]
    fn mutated_service_bodies_are_added_whole_or_refused(
        at in 0usize..SERVICE.len(),
        cut in 0usize..12,
        insert in "[ -~]{0,10}",
    ) {
        let end = (at + cut).min(SERVICE.len());
        let body = format!("{}{}{}", &SERVICE[..at], insert, &SERVICE[end..]);
        if let Some(service) = refused_well(parse::<ServiceConfig>(body.as_bytes()))? {
            let base = config::parse(BASE).unwrap();
            match edit::apply(&base, &Edit::AddService(service)) {
                Ok(next) => prop_assert!(config::validate(&next).is_ok()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
