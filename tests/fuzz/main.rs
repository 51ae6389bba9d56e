//! Fuzzing parse → classify → decide, with a bound on memory.
//!
//! A separate test binary because it installs a counting global allocator
//! to measure the peak memory each message causes. Two checks:
//!
//! * **Big input** (regression: one 10 MB body took 2.1 GB and 10 s):
//!   a 50 MB text message, read whole, must stay under 200 MB of peak
//!   allocation; so must a 20 MB HTML-only message.
//! * **Mutation fuzzing** for a fixed budget (`SWITCHBOARD_FUZZ_SECONDS`,
//!   default 20 s): the golden and demo messages, mutated by a seeded
//!   generator (bit flips, byte runs, splices, repeated headers, broken
//!   MIME boundaries, huge lines). Every input must be decided without a
//!   panic and with peak memory under 64 MB + 64 × its size.
//!
//! The same function is the target of `fuzz/` (cargo-fuzz, libFuzzer) for
//! longer runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use switchboard::config::Config;
use switchboard::knowledge::Knowledge;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tests share the allocator's counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn knowledge() -> &'static Arc<Knowledge> {
    static K: OnceLock<Arc<Knowledge>> = OnceLock::new();
    K.get_or_init(|| {
        let cfg = match Config::load(&root().join("examples/demo/switchboard.toml")) {
            Ok((c, _)) => c,
            Err(d) => panic!("{d}"),
        };
        match Knowledge::load(&cfg) {
            Ok((k, _)) => k,
            Err(d) => panic!("{d}"),
        }
    })
}

/// Runs one input through parse → classify → decide; returns the peak
/// number of bytes allocated while doing so (above what was live before).
fn peak_of(raw: &[u8]) -> usize {
    let k = knowledge();
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let (_m, d) = switchboard::pipeline::dry_run_sized(raw, Some(raw.len() as u64), k);
    std::hint::black_box(&d);
    drop(d);
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

fn big_text(bytes: usize) -> Vec<u8> {
    let mut raw = b"From: Jane <jane@customer.example>\r\nTo: support@shop.example\r\nSubject: where is my order\r\nMessage-ID: <big@customer.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    let words = [
        "where", "is", "my", "order", "refund", "parcel", "tracking", "xqzv", "lorem", "ipsum",
    ];
    let mut i = 0usize;
    while raw.len() < bytes {
        raw.extend_from_slice(words[i % words.len()].as_bytes());
        raw.push(if i % 17 == 16 { b'\n' } else { b' ' });
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    raw
}

#[test]
fn one_huge_message_is_decided_in_bounded_memory() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = knowledge();
    let raw = big_text(50 << 20);
    let started = Instant::now();
    let peak = peak_of(&raw);
    eprintln!(
        "50 MB text: peak {} MB, {:?}",
        peak >> 20,
        started.elapsed()
    );
    assert!(
        peak < 200 << 20,
        "50 MB text message: peak {} MB",
        peak >> 20
    );

    let mut html = b"From: Jane <jane@customer.example>\r\nTo: support@shop.example\r\nSubject: hi\r\nContent-Type: text/html\r\n\r\n<html><body>".to_vec();
    while html.len() < 20 << 20 {
        html.extend_from_slice(b"<p>where is my <b>order</b> &amp; refund</p>\n");
    }
    let peak = peak_of(&html);
    eprintln!("20 MB HTML: peak {} MB", peak >> 20);
    assert!(
        peak < 200 << 20,
        "20 MB HTML message: peak {} MB",
        peak >> 20
    );
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut walk = vec![
        root().join("tests/golden"),
        root().join("examples/demo/Maildir"),
    ];
    while let Some(d) = walk.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk.push(p);
            } else if p
                .extension()
                .is_none_or(|x| !["md", "toml", "tsv", "json"].iter().any(|e| x == *e))
            {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .iter()
        .filter_map(|p: &PathBuf| std::fs::read(Path::new(p)).ok())
        .filter(|r| !r.is_empty())
        .collect()
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n\n",
    b"--",
    b"=?UTF-8?B?",
    b"=?iso-8859-1?Q?=E9=",
    b"?=",
    b"Content-Type: multipart/mixed; boundary=\"",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"charset=\"utf-7\"",
    b"<html><body><table>",
    b"&#x202E;&amp;&#0;",
    b"From: =?UTF-8?B?4oCu?= <@>\r\n",
    b"Reply-To: MAILER-DAEMON@x\r\n",
    b"Auto-Submitted: auto-replied\r\n",
    b"Authentication-Results: x; dmarc=fail\r\n",
    b"\xff\xfe\x00",
    b"\xe2\x80\xae",
    b"> ",
    b"-----Original Message-----",
];

fn mutate(rng: &mut Rng, seed: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = v.len().max(1);
        match rng.below(8) {
            0 => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(i..i, t.iter().copied());
            }
            2 => {
                let a = rng.below(v.len() + 1);
                let b = (a + rng.below(256)).min(v.len());
                v.drain(a..b);
            }
            3 => {
                let other = &corpus[rng.below(corpus.len())];
                let a = rng.below(other.len() + 1);
                let b = (a + rng.below(2048)).min(other.len());
                let i = rng.below(v.len() + 1);
                v.splice(i..i, other[a..b].iter().copied());
            }
            4 => {
                // A long run: huge lines, huge headers.
                let i = rng.below(v.len() + 1);
                let byte = [b'a', b' ', b'=', b'<', b'\t', 0xc3][rng.below(6)];
                let n = 1 << (8 + rng.below(12));
                v.splice(i..i, std::iter::repeat_n(byte, n));
            }
            5 => {
                // Repeat the header block.
                let end = v
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .unwrap_or(v.len() / 2);
                let head = v[..end].to_vec();
                for _ in 0..rng.below(20) {
                    v.splice(0..0, head.iter().copied());
                }
            }
            6 => v.truncate(rng.below(v.len() + 1)),
            _ => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    v
}

#[test]
fn mutated_mail_never_panics_and_stays_bounded() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = knowledge();
    let corpus = seeds();
    assert!(corpus.len() >= 30, "only {} seed messages", corpus.len());
    let budget = std::env::var("SWITCHBOARD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(20), Duration::from_secs);
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let started = Instant::now();
    let mut runs = 0usize;
    let mut worst = 0f64;
    while started.elapsed() < budget {
        let seed = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, seed, &corpus);
        let peak = peak_of(&input);
        let bound = (64 << 20) + 64 * input.len();
        assert!(
            peak <= bound,
            "input {runs} ({} bytes) peaked at {} bytes",
            input.len(),
            peak
        );
        worst = worst.max(peak as f64 / input.len().max(1) as f64);
        runs += 1;
    }
    eprintln!(
        "{runs} mutated messages in {:?}, worst peak/input ratio {worst:.1}",
        started.elapsed()
    );
    assert!(runs >= 200, "only {runs} inputs in the budget");
}
