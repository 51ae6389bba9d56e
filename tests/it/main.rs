//! Integration tests: one binary with a module per area (faster builds).

mod common;
mod daemon;
mod decide;
mod demo;
mod diagnostics;
mod follow;
mod golden;
mod leases;
mod lookups;
mod loop_guard;
mod mailserver;
mod monitoring;
mod no_panic;
mod ops;
mod pipeline;
mod postgres;
mod quality;
mod report;
mod safety;
mod team;
mod team_daemon;
