//! Operating nudge (issue 32): asking why a contact did or did not get a
//! message, simulating an edit, metrics, run history. The real binary, a real
//! SMTP server and a real SQLite file, on the virtual clock. One module per
//! part, in tests/operate/.

mod common;

mod operate {
    pub(crate) mod explain;
    pub(crate) mod metrics;
    pub(crate) mod runs;
    pub(crate) mod simulate;
}
