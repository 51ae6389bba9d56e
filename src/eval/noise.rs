//! Realistic e-mails from labelled questions: how customers really write.
//!
//! A clean one-line question ("Where is my refund?") becomes an e-mail
//! with what real mail carries around the question: a greeting, the
//! customer's name on a line of its own, a sign-off, a sentence of context,
//! a typo, a vague or empty subject, all lower case, a mobile footer. The
//! generator is seeded, so the same seed gives the same mails: a benchmark
//! that cannot drift (`switchboard eval --realistic`, `switchboard faq
//! emails`).

/// A seeded generator (xorshift64*), so benchmarks are reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const FIRST: &[&str] = &[
    "Jane", "John", "Maria", "Ahmed", "Li", "Sophie", "Lukas", "Emma", "Oliver", "Priya", "Carlos",
    "Anna", "Tom", "Fatima", "Chen", "Olga", "Kwame", "Sara", "James", "Aisha", "Pierre", "Hannah",
    "Diego", "Mei", "Noah", "Zoe", "Ivan", "Grace", "Mohammed", "Elena", "Ben", "Yuki",
];
const LAST: &[&str] = &[
    "Doe",
    "Smith",
    "García",
    "Khan",
    "Wang",
    "Müller",
    "Rossi",
    "Brown",
    "Okafor",
    "Patel",
    "Novak",
    "Johnson",
    "Silva",
    "Kowalski",
    "Nguyen",
    "Andersson",
    "O'Brien",
    "Dubois",
    "Kim",
    "Schmidt",
    "Taylor",
    "Haddad",
    "Ivanova",
    "Lee",
];
const GREETINGS: &[&str] = &[
    "Hello,",
    "Hi,",
    "Hi there,",
    "Hello there,",
    "Dear Sir or Madam,",
    "Dear support team,",
    "Good morning,",
    "Good afternoon,",
    "Hey,",
    "Hello team,",
    "Hi support,",
    "Dear customer service,",
    "Greetings,",
    "Hi all,",
    "To whom it may concern,",
];
const SIGN_OFFS: &[&str] = &[
    "Thanks,",
    "Thank you,",
    "Thank you!",
    "Thanks in advance,",
    "Many thanks,",
    "Best regards,",
    "Kind regards,",
    "Regards,",
    "Best,",
    "Cheers,",
    "Thanks a lot",
    "Sincerely,",
    "Looking forward to your reply,",
    "Thanks for your help,",
];
const CONTEXT: &[&str] = &[
    "I'm on holiday in Portugal.",
    "I have been a customer for years.",
    "I tried the app this morning.",
    "This is the second time I am writing.",
    "I am writing from my work account.",
    "My daughter set up the account for me.",
    "I'm travelling at the moment.",
    "I hope you can help me.",
    "Sorry for the long message.",
    "I couldn't find anything on your website.",
    "I called yesterday but nobody answered.",
    "It's quite urgent.",
    "I'm not very good with computers.",
    "I just moved to a new flat.",
    "My phone was updated last night.",
    "I'm a student and this matters a lot to me.",
    "I read the FAQ but it did not help.",
    "I'm using the web version, not the app.",
    "A friend recommended you to me.",
    "I hope this is the right address.",
    "We are a small business.",
    "I live in Canada.",
    "I'm writing on behalf of my husband.",
    "Nothing like this happened before.",
];
const VAGUE_SUBJECTS: &[&str] = &[
    "Question",
    "Help",
    "Hi",
    "Hello",
    "Problem",
    "Urgent",
    "Support request",
    "Inquiry",
    "Account",
    "Quick question",
    "Need help",
    "Issue",
    "",
    "",
];
const FOOTERS: &[&str] = &[
    "Sent from my iPhone",
    "Sent from my Samsung Galaxy smartphone.",
    "Get Outlook for Android",
    "Sent from Mail for Windows",
];

/// What noise to add; each a probability.
#[derive(Debug, Clone)]
pub struct Noise {
    pub greeting: f64,
    pub sign_off: f64,
    /// The name on a line of its own after the sign-off (or alone).
    pub name_line: f64,
    pub typo: f64,
    pub context: f64,
    pub lower_case: f64,
    pub footer: f64,
    /// The subject is vague or empty instead of the question's topic.
    pub vague_subject: f64,
}

impl Noise {
    /// The realistic mix: every kind of noise, at rates seen in support mail.
    pub fn realistic() -> Noise {
        Noise {
            greeting: 0.7,
            sign_off: 0.7,
            name_line: 0.6,
            typo: 0.5,
            context: 0.5,
            lower_case: 0.15,
            footer: 0.15,
            vague_subject: 0.6,
        }
    }

    /// The bare question, as the body of a mail with a vague subject.
    pub fn none() -> Noise {
        Noise {
            greeting: 0.0,
            sign_off: 0.0,
            name_line: 0.0,
            typo: 0.0,
            context: 0.0,
            lower_case: 0.0,
            footer: 0.0,
            vague_subject: 1.0,
        }
    }
}

/// One typo in one word of four letters or more: two neighbouring letters
/// swapped, a letter dropped, doubled or replaced by a keyboard neighbour.
pub fn typo(text: &str, rng: &mut Rng) -> String {
    let words: Vec<(usize, &str)> = text
        .split(' ')
        .scan(0usize, |pos, w| {
            let start = *pos;
            *pos += w.len() + 1;
            Some((start, w))
        })
        .filter(|(_, w)| w.chars().filter(|c| c.is_ascii_alphabetic()).count() >= 4)
        .collect();
    if words.is_empty() {
        return text.to_string();
    }
    let (start, w) = *rng.pick(&words);
    let chars: Vec<char> = w.chars().collect();
    let letters: Vec<usize> = (0..chars.len())
        .filter(|&i| chars[i].is_ascii_alphabetic())
        .collect();
    let mut c = chars.clone();
    let i = letters[rng.below(letters.len())];
    match rng.below(4) {
        0 if i + 1 < c.len() && c[i + 1].is_ascii_alphabetic() => c.swap(i, i + 1),
        0 | 1 => {
            c.remove(i);
        }
        2 => c.insert(i, c[i]),
        _ => {
            const ROWS: [&str; 3] = ["qwertyuiop", "asdfghjkl", "zxcvbnm"];
            let lower = c[i].to_ascii_lowercase();
            if let Some(row) = ROWS.iter().find(|r| r.contains(lower)) {
                let b = row.as_bytes();
                let p = row.find(lower).unwrap_or(0);
                let n = if p + 1 < b.len() && (p == 0 || rng.chance(0.5)) {
                    b[p + 1]
                } else {
                    b[p.saturating_sub(1)]
                };
                c[i] = n as char;
            }
        }
    }
    let new: String = c.into_iter().collect();
    format!("{}{}{}", &text[..start], new, &text[start + w.len()..])
}

/// A realistic e-mail (RFC 5322, CRLF) around `question`.
pub fn email(question: &str, noise: &Noise, rng: &mut Rng, n: usize) -> Vec<u8> {
    let first = *rng.pick(FIRST);
    let last = *rng.pick(LAST);
    let full = format!("{first} {last}");
    let mut q = question.trim().to_string();
    if rng.chance(noise.typo) {
        q = typo(&q, rng);
    }
    let mut body: Vec<String> = Vec::new();
    let greeting = rng
        .chance(noise.greeting)
        .then(|| rng.pick(GREETINGS).to_string());
    let inline_greeting = greeting.is_some() && rng.chance(0.3);
    let context = rng
        .chance(noise.context)
        .then(|| rng.pick(CONTEXT).to_string());
    let context_first = rng.chance(0.5);
    if let Some(g) = &greeting
        && !inline_greeting
    {
        body.push(g.clone());
        body.push(String::new());
    }
    let mut para = Vec::new();
    if context_first && let Some(c) = &context {
        para.push(c.clone());
    }
    para.push(match (&greeting, inline_greeting) {
        (Some(g), true) => format!("{g} {q}"),
        _ => q.clone(),
    });
    if !context_first && let Some(c) = &context {
        para.push(c.clone());
    }
    body.push(para.join(if rng.chance(0.5) { " " } else { "\n" }));
    let sign_off = rng.chance(noise.sign_off);
    let name_line = rng.chance(noise.name_line);
    if sign_off || name_line {
        body.push(String::new());
    }
    let name = if rng.chance(0.5) {
        first.to_string()
    } else {
        full.clone()
    };
    match (sign_off, name_line) {
        (true, true) if rng.chance(0.3) => {
            body.push(format!(
                "{} {name}",
                rng.pick(SIGN_OFFS).trim_end_matches(',')
            ));
        }
        (true, true) => {
            body.push(rng.pick(SIGN_OFFS).to_string());
            body.push(name);
        }
        (true, false) => body.push(rng.pick(SIGN_OFFS).to_string()),
        (false, true) => body.push(name),
        (false, false) => {}
    }
    if rng.chance(noise.footer) {
        body.push(String::new());
        body.push(rng.pick(FOOTERS).to_string());
    }
    let mut text = body.join("\r\n");
    if rng.chance(noise.lower_case) {
        text = text.to_lowercase();
    }
    let subject = if rng.chance(noise.vague_subject) {
        rng.pick(VAGUE_SUBJECTS).to_string()
    } else {
        question.trim().to_string()
    };
    let local: String = format!("{first}.{last}")
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let mut raw = String::new();
    raw.push_str(&format!("From: {full} <{local}@customer.example>\r\n"));
    raw.push_str("To: support@shop.example\r\n");
    if subject.is_empty() {
        raw.push_str("Subject:\r\n");
    } else {
        raw.push_str(&format!("Subject: {subject}\r\n"));
    }
    raw.push_str(&format!(
        "Message-ID: <q{n}.{:x}@customer.example>\r\n",
        rng.next_u64()
    ));
    raw.push_str("Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n");
    raw.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    raw.push_str(&text);
    raw.push_str("\r\n");
    raw.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mail() {
        let a = email(
            "Where is my refund?",
            &Noise::realistic(),
            &mut Rng::new(7),
            1,
        );
        let b = email(
            "Where is my refund?",
            &Noise::realistic(),
            &mut Rng::new(7),
            1,
        );
        assert_eq!(a, b);
        let c = email(
            "Where is my refund?",
            &Noise::realistic(),
            &mut Rng::new(8),
            1,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn typos_change_one_word() {
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            let t = typo("where is my refund please", &mut rng);
            let diff = t
                .split(' ')
                .zip("where is my refund please".split(' '))
                .filter(|(a, b)| a != b)
                .count();
            assert!(diff <= 1, "{t}");
        }
    }

    #[test]
    fn mails_parse() {
        let mut rng = Rng::new(1);
        for i in 0..50 {
            let raw = email(
                "How do I reset my password?",
                &Noise::realistic(),
                &mut rng,
                i,
            );
            let m =
                crate::parse::parse(&raw, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
            assert!(m.from.is_some());
            assert!(m.body.to_lowercase().contains("how do i"), "{}", m.body);
        }
    }
}
