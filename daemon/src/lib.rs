//! nudge: a follow-up automation daemon. See ARCHITECTURE.md for the flow:
//! sources -> events -> triggers -> runs -> outbox -> delivery.

pub mod admission;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod engine;
pub mod import;
pub mod insight;
pub mod model;
pub mod plugins;
pub mod report;
pub mod store;
pub mod tracking;
pub mod unsubscribe;
pub mod watch;
pub mod workflow;

#[cfg(test)]
mod layers;
