//! The open connections of one listener, and which one makes room at the cap (pure).
use std::{collections::HashMap, time::Instant};

/// Which connection makes room first: one with no byte of a request yet, before one
/// whose request has started to arrive (a flood of empty connections must not push out
/// a client's request that is still being read); within each, the longest waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EvictionRank {
    /// Some bytes of a request have arrived.
    pub request_started: bool,
    pub since: Instant,
}

/// What the table needs to know of a connection.
pub trait Waiting {
    /// How readily the connection makes room (`None`: a request is being answered, so
    /// it is never closed to make room).
    fn eviction_rank(&self) -> Option<EvictionRank>;
}

/// A connection let in.
#[derive(Debug)]
pub struct Admitted<T> {
    pub id: u64,
    /// At the cap: the connection that ranks first for eviction ([`EvictionRank`]), to
    /// be closed; the new one took its place.
    pub evicted: Option<T>,
}

pub struct Table<T> {
    cap: usize,
    open: HashMap<u64, T>,
    next_id: u64,
}

impl<T: Waiting + Clone> Table<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            open: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Admits `conn`, evicting if it must; `None` when at the cap every connection is
    /// answering a request (refuse the new one). Never holds more than the cap.
    pub fn admit(&mut self, conn: T) -> Option<Admitted<T>> {
        let mut evicted = None;
        if self.open.len() >= self.cap {
            let (_, oldest) = self
                .open
                .iter()
                .filter_map(|(id, c)| c.eviction_rank().map(|rank| (rank, *id)))
                .min()?;
            evicted = self.open.remove(&oldest);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, conn);
        Some(Admitted { id, evicted })
    }

    /// Forgets a closed connection; false if it was no longer there (evicted).
    pub fn remove(&mut self, id: u64) -> bool {
        self.open.remove(&id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Fake(Option<Instant>);
    impl Waiting for Fake {
        fn eviction_rank(&self) -> Option<EvictionRank> {
            self.0.map(|since| EvictionRank {
                request_started: false,
                since,
            })
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Ranked(Option<EvictionRank>);
    impl Waiting for Ranked {
        fn eviction_rank(&self) -> Option<EvictionRank> {
            self.0
        }
    }

    #[test]
    fn empty_connections_make_room_before_a_request_that_started_to_arrive() {
        let t0 = Instant::now();
        let rank = |started, ms| {
            Ranked(Some(EvictionRank {
                request_started: started,
                since: t0 + Duration::from_millis(ms),
            }))
        };
        let mut table = Table::new(2);
        table.admit(rank(true, 0)).expect("room");
        table.admit(rank(false, 10)).expect("room");
        // A flood of empty connections: each pushes out the previous empty one, never
        // the older connection whose request is on its way.
        for ms in 20..30 {
            let evicted = table.admit(rank(false, ms)).expect("room").evicted;
            assert_eq!(
                evicted,
                Some(rank(false, ms - if ms == 20 { 10 } else { 1 }))
            );
        }
        // Only requests in flight left: the oldest of them goes.
        let mut table = Table::new(2);
        table.admit(rank(true, 5)).expect("room");
        table.admit(rank(true, 3)).expect("room");
        assert_eq!(
            table.admit(rank(false, 9)).expect("room").evicted,
            Some(rank(true, 3))
        );
    }

    #[test]
    fn at_the_cap_the_longest_waiting_makes_room_and_busy_ones_never_do() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let mut table = Table::new(3);
        let admit = |table: &mut Table<Fake>, c| {
            let a = table.admit(c).expect("room");
            (a.id, a.evicted)
        };
        assert_eq!(admit(&mut table, Fake(at(20))), (0, None));
        assert_eq!(admit(&mut table, Fake(None)), (1, None));
        assert_eq!(admit(&mut table, Fake(at(10))), (2, None));
        assert_eq!(admit(&mut table, Fake(at(30))), (3, Some(Fake(at(10)))));
        assert_eq!(admit(&mut table, Fake(at(40))), (4, Some(Fake(at(20)))));
        assert_eq!(table.len(), 3);
        assert!(table.remove(3));
        assert!(table.remove(4));
        assert!(!table.remove(2), "evicted before");
        assert_eq!(table.len(), 1);
        assert_eq!(admit(&mut table, Fake(None)), (5, None));
        assert_eq!(admit(&mut table, Fake(None)), (6, None));
        assert!(table.admit(Fake(at(1))).is_none(), "all busy: refused");
        assert_eq!(table.len(), 3);
    }
}
