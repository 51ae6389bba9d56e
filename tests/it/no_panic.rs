//! No input bytes make parsing, classification or deciding panic.

use proptest::prelude::*;
use switchboard::pipeline::dry_run;

use crate::common::{Setup, message};

fn setup() -> &'static (Setup, std::sync::Arc<switchboard::knowledge::Knowledge>) {
    use std::sync::OnceLock;
    static S: OnceLock<(Setup, std::sync::Arc<switchboard::knowledge::Knowledge>)> =
        OnceLock::new();
    S.get_or_init(|| {
        let s = Setup::new(
            "[[rule]]\nname = \"x\"\nwhen = { body = { regex = '(a|b)+c' } }\nroute = \"billing\"\n",
        );
        let k = s.knowledge();
        (s, k)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let (_, k) = setup();
        let _ = dry_run(&raw, k);
    }

    #[test]
    fn mutated_messages(
        pos in 0usize..2000,
        junk in proptest::collection::vec(any::<u8>(), 1..64),
        cut in 0usize..2000,
    ) {
        let (_, k) = setup();
        let mut raw = message(
            "Content-Type: multipart/alternative; boundary=\"xx\"\nMIME-Version: 1.0",
            "=?UTF-8?Q?Re:_Where=C3=A9_is?= my order",
            "--xx\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nWhere is my order =E2=82=AC?\n--xx\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGI+aGk8L2I+\n--xx--\n",
        );
        let p = pos.min(raw.len());
        raw.splice(p..p, junk);
        raw.truncate(cut.max(1).min(raw.len()));
        let _ = dry_run(&raw, k);
    }

    #[test]
    fn header_soup(lines in proptest::collection::vec("[A-Za-z-]{1,20}: [ -~]{0,80}", 0..40), body in "[ -~\n]{0,400}") {
        let (_, k) = setup();
        let raw = format!("{}\r\n\r\n{}", lines.join("\r\n"), body);
        let _ = dry_run(raw.as_bytes(), k);
    }
}

#[test]
fn nasty_fixed_inputs() {
    let (_, k) = setup();
    let deep = "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n".repeat(500);
    for raw in [
        &b""[..],
        b"\r\n\r\n",
        b"From:\r\n\r\n",
        b"From: <>\r\nSubject: =?x?q?=FF?=\r\n\r\n",
        b"From: a@b\r\nContent-Type: multipart/mixed\r\n\r\n--\r\n--",
        deep.as_bytes(),
        &[0xff; 3000],
    ] {
        let _ = dry_run(raw, k);
    }
}
