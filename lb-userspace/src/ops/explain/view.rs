//! `GET /v1/explain`'s answer, and how `lbctl explain` prints it for people.
use serde::{Deserialize, Serialize};

use crate::model::config::Protocol;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainView {
    pub client: String,
    pub vip: String,
    /// `tcp` or `udp`; absent from an older `lbd`'s answer, which explained TCP only.
    #[serde(default)]
    pub protocol: Protocol,
    pub service: ServiceView,
    /// Where a SYN of the tuple would go now (UDP: its next datagram).
    pub new_connection: ChoiceView,
    /// Where a later packet of a connection on the tuple would go now (UDP: its next
    /// datagram).
    pub existing_connection: ChoiceView,
    /// The tuple's flow entry, if it has one.
    pub flow_entry: Option<EntryView>,
    /// The SYN-cache slot of the tuple's handshake, if one holds it (a handshake in
    /// flight, or a SYN never answered).
    pub syn_cache: Option<SlotView>,
    /// The slot a client packet of the tuple forwarded without a flow entry left: the
    /// backend whose reply (neither SYN nor RST) would record the flow.
    pub forwarded_slot: Option<SlotView>,
    pub table: TableView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub id: u32,
    pub policy: String,
    /// The rule that decided the service's weights (cross-zone, fail open, ...).
    pub mode: String,
    pub on_all_unhealthy: String,
    /// A SYN records no flow, only a SYN-cache slot (hash-placed policies).
    pub stateless_syn: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub id: u32,
    /// `addr:port`, as the kernel's slot holds it.
    pub address: String,
    /// The service the slot belongs to, by name (empty if lbd no longer knows it).
    pub service: String,
    pub zone: String,
    /// The operator's wish: `active`, `draining`, `zone drained`, or `removed`.
    pub state: String,
    pub health: String,
    /// Whether the data path gives it new flows (effective weight above 0).
    pub takes_new_flows: bool,
    pub weight_milli: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceView {
    /// `None`: the packet is dropped, or the pick depends on the receiving CPU or on
    /// chance (see `table`).
    pub backend: Option<BackendView>,
    /// What decided: `flow_entry`, `syn_cache`, `table`, `policy`, `dropped`.
    pub by: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryView {
    /// `None` when its backend slot was freed.
    pub backend: Option<BackendView>,
    pub backend_id: u32,
    /// `FLOW_F_*` names: counted, established, fin_client, fin_backend, closed.
    pub flags: Vec<String>,
    pub last_seen: u32,
    pub idle_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotView {
    pub set: u32,
    pub way: usize,
    pub backend_id: u32,
    pub backend: Option<BackendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableView {
    /// Index into the service's live ring slot, and the hash it came from.
    pub ring_index: u32,
    pub ring_hash: u32,
    /// Hashed on the client address alone (source hash), else on the whole tuple.
    pub ring_by_source: bool,
    /// The ring entry's backend (`None`: no backend, dropped).
    pub ring_backend: Option<BackendView>,
    /// Round robin: the next backend of each CPU's cursor.
    pub round_robin_next: Vec<CpuNextView>,
    /// Least connections: the candidates and their load.
    pub least_conn_candidates: Vec<CandidateView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuNextView {
    pub cpu: u32,
    pub backend: Option<BackendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateView {
    pub backend: BackendView,
    pub active_flows: u64,
}

fn backend_line(b: &BackendView) -> String {
    format!(
        "{} (id {}, {}, {}, {}{})",
        b.address,
        b.id,
        if b.zone.is_empty() { "-" } else { &b.zone },
        b.state,
        if b.health == "unknown" {
            "health unknown"
        } else {
            &b.health
        },
        if b.takes_new_flows {
            ""
        } else {
            ", takes no new flows"
        }
    )
}

fn choice_line(c: &ChoiceView) -> String {
    let to = match &c.backend {
        Some(b) => backend_line(b),
        None if c.by == "dropped" => "dropped".to_string(),
        None => "decided per packet (see table)".to_string(),
    };
    format!("{to}\n    by {}: {}", c.by, c.why)
}

/// A backend a kernel entry names by id: its line, or the id when the slot was freed
/// since.
fn recorded_backend(backend: Option<&BackendView>, id: u32) -> String {
    backend
        .map(backend_line)
        .unwrap_or_else(|| format!("id {id} (slot freed)"))
}

/// A backend a table slot points at, or `no backend`.
fn slot_backend(backend: Option<&BackendView>) -> String {
    backend
        .map(backend_line)
        .unwrap_or_else(|| "no backend".into())
}

/// The human form of `lbctl explain`.
pub fn render(v: &ExplainView) -> String {
    let s = &v.service;
    let mut out = format!(
        "{} -> {}: service {} (id {}), policy {}, mode {}, on all unhealthy: {}\n",
        v.client, v.vip, s.name, s.id, s.policy, s.mode, s.on_all_unhealthy
    );
    if v.protocol == Protocol::Udp {
        // No handshake: a new and an existing flow's datagram go the same way.
        out += &format!("next datagram:       {}\n", choice_line(&v.new_connection));
    } else {
        out += &format!("new connection:      {}\n", choice_line(&v.new_connection));
        out += &format!(
            "existing connection: {}\n",
            choice_line(&v.existing_connection)
        );
    }
    out += &render_recorded(v);
    out += &render_table(&v.table);
    out
}

/// What the data path has recorded for this connection: its flow entry, the SYN-cache
/// slot of its handshake, a stateless forward awaiting its reply.
fn render_recorded(v: &ExplainView) -> String {
    let mut out = match &v.flow_entry {
        Some(e) => format!(
            "flow entry:  backend {}, flags [{}], last seen {} ({}s ago)\n",
            recorded_backend(e.backend.as_ref(), e.backend_id),
            e.flags.join(" "),
            e.last_seen,
            e.idle_secs
        ),
        None => "flow entry:  none\n".to_string(),
    };
    out += &match &v.syn_cache {
        Some(slot) => format!(
            "SYN cache:   set {} way {}: backend {}\n",
            slot.set,
            slot.way,
            recorded_backend(slot.backend.as_ref(), slot.backend_id)
        ),
        None => "SYN cache:   no slot holds this handshake\n".to_string(),
    };
    if let Some(slot) = &v.forwarded_slot {
        out += &format!(
            "forwarded:   set {} way {}: a packet without an entry went to {}; its reply records the flow\n",
            slot.set,
            slot.way,
            recorded_backend(slot.backend.as_ref(), slot.backend_id)
        )
    }
    out
}

/// Where the service's tables would send the connection: its ring slot, each CPU's
/// next round-robin pick, the least-connection candidates.
fn render_table(t: &TableView) -> String {
    let mut out = format!(
        "ring:        slot {} ({} hash {:#010x}): {}\n",
        t.ring_index,
        if t.ring_by_source {
            "client-address"
        } else {
            "tuple"
        },
        t.ring_hash,
        slot_backend(t.ring_backend.as_ref())
    );
    for n in &t.round_robin_next {
        out += &format!(
            "round robin: next on CPU {}: {}\n",
            n.cpu,
            slot_backend(n.backend.as_ref())
        );
    }
    for c in &t.least_conn_candidates {
        out += &format!(
            "candidate:   {} with {} active flows\n",
            backend_line(&c.backend),
            c.active_flows
        );
    }
    out
}
