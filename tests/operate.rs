//! Operating nudge (issue 32): the real binary, a real SMTP server and a real
//! SQLite file, on the virtual clock. One module per part, in tests/operate/.

mod common;

mod operate {
    pub(crate) mod simulate;
}
