//! Classify + decide throughput with a large knowledge set: 1,000 FAQ
//! entries and 200 rules (the sizing), plus the bundled demo set.
//!
//! Run: `cargo bench --bench classify`

use std::path::Path;
use std::sync::Arc;

use switchboard::config::Config;
use switchboard::knowledge::Knowledge;
use switchboard::pipeline::dry_run;

fn main() {
    divan::main();
}

const WORDS: &[&str] = &[
    "order",
    "parcel",
    "delivery",
    "refund",
    "invoice",
    "account",
    "password",
    "address",
    "card",
    "payment",
    "voucher",
    "return",
    "exchange",
    "warranty",
    "repair",
    "size",
    "colour",
    "stock",
    "price",
    "discount",
    "shipping",
    "courier",
    "tracking",
    "damaged",
    "missing",
    "late",
    "cancel",
    "subscription",
    "newsletter",
    "login",
    "email",
    "phone",
    "store",
    "opening",
    "hours",
    "gift",
    "wrap",
    "assembly",
    "instructions",
    "battery",
    "charger",
    "cable",
    "screen",
    "lamp",
    "sofa",
    "chair",
    "table",
    "kettle",
    "toaster",
    "blender",
    "mug",
    "plate",
    "towel",
    "pillow",
    "duvet",
];

fn word(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

/// Writes a config with `entries` FAQ entries and `rules` rules.
fn write_set(dir: &Path, entries: usize, rules: usize) {
    let w = |p: &str, t: String| {
        let path = dir.join(p);
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::write(path, t);
    };
    w(
        "switchboard.toml",
        "domain = \"shop.example\"\nour_addresses = [\"support@shop.example\"]\n[company]\nname = \"Shop\"\n[reply]\nfrom = \"Shop <support@shop.example>\"\n".into(),
    );
    let mut faq = String::new();
    for e in 0..entries {
        faq.push_str(&format!(
            "[[entry]]\nid = \"e{e}\"\ntitle = \"{} {}\"\ntemplate = \"faq/answer\"\nkeywords = [\"{} {}\"]\nexamples = [\n",
            word(e), word(e / 7), word(e), word(e / 3)
        ));
        for x in 0..8 {
            faq.push_str(&format!(
                "  \"how do I {} my {} {} {} please\",\n",
                word(e + x),
                word(e / 5 + x),
                word(e / 11),
                word(e * 3 + x)
            ));
        }
        faq.push_str("]\n\n");
    }
    w("rules/faq/faq.toml", faq);
    let mut r = String::from("[[queue]]\nname = \"support\"\nfolder = \"Queues/Support\"\n\n");
    for i in 0..rules {
        let cond = match i % 4 {
            0 => format!(
                "{{ subject = {{ contains = [\"{}\", \"{} {}\"] }} }}",
                word(i),
                word(i + 1),
                word(i + 2)
            ),
            1 => format!(
                "{{ body = {{ regex = '\\b{}\\s+(is|was)\\s+{}\\b' }} }}",
                word(i),
                word(i + 3)
            ),
            2 => format!(
                "{{ all = [ {{ from_domain = {{ in = [\"d{i}.example\"] }} }}, {{ not = {{ has_attachment = true }} }} ] }}"
            ),
            _ => format!("{{ header = {{ \"X-Tag-{i}\" = {{ equals = \"yes\" }} }} }}"),
        };
        r.push_str(&format!(
            "[[rule]]\nname = \"rule-{i}\"\nwhen = {cond}\nflag = [\"r{i}\"]\n\n"
        ));
    }
    w("rules/rules.toml", r);
    w(
        "templates/faq/answer.txt.j2",
        "Hello {{ customer.name }}, about {{ faq.title }}.\n".into(),
    );
}

fn load(dir: &Path) -> Arc<Knowledge> {
    let (cfg, _) = Config::load(&dir.join("switchboard.toml")).unwrap_or_else(|d| panic!("{d}"));
    let (k, _) = Knowledge::load(&cfg).unwrap_or_else(|d| panic!("{d}"));
    k
}

fn messages() -> Vec<Vec<u8>> {
    (0..64)
        .map(|i| {
            format!(
                "From: Customer {i} <c{i}@customer.example>\r\nTo: support@shop.example\r\nSubject: {} question about my {}\r\nMessage-ID: <{i}@customer.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nhow do I {} my {} {}? The {} was {} last week.\r\n\r\nThanks,\r\nCustomer\r\n\r\nOn Mon, 16 Nov 2026, Shop wrote:\r\n> old text about {}\r\n",
                word(i), word(i * 3), word(i + 2), word(i * 5), word(i / 2), word(i + 7), word(i + 9), word(i * 11)
            )
            .into_bytes()
        })
        .collect()
}

#[divan::bench(sample_count = 20)]
fn large_set_1000_faq_200_rules(b: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_set(dir.path(), 1000, 200);
    let k = load(dir.path());
    let msgs = messages();
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % msgs.len();
        dry_run(divan::black_box(&msgs[i]), &k)
    });
}

/// The bundled demo's knowledge and its mails (the directory they came
/// from stays while the bench runs: the order lookup reads its database).
fn demo() -> (tempfile::TempDir, Arc<Knowledge>, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = switchboard::demo::extract(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let (cfg, _) = Config::load(&config).unwrap_or_else(|d| panic!("{d}"));
    let (k, _) = Knowledge::load(&cfg).unwrap_or_else(|d| panic!("{d}"));
    let msgs: Vec<Vec<u8>> = std::fs::read_dir(dir.path().join("examples/demo/Maildir/new"))
        .map(|r| {
            r.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    (dir, k, msgs)
}

#[divan::bench(sample_count = 20)]
fn demo_set(b: divan::Bencher) {
    let (_dir, k, msgs) = demo();
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % msgs.len().max(1);
        dry_run(divan::black_box(&msgs[i]), &k)
    });
}

/// The whole demo corpus (39 messages) per iteration: steadier than one
/// message per sample, for comparing builds.
#[divan::bench(sample_count = 40)]
fn demo_corpus_all_messages(b: divan::Bencher) {
    let (_dir, k, msgs) = demo();
    b.bench_local(|| {
        for m in &msgs {
            divan::black_box(dry_run(divan::black_box(m), &k));
        }
    });
}

#[divan::bench(sample_count = 5)]
fn load_knowledge_1000_faq_200_rules(b: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_set(dir.path(), 1000, 200);
    b.bench_local(|| load(dir.path()));
}

/// BANKING77 (tests/data/banking77/train.csv): the FAQ matcher alone
/// with 77 entries built from 9/10 of the questions, querying the other
/// tenth one by one. Skipped when the data set is not beside the repo.
fn banking77() -> Option<(switchboard::classify::faq::FaqIndex, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/banking77/train.csv");
    let data = switchboard::eval::read_csv(&path, None, None).ok()?;
    let (train, test): (Vec<_>, Vec<_>) = data.iter().enumerate().partition(|(i, _)| i % 10 != 0);
    let train: Vec<&switchboard::eval::Labelled> = train.into_iter().map(|(_, l)| l).collect();
    let entries = switchboard::eval::entries_from(&train);
    let cfg = switchboard::config::FaqConfig {
        threshold: switchboard::config::DEFAULT_FAQ_THRESHOLD,
        margin: switchboard::config::DEFAULT_FAQ_MARGIN,
        threshold_set: true,
        background: true,
        suggest_threshold: None,
    };
    let index = switchboard::classify::faq::FaqIndex::build(entries, &cfg).ok()?;
    Some((
        index,
        test.into_iter().map(|(_, l)| l.text.clone()).collect(),
    ))
}

#[divan::bench(sample_count = 50)]
fn banking77_faq_77_entries_per_question(b: divan::Bencher) {
    let Some((index, questions)) = banking77() else {
        eprintln!("banking77 data not found; skipped");
        return;
    };
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % questions.len();
        divan::black_box(index.query(&questions[i]))
    });
}

/// Building the FAQ matcher from all 10,003 BANKING77 questions (77
/// entries): what a reload of a large FAQ costs.
#[divan::bench(sample_count = 3)]
fn banking77_build_10k_examples(b: divan::Bencher) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/banking77/train.csv");
    let Ok(data) = switchboard::eval::read_csv(&path, None, None) else {
        eprintln!("banking77 data not found; skipped");
        return;
    };
    let refs: Vec<&switchboard::eval::Labelled> = data.iter().collect();
    let cfg = switchboard::config::FaqConfig {
        threshold: switchboard::config::DEFAULT_FAQ_THRESHOLD,
        margin: switchboard::config::DEFAULT_FAQ_MARGIN,
        threshold_set: true,
        background: true,
        suggest_threshold: None,
    };
    b.bench_local(|| {
        switchboard::classify::faq::FaqIndex::build(switchboard::eval::entries_from(&refs), &cfg)
    });
}
