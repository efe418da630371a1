//! nudge: a follow-up automation daemon. See ARCHITECTURE.md for the flow:
//! sources -> events -> triggers -> runs -> outbox -> delivery.

pub mod admission;
mod api;
mod app;
mod bounces;
pub mod cli;
pub mod clock;
mod commands;
mod config;
mod console;
mod daemon;
mod delivery;
pub mod engine;
mod import;
mod insight;
mod metrics;
pub mod model;
pub mod plugins;
mod report;
mod simulate;
pub mod store;
mod trace;
mod tracking;
pub mod unsubscribe;
mod watch;
pub mod workflow;

#[cfg(test)]
mod layers;
