//! The CLI's commands, one file per command or command group (`nudge contact
//! add|import|show` is `contact.rs`); `cli.rs` parses the arguments and calls
//! them. The CLI writes straight to the database (the daemon notices within a
//! second) through the same `app` use cases as the API. Having no running
//! workflow set, it reads the classification rules from the workflow files.

pub(crate) mod check;
pub(crate) mod classify;
pub(crate) mod clock;
pub(crate) mod contact;
pub(crate) mod explain;
pub(crate) mod follow_up;
pub(crate) mod inquiry;
pub(crate) mod migrate;
pub(crate) mod order;
pub(crate) mod outbox;
pub(crate) mod plugin;
pub(crate) mod prune;
pub(crate) mod report;
pub(crate) mod runs;
pub(crate) mod segment;
pub(crate) mod simulate;
pub(crate) mod stage;
pub(crate) mod status;
pub(crate) mod suppress;
