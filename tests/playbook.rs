//! The shipped playbook as a sales team runs it (docs/domain.md): the real binary, a real
//! SMTP server, a real SQLite file and the shipped workflows, on the virtual clock.
//! One module per part of the playbook, in tests/playbook/.

mod common;

mod playbook {
    pub(crate) mod bounces;
    pub(crate) mod burst;
    pub(crate) mod consent;
    pub(crate) mod dkim;
    pub(crate) mod language;
    pub(crate) mod pacing;
    pub(crate) mod relay;
    pub(crate) mod team;
    pub(crate) mod timing;
    pub(crate) mod typed;
}
