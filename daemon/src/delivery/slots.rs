//! The slots plugin channels hold, so that one slow plugin or provider never
//! stops email or another channel: a plugin channel may hold at most half of
//! delivery's slots, and rows beyond that are parked, taken (so no claim
//! returns them), until one of its sends finishes.

use std::collections::{HashMap, VecDeque};

use crate::store::OutboxRow;

/// The slots plugin channels hold. Email is sent by the daemon itself, within
/// its SMTP timeouts, and is never held back here.
pub(super) struct ChannelSlots {
    per_channel: usize,
    /// Sends in flight plus rows parked, per plugin channel.
    held: HashMap<String, usize>,
    parked: VecDeque<OutboxRow>,
}

impl ChannelSlots {
    pub(super) fn new(per_channel: usize) -> ChannelSlots {
        ChannelSlots {
            per_channel,
            held: HashMap::new(),
            parked: VecDeque::new(),
        }
    }

    fn in_flight(&self, channel: &str) -> usize {
        let parked = self.parked.iter().filter(|r| r.channel == channel).count();
        self.held.get(channel).copied().unwrap_or(0) - parked
    }

    /// A taken row: back to be sent now, or None when its channel holds all its
    /// slots (it is parked until one frees).
    pub(super) fn take(&mut self, row: OutboxRow) -> Option<OutboxRow> {
        if row.channel == "email" {
            return Some(row);
        }
        let in_flight = self.in_flight(&row.channel);
        *self.held.entry(row.channel.clone()).or_default() += 1;
        if in_flight < self.per_channel {
            return Some(row);
        }
        self.parked.push_back(row);
        None
    }

    /// A send of `row` finished.
    pub(super) fn release(&mut self, row: &OutboxRow) {
        if let Some(held) = self.held.get_mut(&row.channel) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(&row.channel);
            }
        }
    }

    /// The first parked row whose channel has a free slot again.
    pub(super) fn unpark(&mut self) -> Option<OutboxRow> {
        let at = self
            .parked
            .iter()
            .position(|r| self.in_flight(&r.channel) < self.per_channel)?;
        self.parked.remove(at)
    }

    /// Channels that hold all their slots: claims leave their rows for later.
    pub(super) fn full(&self) -> Vec<String> {
        self.held
            .iter()
            .filter(|(_, held)| **held >= self.per_channel)
            .map(|(channel, _)| channel.clone())
            .collect()
    }
}
