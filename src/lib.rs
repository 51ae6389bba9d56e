//! switchboard: e-mail triage and auto-response for shared support inboxes.
//!
//! The library is a pipeline whose stages are its modules:
//!
//! ```text
//! fetch → parse → classify → decide → act → record
//! ```
//!
//! * [`fetch`] — mailbox backends (IMAP, Maildir) behind one trait;
//! * [`parse`] — raw bytes to a cleaned, owned [`parse::Message`];
//! * [`classify`] — pure: rules, FAQ matcher, loop guard → evidence;
//! * [`decide`] — pure: policy → a [`decide::Decision`] with reasons;
//! * [`act`] — replies and the outbound transport;
//! * [`record`] — the state store and audit log.
//!
//! [`pipeline`] runs the stages for a batch of messages with the
//! crash-safety protocol; [`daemon`] runs the pipeline for every mailbox.
//! What admins edit is read by [`config`] (switchboard.toml) and
//! [`knowledge`] (rules, queues, FAQ, templates), which report every
//! problem as `path:line:col: message` ([`diag`]).

pub mod act;
pub mod classify;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod diag;
pub mod eval;
pub mod fetch;
pub mod knowledge;
pub mod lookup;
pub mod parse;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod secret;
pub mod tomlread;
pub mod util;
