//! Integration tests: one binary with a module per area (faster builds).

mod common;
mod demo;
mod diagnostics;
mod loop_guard;
mod no_panic;
mod pipeline;
