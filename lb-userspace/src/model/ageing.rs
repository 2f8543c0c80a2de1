//! Which flow entries have been idle too long (pure): the data path stamps each client
//! packet's second on its flow, and `lbd`'s periodic walk of the flow table removes
//! entries idle longer than their state's timeout, both directions.
use lb_common::flow::{
    FlowTarget, FLOW_F_CLOSED, FLOW_F_DATAGRAM, FLOW_F_ESTABLISHED, FLOW_F_FIN_BACKEND,
    FLOW_F_FIN_CLIENT,
};

use crate::model::config::FlowTimeouts;

/// Whether `flow`, last seen at `last_seen`, has expired at `now` (seconds of the same
/// clock). A clock that went backwards (a stamp "from the future") never expires.
pub fn expired(flow: &FlowTarget, now: u32, timeouts: &FlowTimeouts) -> bool {
    let Some(idle) = now.checked_sub(flow.last_seen) else {
        return false;
    };
    let timeout = if flow.state & FLOW_F_DATAGRAM != 0 {
        timeouts.udp
    } else if flow.state & FLOW_F_CLOSED != 0 {
        timeouts.closed
    } else if flow.state & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND) != 0 {
        timeouts.closing
    } else if flow.state & FLOW_F_ESTABLISHED != 0 {
        timeouts.established
    } else {
        timeouts.syn
    };
    u64::from(idle) > timeout.as_secs()
}

#[cfg(test)]
mod tests {
    use lb_common::flow::FLOW_F_COUNTED;

    use super::*;

    fn flow(state: u64, last_seen: u32) -> FlowTarget {
        FlowTarget {
            backend: 1,
            service: 0,
            state: FLOW_F_COUNTED | state,
            last_seen,
            _pad: 0,
        }
    }

    #[test]
    fn each_state_expires_after_its_own_timeout() {
        let t = FlowTimeouts::default();
        // (state, idle seconds, expired?) with the defaults 30 / 350 / 60 / 10, UDP 30.
        let cases = [
            (0, 30, false),
            (0, 31, true),
            (FLOW_F_ESTABLISHED, 350, false),
            (FLOW_F_ESTABLISHED, 351, true),
            (FLOW_F_ESTABLISHED | FLOW_F_FIN_CLIENT, 60, false),
            (FLOW_F_ESTABLISHED | FLOW_F_FIN_BACKEND, 61, true),
            (FLOW_F_ESTABLISHED | FLOW_F_CLOSED, 10, false),
            (FLOW_F_CLOSED, 11, true),
            (FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM, 30, false),
            (FLOW_F_ESTABLISHED | FLOW_F_DATAGRAM, 31, true),
        ];
        for (state, idle, want) in cases {
            assert_eq!(
                expired(&flow(state, 1000), 1000 + idle, &t),
                want,
                "state {state:#x}, idle {idle} s"
            );
        }
    }

    /// A SYN-proxied connection is TCP: it ages as TCP does, not by the UDP timeout.
    #[test]
    fn a_syn_proxied_flow_ages_as_tcp() {
        let t = FlowTimeouts::default();
        let proxied = FLOW_F_ESTABLISHED | lb_common::syn_proxy::FLOW_F_SYN_PROXY;
        assert!(!expired(&flow(proxied, 1000), 1000 + 31, &t));
        assert!(!expired(&flow(proxied, 1000), 1000 + 350, &t));
        assert!(expired(&flow(proxied, 1000), 1000 + 351, &t));
    }

    #[test]
    fn a_stamp_ahead_of_the_clock_does_not_expire() {
        assert!(!expired(&flow(0, 2000), 1000, &FlowTimeouts::default()));
    }
}
