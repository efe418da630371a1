//! Operating nudge (issue 32): what an admin asks of a running installation —
//! why a contact got (or did not get) a message, what an edit would do, how it
//! is doing, what its runs did — through the real binary, a real SMTP server
//! and a real SQLite file, on the virtual clock. One module per part, in
//! tests/operate/.

mod common;

mod operate {
    pub(crate) mod runs;
}
