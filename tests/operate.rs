//! Operating nudge (issue 32): what an operator sees of a running daemon, through
//! the real binary, a real SMTP server and a real SQLite file, on the virtual clock.
//! One module per part, in tests/operate/.

mod common;

mod operate {
    pub(crate) mod metrics;
}
