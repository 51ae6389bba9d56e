//! parse → classify → decide on arbitrary bytes, with the demo knowledge
//! (shipped rules, FAQ and templates). Any panic is a bug.
//!
//! ```sh
//! cargo install cargo-fuzz
//! RUSTC_BOOTSTRAP=1 cargo fuzz run decide -- -max_total_time=600
//! ```
//! Seed corpus: `mkdir -p corpus/decide && cp ../tests/golden/extra/*.eml corpus/decide/`.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchboard::config::Config;
use switchboard::knowledge::Knowledge;

fn knowledge() -> &'static Arc<Knowledge> {
    static K: OnceLock<Arc<Knowledge>> = OnceLock::new();
    K.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo/switchboard.toml");
        let cfg = match Config::load(std::path::Path::new(path)) {
            Ok((c, _)) => c,
            Err(d) => panic!("{d}"),
        };
        match Knowledge::load(&cfg) {
            Ok((k, _)) => k,
            Err(d) => panic!("{d}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = switchboard::pipeline::dry_run_sized(data, Some(data.len() as u64), knowledge());
});
