//! Stage 5 — **act**: the side effects of a decision — render and build
//! the reply ([`reply`]), hand it to the transport ([`outbox`]); flagging
//! and filing go through the mailbox backend ([`crate::fetch::MailSource`]).
//! The order of these steps and the state writes around them are in
//! [`crate::pipeline`].

pub mod outbox;
pub mod reply;
