//! The lab's UDP check: clients in the client namespace, each from a socket of its own,
//! send datagrams to the UDP VIP of one family; every datagram must be answered from the
//! VIP, and every client by one backend.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    udp_echo::{exchange, open_clients_on},
    vip, Family, RunningLb,
};

use super::UDP_PORT;

const CLIENTS: usize = 20;
const DATAGRAMS: usize = 5;

/// Runs the check for `family`, prints what came back, and returns the number of
/// datagrams that failed: unanswered, answered from elsewhere than the VIP, or by
/// another backend than the client's first.
pub fn run(lb: &RunningLb, family: Family) -> usize {
    let to = SocketAddr::new(vip(family), UDP_PORT);
    println!(
        "\nlab: {CLIENTS} {family} UDP clients x {DATAGRAMS} datagrams from {} to {to} ...",
        lb.lab.client_ip(family)
    );
    let started = Instant::now();
    let clients = open_clients_on(lb.lab.client_ns(), CLIENTS, family.any());
    let records = exchange(
        &clients,
        to,
        DATAGRAMS,
        Duration::from_millis(500),
        Duration::from_secs(60),
    );
    let elapsed = started.elapsed();
    let mut failed = 0;
    let mut clients_per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut answered = 0;
    for record in &records {
        failed += record.unanswered;
        let first = record.answers.first().map(|a| a.backend.clone());
        for answer in &record.answers {
            if answer.from != to || Some(&answer.backend) != first.as_ref() {
                println!(
                    "  failed: client {} heard {} from {}",
                    record.local, answer.backend, answer.from
                );
                failed += 1;
            } else {
                answered += 1;
            }
        }
        if let Some(backend) = first {
            *clients_per_backend.entry(backend).or_default() += 1;
        }
    }
    let backends: BTreeSet<&String> = clients_per_backend.keys().collect();
    println!(
        "{answered} of {} datagrams answered from {to}, each client by one backend, {failed} \
         failed, in {:.2}s; clients per backend: {clients_per_backend:?} ({} backends)",
        CLIENTS * DATAGRAMS,
        elapsed.as_secs_f64(),
        backends.len()
    );
    CLIENTS * DATAGRAMS - answered
}
