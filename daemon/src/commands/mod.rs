//! The CLI's commands, one file per command or command group (`nudge contact
//! add|import|show` is `contact.rs`); `cli.rs` parses the arguments and calls
//! them. The CLI writes straight to the database (the daemon notices within a
//! second) through the same `app` use cases as the API. Having no running
//! workflow set, it reads the classification rules from the workflow files.

pub mod check;
pub mod classify;
pub mod clock;
pub mod contact;
pub mod follow_up;
pub mod inquiry;
pub mod order;
pub mod outbox;
pub mod plugin;
pub mod report;
pub mod segment;
pub mod stage;
pub mod status;
pub mod suppress;
