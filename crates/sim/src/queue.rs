//! The discrete-event queue: virtual time jumps from one scheduled event to the next.
//!
//! Events are ordered by `(time, sequence number)`. The sequence number is the order in
//! which events were scheduled, so two events due at the same millisecond always run in
//! the same order for the same seed; a plain heap on time alone would break ties by heap
//! layout and make runs irreproducible.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use sluice_core::Instant;

/// One scheduled entry; ordering looks only at `(at, seq)`.
#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A min-queue of items keyed by virtual time, FIFO among equal times.
#[derive(Debug)]
pub struct EventQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    next_seq: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> EventQueue<T> {
    pub fn push(&mut self, at: Instant, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { at, seq, item }));
    }

    /// Time of the earliest entry.
    pub fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// Removes and returns the earliest entry.
    pub fn pop(&mut self) -> Option<(Instant, T)> {
        self.heap.pop().map(|Reverse(entry)| (entry.at, entry.item))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_by_insertion() {
        let mut queue = EventQueue::default();
        queue.push(Instant::from_millis(20), "late");
        queue.push(Instant::from_millis(10), "first-at-10");
        queue.push(Instant::from_millis(10), "second-at-10");
        queue.push(Instant::from_millis(5), "early");
        assert_eq!(queue.len(), 4);
        assert_eq!(queue.peek_time(), Some(Instant::from_millis(5)));
        let order: Vec<&str> = std::iter::from_fn(|| queue.pop().map(|(_, item)| item)).collect();
        assert_eq!(order, ["early", "first-at-10", "second-at-10", "late"]);
        assert!(queue.is_empty());
    }
}
