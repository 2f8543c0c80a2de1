//! A [`Decision`] in the operator's terms: backend ids resolved to addresses, services,
//! zones, the operator's state and lbd's health verdict, and the service's mode.
use std::{
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    time::Instant,
};

use lb_common::{
    encap::PROTO_UDP,
    flow::{
        FlowKey, FLOW_F_CLOSED, FLOW_F_COUNTED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED,
        FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT,
    },
    ipv6::{addr6_wire, FlowKey6, FAMILY_IPV6},
    limits::syn_cache_sets,
    net::{FAMILY_IPV4, PROTO_TCP},
};
use serde::Serialize;

use super::{
    decide::{decide, By, Choice, Decision, Params, PolicyPick},
    view::*,
};
use crate::{
    control::health::machine::Health,
    control::runtime::Runtime,
    dataplane::Dataplane,
    model::config::{BackendState, Protocol},
    model::plan::BackendRef,
};

/// Why there is nothing to explain.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("vip: no service listens on {0} (the data path passes its packets to the kernel)")]
    NoService(SocketAddr),
    #[error("client {0} and vip {1} are of different address families")]
    MixedFamilies(SocketAddr, SocketAddr),
    #[error("the data path has not been programmed yet")]
    NotProgrammed,
    #[error("reading the data path's maps: {0:#}")]
    Read(anyhow::Error),
}

/// The tuple `client` -> `vip` as the data path keys it (wire order, TCP).
pub fn flow_key(client: SocketAddrV4, vip: SocketAddrV4) -> FlowKey {
    flow_key_of(client, vip, PROTO_TCP)
}

/// The tuple `client` -> `vip` of IP protocol `proto` as the data path keys it.
pub fn flow_key_of(client: SocketAddrV4, vip: SocketAddrV4, proto: u8) -> FlowKey {
    FlowKey {
        src_addr: u32::from_ne_bytes(client.ip().octets()),
        dst_addr: u32::from_ne_bytes(vip.ip().octets()),
        src_port: client.port().to_be(),
        dst_port: vip.port().to_be(),
        proto,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    }
}

/// The IPv6 tuple `client` -> `vip` of IP protocol `proto` as the data path keys it.
pub fn flow_key6_of(client: SocketAddrV6, vip: SocketAddrV6, proto: u8) -> FlowKey6 {
    FlowKey6 {
        src_addr: addr6_wire(client.ip().octets()),
        dst_addr: addr6_wire(vip.ip().octets()),
        src_port: client.port().to_be(),
        dst_port: vip.port().to_be(),
        proto,
        family: FAMILY_IPV6,
        _pad: [0; 2],
    }
}

/// What the data path does now with TCP packets of `client` -> `vip`, and why.
pub fn explain<D: Dataplane>(
    runtime: &Runtime<D>,
    client: impl Into<SocketAddr>,
    vip: impl Into<SocketAddr>,
    now: Instant,
) -> Result<ExplainView, ExplainError> {
    explain_protocol(runtime, client, vip, Protocol::Tcp, now)
}

/// [`explain`] for packets of `protocol`, of either family (both ends of one).
pub fn explain_protocol<D: Dataplane>(
    runtime: &Runtime<D>,
    client: impl Into<SocketAddr>,
    vip: impl Into<SocketAddr>,
    protocol: Protocol,
    now: Instant,
) -> Result<ExplainView, ExplainError> {
    let (client, vip) = (client.into(), vip.into());
    let proto = match protocol {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    };
    let config = runtime.config();
    let params = Params {
        hash_seed: config.cluster.hash_seed,
        ring_size: config.cluster.ring_size,
        syn_cache_mask: syn_cache_sets(config.limits.flow_table_size) - 1,
    };
    let controller = runtime.controller();
    let dp = controller.dataplane();
    let d = match (client, vip) {
        (SocketAddr::V4(c), SocketAddr::V4(v)) => {
            let flow = flow_key_of(c, v, proto);
            match protocol {
                Protocol::Tcp => decide(dp, &params, &flow),
                Protocol::Udp => super::decide_udp::decide(dp, &params, &flow),
            }
        }
        (SocketAddr::V6(c), SocketAddr::V6(v)) => {
            super::decide6::decide6(dp, &params, &flow_key6_of(c, v, proto), protocol)
        }
        _ => return Err(ExplainError::MixedFamilies(client, vip)),
    }
    .map_err(ExplainError::Read)?
    .ok_or(ExplainError::NoService(vip))?;
    let names = Names { runtime };
    let service = controller
        .plan()
        .ok_or(ExplainError::NotProgrammed)?
        .services
        .iter()
        .find(|s| s.id == d.service.id);
    let name = service.map_or_else(String::new, |s| s.name.clone());
    let service_config = config.services.iter().find(|s| s.name == name);
    let mode = runtime
        .fleet()
        .service_weights(&name, now)
        .map_or_else(|| "unknown".into(), |w| w.mode.to_string());
    let backend = |id: u32| names.backend(id).map_err(ExplainError::Read);
    let opt = |id: Option<u32>| id.map(backend).transpose().map(Option::flatten);
    let service = ServiceView {
        name,
        id: d.service.id,
        policy: service_config.map_or_else(String::new, |s| snake(&s.policy)),
        mode,
        on_all_unhealthy: service_config.map_or_else(String::new, |s| snake(&s.on_all_unhealthy)),
        stateless_syn: d.service.flags & lb_common::service::SERVICE_F_STATELESS_SYN != 0,
    };
    let flow_entry = match &d.entry {
        Some(e) => Some(EntryView {
            backend: backend(e.target.backend)?,
            backend_id: e.target.backend,
            flags: flag_names(e.target.state),
            last_seen: e.target.last_seen,
            idle_secs: e.idle_secs,
        }),
        None => None,
    };
    let slot_view = |slot: &Option<super::decide::Slot>| -> Result<_, ExplainError> {
        Ok(match slot {
            Some(s) => Some(SlotView {
                set: s.set,
                way: s.way,
                backend_id: s.backend_id,
                backend: backend(s.backend_id)?,
            }),
            None => None,
        })
    };
    let syn_cache = slot_view(&d.slot)?;
    let forwarded_slot = slot_view(&d.forwarded)?;
    let table = table_view(&d, &backend, &opt)?;
    Ok(ExplainView {
        client: client.to_string(),
        vip: vip.to_string(),
        protocol,
        service,
        new_connection: choice_view(&d.new_connection, &opt)?,
        existing_connection: choice_view(&d.existing_connection, &opt)?,
        flow_entry,
        syn_cache,
        forwarded_slot,
        table,
    })
}

type Resolve<'a> = dyn Fn(Option<u32>) -> Result<Option<BackendView>, ExplainError> + 'a;

fn table_view(
    d: &Decision,
    backend: &dyn Fn(u32) -> Result<Option<BackendView>, ExplainError>,
    opt: &Resolve,
) -> Result<TableView, ExplainError> {
    let mut round_robin_next = Vec::new();
    let mut least_conn_candidates = Vec::new();
    match &d.policy_pick {
        PolicyPick::Ring => {}
        PolicyPick::RoundRobin { next_by_cpu } => {
            for (cpu, id) in next_by_cpu {
                round_robin_next.push(CpuNextView {
                    cpu: *cpu,
                    backend: opt(*id)?,
                });
            }
        }
        PolicyPick::LeastConn { candidates } => {
            for c in candidates {
                if let Some(b) = backend(c.backend_id)? {
                    least_conn_candidates.push(CandidateView {
                        backend: b,
                        active_flows: c.active_flows,
                    });
                }
            }
        }
    }
    Ok(TableView {
        ring_index: d.ring.index,
        ring_hash: d.ring.hash,
        ring_by_source: d.ring.by_source,
        ring_backend: opt(d.ring.backend_id)?,
        round_robin_next,
        least_conn_candidates,
    })
}

fn choice_view(c: &Choice, opt: &Resolve) -> Result<ChoiceView, ExplainError> {
    Ok(ChoiceView {
        backend: opt(c.backend_id)?,
        by: match c.by {
            By::FlowEntry => "flow_entry",
            By::SynCache => "syn_cache",
            By::Table => "table",
            By::Policy => "policy",
            By::Dropped => "dropped",
        }
        .into(),
        why: c.why.clone(),
    })
}

fn flag_names(state: u64) -> Vec<String> {
    [
        (FLOW_F_COUNTED, "counted"),
        (FLOW_F_ESTABLISHED, "established"),
        (FLOW_F_FIN_CLIENT, "fin_client"),
        (FLOW_F_FIN_BACKEND, "fin_backend"),
        (FLOW_F_CLOSED, "closed"),
        (FLOW_F_DATAGRAM, "datagram"),
    ]
    .into_iter()
    .filter(|(bit, _)| state & bit != 0)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// An enum's name as the config file spells it.
fn snake<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

struct Names<'a, D> {
    runtime: &'a Runtime<D>,
}

impl<D: Dataplane> Names<'_, D> {
    /// Backend slot `id` as the kernel holds it, named from lbd's plan and config.
    fn backend(&self, id: u32) -> anyhow::Result<Option<BackendView>> {
        let controller = self.runtime.controller();
        let Some(b) = controller.dataplane().backend(id)? else {
            return Ok(None);
        };
        let port = u16::from_be(b.port);
        let address = if b.family == FAMILY_IPV6 {
            let words = controller
                .dataplane()
                .backend_addr6(id)?
                .unwrap_or_default();
            let octets: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let octets: [u8; 16] = octets.try_into().expect("four words are 16 bytes");
            SocketAddr::from((octets, port))
        } else {
            SocketAddr::from((b.addr.to_ne_bytes(), port))
        };
        let planned = controller
            .plan()
            .and_then(|p| p.backends.iter().find(|pb| pb.id == id));
        let (at, zone) = match planned {
            Some(pb) => (Some(pb.at.clone()), pb.zone.clone()),
            None => (None, String::new()),
        };
        Ok(Some(BackendView {
            id,
            address: address.to_string(),
            service: at
                .as_ref()
                .map_or_else(String::new, |at| at.service.clone()),
            state: at
                .as_ref()
                .map_or_else(|| "unknown".into(), |at| self.state(at, &zone)),
            health: at
                .as_ref()
                .and_then(|at| self.runtime.fleet().health(at))
                .unwrap_or(Health::Unknown)
                .to_string(),
            zone,
            takes_new_flows: b.weight_milli > 0,
            weight_milli: b.weight_milli,
        }))
    }

    fn state(&self, at: &BackendRef, zone: &str) -> String {
        let Some(s) = self
            .runtime
            .config()
            .services
            .iter()
            .find(|s| s.name == at.service)
        else {
            return "removed".into();
        };
        let Some(b) = s
            .backends
            .iter()
            .find(|b| b.address == at.address && b.port == at.port)
        else {
            return "removed".into();
        };
        if b.state == BackendState::Draining {
            "draining".into()
        } else if s.drained_zones.iter().any(|z| z == zone) {
            "zone drained".into()
        } else {
            "active".into()
        }
    }
}
