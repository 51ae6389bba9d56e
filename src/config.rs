//! `switchboard.toml`: daemon settings.
//!
//! The config says where mail comes from (`[[mailbox]]`), how replies leave
//! (`[outbound]`), where state is kept (`[store]`), where the knowledge files
//! live (`rules_dir`, `templates_dir`), and the policy knobs (limits, FAQ
//! thresholds, folder names, company details for templates). Relative paths
//! are relative to the directory of the config file. Secrets are never
//! written here — only where to read them (see [`crate::secret`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostics, Location, Source};
use crate::secret::SecretSource;
use crate::tomlread::{At, Ctx, Table};

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// Directory with `*.toml` rule files (and queue definitions).
    pub rules_dir: PathBuf,
    /// More rule directories (`extra_rules_dirs = ["site-rules"]`): their
    /// files run together with `rules_dir`'s, in file-name order, so a
    /// site adds rules between shared ones by naming (`45-orders.toml`).
    pub extra_rules_dirs: Vec<PathBuf>,
    /// Directory with FAQ entry files.
    pub faq_dir: PathBuf,
    /// Directory with reply templates.
    pub templates_dir: PathBuf,
    /// More template directories (`extra_templates_dirs = [...]`); a
    /// template there replaces a shared one of the same name.
    pub extra_templates_dirs: Vec<PathBuf>,
    /// Our own addresses: mail from them is never answered (loops), and the
    /// vacation-style check (RFC 5230 §4.5) looks for them in To/Cc.
    pub our_addresses: Vec<String>,
    /// Domain for Message-IDs of our replies.
    pub domain: String,
    /// Master switch for auto-replies. When false, switchboard only routes
    /// and records which reply it *would* have sent ("suggest mode").
    pub auto_reply: bool,
    /// Queue for everything no rule routes and the FAQ cannot answer.
    pub default_queue: String,
    /// Where `default_queue` is written (or the file start), for messages.
    pub default_queue_location: Location,
    /// Where `[faq] threshold` is written (or the file start), for messages.
    pub faq_threshold_location: Location,
    pub company: BTreeMap<String, String>,
    pub reply: ReplyConfig,
    pub limits: Limits,
    pub faq: FaqConfig,
    pub folders: Folders,
    pub mailboxes: Vec<MailboxConfig>,
    pub outbound: OutboundConfig,
    pub store: StoreConfig,
    /// Languages the detector may answer, as whatlang values.
    pub languages: Vec<whatlang::Lang>,
    pub daemon: DaemonConfig,
    /// `[[lookup]]` tables of switchboard.toml (more may be in the rules).
    pub lookups: Vec<crate::lookup::LookupDef>,
    /// `[sla]`: the business calendar of queues that set none.
    pub sla: crate::decide::sla::Calendar,
}

/// How auto-replies are addressed and marked.
#[derive(Debug, Clone)]
pub struct ReplyConfig {
    /// `From:` of replies, e.g. `Northwind Support <support@northwind.example>`.
    pub from: String,
    /// Whom to answer: `reply-to` (Reply-To, else From — the default for a
    /// support service), `from`, or `return-path` (RFC 3834 §4 strict).
    pub address: ReplyAddress,
    /// Send with an empty envelope sender (`MAIL FROM:<>`, RFC 3834 §3.3)
    /// so a failing reply cannot bounce back into the inbox.
    pub null_sender: bool,
    /// Prefix of ticket references, e.g. `SB` → `SB-1042`.
    pub ticket_prefix: String,
    /// Language of the default template variants (`NAME.txt.j2`). Mail
    /// detected in another language is only auto-answered when a variant
    /// `NAME.LANG.txt.j2` exists; otherwise a person answers.
    pub language: String,
    /// authserv-ids of our own MTAs (lower-case): only their
    /// `Authentication-Results` are believed when they say "pass".
    pub trusted_authserv_ids: Vec<String>,
    /// Auto-reply only when a trusted MTA says the sender is
    /// authenticated (DMARC pass, or DKIM/SPF pass aligned with From).
    pub require_authenticated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyAddress {
    ReplyTo,
    From,
    ReturnPath,
}

/// Rate limits and size limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// At most one auto-reply per sender per template within this window.
    pub per_sender_interval: Duration,
    /// Global circuit breaker: stop auto-replying when this many replies
    /// went out in the last hour (messages then go to a human).
    pub max_replies_per_hour: u32,
    /// Messages larger than this are classified from headers and their
    /// first text part only.
    pub max_message_size: u64,
    /// At most this many auto-replies per hour to one recipient domain,
    /// and from one sender domain, so that no single domain can use up
    /// the circuit breaker for every other customer (default: half of
    /// `max_replies_per_hour`).
    pub per_domain_per_hour: u32,
    /// A Reply-To in another domain than From (the classic way to aim
    /// backscatter at a victim) gets at most one auto-reply, whatever
    /// the template, within this window.
    pub cross_domain_interval: Duration,
}

/// Confidence settings of the FAQ matcher.
#[derive(Debug, Clone)]
pub struct FaqConfig {
    /// Minimum confidence (0–1) for an auto-reply.
    pub threshold: f64,
    /// Minimum lead of the best entry over the runner-up.
    pub margin: f64,
    /// Whether `threshold` was written in the config (otherwise a fitted
    /// `[calibration]` threshold of the FAQ applies).
    pub threshold_set: bool,
    /// Learn the built-in everyday questions as "none of the entries".
    pub background: bool,
    /// From this confidence up to `threshold`, no automatic answer but a
    /// draft of it for the person (`None`: no drafts).
    pub suggest_threshold: Option<f64>,
}

/// Folder names for outcomes that are not a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folders {
    /// Where the original goes after an auto-reply.
    pub answered: String,
    /// Automatic mail that needs nobody (bounces, lists, out-of-office).
    pub ignored: String,
    /// Mail that could not be processed (unparseable, errors): for an admin.
    pub parked: String,
    /// Copies of the replies we sent.
    pub sent: String,
}

impl Default for Folders {
    fn default() -> Self {
        Folders {
            answered: "Answered".into(),
            ignored: "Ignored".into(),
            parked: "Parked".into(),
            sent: "Sent".into(),
        }
    }
}

/// One watched mailbox.
#[derive(Debug, Clone)]
pub struct MailboxConfig {
    pub name: String,
    pub kind: MailboxKind,
    /// Addresses that reach this mailbox (added to `our_addresses`).
    pub addresses: Vec<String>,
    pub folders: Folders,
    /// Folders where people's answers are filed (a team answering from
    /// the shared account): checked for answers in known conversations.
    pub sent_folders: Vec<String>,
    /// Where in the config it was defined (for messages).
    pub location: Location,
}

#[derive(Debug, Clone)]
pub enum MailboxKind {
    Maildir { path: PathBuf },
    Imap(ImapConfig),
}

/// Transport security of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (IMAP 993, SMTP 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS (IMAP 143, SMTP 587).
    StartTls,
    /// No encryption. Only for loopback test servers; must be explicit.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    Login,
    Plain,
    XOAuth2,
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: String,
    pub auth: AuthMechanism,
    /// The password, or for XOAUTH2 the access-token command.
    pub secret: SecretSource,
    pub folder: String,
    /// Use IDLE when the server supports it.
    pub idle: bool,
    /// Poll interval when IDLE is off or unsupported.
    pub poll_interval: Duration,
    /// Messages fetched per round trip.
    pub batch_size: u32,
    /// In a backlog, messages are moved to their folders this many at a
    /// time (or every 2 s), over a second connection.
    pub file_every: u32,
    /// Timeout of every single IMAP command.
    pub timeout: Duration,
    /// Accept invalid TLS certificates (test servers only).
    pub danger_accept_invalid_certs: bool,
    /// Use `UID MOVE` when the server has it. `false` forces `UID COPY` +
    /// `\Deleted` + `UID EXPUNGE`, for servers whose MOVE is broken.
    pub use_move: bool,
}

#[derive(Debug, Clone)]
pub enum OutboundConfig {
    /// Write each reply as an `.eml` file into a directory (lettre's file
    /// transport). The embedded default: nothing leaves the machine.
    File {
        dir: PathBuf,
    },
    Smtp(SmtpConfig),
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: Option<String>,
    pub auth: AuthMechanism,
    pub secret: Option<SecretSource>,
    pub timeout: Duration,
    pub pool_size: u32,
    pub danger_accept_invalid_certs: bool,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path` (relative to the config dir) or `postgres://…`.
    pub url: String,
}

/// Settings of the long-running process.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Prometheus metrics listener (off when `None`).
    pub metrics_listen: Option<SocketAddr>,
    /// Reload knowledge automatically when files under the rules or
    /// templates directories change.
    pub watch: bool,
    /// Minimum delay before a failed message is retried.
    pub retry_initial: Duration,
    /// Maximum delay between retries / reconnects.
    pub retry_max: Duration,
    /// This instance's name in the store's lease table and in
    /// `switchboard status` (default: the host name).
    pub instance: Option<String>,
    /// How long a mailbox lease lasts without a heartbeat: an instance
    /// that dies loses its mailboxes after this long and another instance
    /// takes them over. Heartbeats come every third of it.
    pub lease_ttl: Duration,
    /// How often service-level deadlines are checked (default 30s).
    pub sla_check: Duration,
}

impl Config {
    /// All addresses that are ours (global and per mailbox), lower-case.
    pub fn all_our_addresses(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .our_addresses
            .iter()
            .chain(self.mailboxes.iter().flat_map(|m| m.addresses.iter()))
            .map(|a| a.trim().to_lowercase())
            .collect();
        if let Some(a) = address_of(&self.reply.from) {
            v.push(a.to_lowercase());
        }
        v.sort();
        v.dedup();
        v
    }

    /// Loads and validates a config file; every problem is returned.
    pub fn load(path: &Path) -> Result<(Config, Diagnostics), Diagnostics> {
        let mut diags = Diagnostics::new();
        let Some(src) = Source::read(path, &mut diags) else {
            return Err(diags);
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let ctx = Ctx::new(src);
        let cfg = read_config(&ctx, path, &base);
        diags.extend(ctx.into_diagnostics());
        match cfg {
            Some(c) if !diags.has_errors() => Ok((c, diags)),
            _ => Err(diags),
        }
    }
}

/// The bare address of `Name <addr>` or `addr`.
pub fn address_of(s: &str) -> Option<&str> {
    let s = s.trim();
    let a = match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if b > a => &s[a + 1..b],
        _ => s,
    };
    let a = a.trim();
    (a.contains('@') && !a.contains(char::is_whitespace)).then_some(a)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        normalize(p)
    } else {
        normalize(&base.join(p))
    }
}

/// Removes `.` and `dir/..` without touching the file system, so paths in
/// messages read like the admin wrote them (`rules/a.toml`, not
/// `examples/demo/../../rules/a.toml`).
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

fn check_address(ctx: &Ctx, a: &At<String>) {
    if address_of(&a.value).is_none() {
        ctx.error(
            a.span.clone(),
            format!("{:?} is not an e-mail address", a.value),
        );
    }
}

fn read_config(ctx: &Ctx, path: &Path, base: &Path) -> Option<Config> {
    let mut t = ctx.parse();
    let rules_dir = resolve(
        base,
        &t.string("rules_dir").map_or("rules".into(), |s| s.value),
    );
    let mut dirs = |key: &'static str| -> Vec<PathBuf> {
        t.strings(key)
            .unwrap_or_default()
            .into_iter()
            .map(|d| resolve(base, &d.value))
            .collect()
    };
    let extra_templates_dirs = dirs("extra_templates_dirs");
    let extra_rules_dirs = dirs("extra_rules_dirs");
    let faq_dir = t
        .string("faq_dir")
        .map_or_else(|| rules_dir.join("faq"), |s| resolve(base, &s.value));
    let templates_dir = resolve(
        base,
        &t.string("templates_dir")
            .map_or("templates".into(), |s| s.value),
    );
    let our = t.strings("our_addresses").unwrap_or_default();
    for a in &our {
        check_address(ctx, a);
    }
    let auto_reply = t.boolean("auto_reply").is_none_or(|b| b.value);
    let default_queue = t
        .string("default_queue")
        .unwrap_or_else(|| At::new("support".into(), 0..0));
    let default_queue_location = ctx.location(&default_queue.span);
    let domain_at = t.string("domain");
    let languages = match t.strings("languages") {
        Some(list) => list
            .iter()
            .filter_map(|l| {
                let found = crate::parse::lang_from_code(&l.value);
                if found.is_none() {
                    ctx.error(
                        l.span.clone(),
                        format!(
                            "unknown language {:?}; use codes like \"en\", \"de\", \"fr\"",
                            l.value
                        ),
                    );
                }
                found
            })
            .collect(),
        None => crate::parse::default_languages(),
    };

    let mut company = BTreeMap::new();
    if let Some(mut c) = t.table("company", "[company]") {
        while let Some((k, v)) = c.take_any() {
            if let Some(s) = v.into_string() {
                company.insert(k.value, s.value);
            }
        }
        c.finish();
    }

    let reply = read_reply(ctx, t.table("reply", "[reply]"));
    let limits = read_limits(t.table("limits", "[limits]"));
    let (faq, faq_threshold_span) = read_faq(ctx, t.table("faq", "[faq]"));
    let faq_threshold_location = ctx.location(&faq_threshold_span);
    let folders = read_folders(t.table("folders", "[folders]"), &Folders::default());
    let store = read_store(t.table("store", "[store]"), base);
    let daemon = read_daemon(ctx, t.table("daemon", "[daemon]"));
    let outbound = read_outbound(ctx, t.table("outbound", "[outbound]"), base);

    let mut sla = crate::decide::sla::Calendar::default();
    if let Some(mut st) = t.table("sla", "[sla]") {
        let (hours, tz, holidays) = crate::knowledge::queues::read_calendar(&mut st);
        sla.hours = hours.unwrap_or_default();
        if let Some(tz) = tz {
            sla.timezone = tz;
        }
        sla.holidays = holidays.unwrap_or_default();
        st.finish();
    }
    let lookups: Vec<crate::lookup::LookupDef> = t
        .tables("lookup")
        .into_iter()
        .filter_map(|lt| crate::lookup::read_lookup(lt, base))
        .collect();
    let mut mailboxes = Vec::new();
    let mut names = BTreeMap::new();
    for mt in t.tables("mailbox") {
        if let Some((m, span)) = read_mailbox(ctx, mt, base, &folders) {
            if let Some(prev) = names.insert(m.name.clone(), span.clone()) {
                ctx.error(
                    span,
                    format!(
                        "mailbox name {:?} is already used at {}",
                        m.name,
                        ctx.location(&prev)
                    ),
                );
            }
            mailboxes.push(m);
        }
    }
    t.finish();

    let domain = match domain_at {
        Some(d) => d.value,
        None => address_of(&reply.from)
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| "localhost".into()),
    };

    Some(Config {
        path: path.to_path_buf(),
        rules_dir,
        extra_rules_dirs,
        faq_dir,
        templates_dir,
        extra_templates_dirs,
        our_addresses: our.into_iter().map(|a| a.value).collect(),
        domain,
        auto_reply,
        default_queue: default_queue.value,
        default_queue_location,
        faq_threshold_location,
        company,
        reply,
        limits,
        faq,
        folders,
        mailboxes,
        outbound,
        store,
        languages,
        daemon,
        lookups,
        sla,
    })
}

fn read_reply(ctx: &Ctx, t: Option<Table<'_>>) -> ReplyConfig {
    let mut r = ReplyConfig {
        from: "Support <support@localhost>".into(),
        address: ReplyAddress::ReplyTo,
        null_sender: true,
        ticket_prefix: "SB".into(),
        language: "en".into(),
        trusted_authserv_ids: Vec::new(),
        require_authenticated: false,
    };
    let Some(mut t) = t else {
        return r;
    };
    if let Some(l) = t.string("language") {
        match crate::parse::lang_from_code(&l.value) {
            Some(lang) => r.language = crate::parse::lang_code(lang).into_owned(),
            None => ctx.error(
                l.span,
                format!("unknown language {:?}; use a code like \"en\"", l.value),
            ),
        }
    }
    if let Some(f) = t.string("from") {
        check_address(ctx, &f);
        r.from = f.value;
    }
    if let Some(a) = t.string("address") {
        r.address = match a.value.as_str() {
            "reply-to" => ReplyAddress::ReplyTo,
            "from" => ReplyAddress::From,
            "return-path" => ReplyAddress::ReturnPath,
            _ => {
                ctx.error(
                    a.span,
                    "`address` must be \"reply-to\", \"from\" or \"return-path\"",
                );
                r.address
            }
        };
    }
    if let Some(b) = t.boolean("null_sender") {
        r.null_sender = b.value;
    }
    if let Some(p) = t.string("ticket_prefix") {
        if p.value.is_empty()
            || p.value.len() > 8
            || !p.value.chars().all(|c| c.is_ascii_alphanumeric())
        {
            ctx.error(p.span, "`ticket_prefix` must be 1–8 letters or digits");
        } else {
            r.ticket_prefix = p.value;
        }
    }
    if let Some(ids) = t.strings("trusted_authserv_ids") {
        r.trusted_authserv_ids = ids
            .into_iter()
            .map(|i| i.value.trim().to_ascii_lowercase())
            .filter(|i| !i.is_empty())
            .collect();
    }
    if let Some(b) = t.boolean("require_authenticated") {
        if b.value && r.trusted_authserv_ids.is_empty() {
            ctx.error(
                b.span,
                "`require_authenticated = true` needs `trusted_authserv_ids`: the authserv-id \
                 your own mail server writes into Authentication-Results (e.g. [\"mx.example.com\"])",
            );
        }
        r.require_authenticated = b.value;
    }
    t.finish();
    r
}

fn read_limits(t: Option<Table<'_>>) -> Limits {
    let mut l = Limits {
        per_sender_interval: Duration::from_secs(86400),
        max_replies_per_hour: 200,
        max_message_size: 25 * 1024 * 1024,
        per_domain_per_hour: 100,
        cross_domain_interval: Duration::from_secs(7 * 86400),
    };
    let Some(mut t) = t else {
        return l;
    };
    if let Some(d) = t.duration("per_sender_interval") {
        l.per_sender_interval = d.value;
    }
    if let Some(n) = t.integer("max_replies_per_hour") {
        l.max_replies_per_hour = n.value.clamp(0, u32::MAX as i64) as u32;
    }
    if let Some(s) = t.size("max_message_size") {
        l.max_message_size = s.value.max(1024);
    }
    // One domain may use at most half of the hourly breaker by default.
    l.per_domain_per_hour = (l.max_replies_per_hour / 2).max(1);
    if let Some(n) = t.integer("per_domain_per_hour") {
        l.per_domain_per_hour = n.value.clamp(0, u32::MAX as i64) as u32;
    }
    if let Some(d) = t.duration("cross_domain_interval") {
        l.cross_domain_interval = d.value;
    }
    t.finish();
    l
}

/// Default FAQ confidence threshold; see the README ("Choosing thresholds").
pub const DEFAULT_FAQ_THRESHOLD: f64 = 0.85;
/// Default FAQ margin over the runner-up.
pub const DEFAULT_FAQ_MARGIN: f64 = 0.1;

fn read_faq(ctx: &Ctx, t: Option<Table<'_>>) -> (FaqConfig, std::ops::Range<usize>) {
    let mut f = FaqConfig {
        threshold: DEFAULT_FAQ_THRESHOLD,
        margin: DEFAULT_FAQ_MARGIN,
        threshold_set: false,
        background: true,
        suggest_threshold: None,
    };
    let Some(mut t) = t else {
        return (f, 0..0);
    };
    if let Some(v) = t.float("suggest_threshold") {
        if (0.0..=1.0).contains(&v.value) {
            f.suggest_threshold = Some(v.value);
        } else {
            ctx.error(v.span, "`suggest_threshold` must be between 0 and 1");
        }
    }
    if let Some(b) = t.boolean("background") {
        f.background = b.value;
    }
    let mut span = t.span.clone();
    for (key, slot) in [("threshold", &mut f.threshold), ("margin", &mut f.margin)] {
        if let Some(v) = t.float(key) {
            if key == "threshold" {
                span = v.span.clone();
                f.threshold_set = true;
            }
            if (0.0..=1.0).contains(&v.value) {
                *slot = v.value;
            } else {
                ctx.error(v.span, format!("`{key}` must be between 0 and 1"));
            }
        }
    }
    t.finish();
    (f, span)
}

fn read_folders(t: Option<Table<'_>>, defaults: &Folders) -> Folders {
    let mut f = defaults.clone();
    let Some(mut t) = t else {
        return f;
    };
    for (key, slot) in [
        ("answered", &mut f.answered),
        ("ignored", &mut f.ignored),
        ("parked", &mut f.parked),
        ("sent", &mut f.sent),
    ] {
        if let Some(v) = t.string(key) {
            if v.value.trim().is_empty() {
                t.ctx()
                    .error(v.span, format!("folder `{key}` cannot be empty"));
            } else {
                *slot = v.value;
            }
        }
    }
    t.finish();
    f
}

fn read_store(t: Option<Table<'_>>, base: &Path) -> StoreConfig {
    let default = format!("sqlite://{}", base.join("switchboard.db").display());
    let Some(mut t) = t else {
        return StoreConfig { url: default };
    };
    let url = match t.string("url") {
        Some(u) => {
            if let Some(p) = u.value.strip_prefix("sqlite://") {
                format!("sqlite://{}", resolve(base, p).display())
            } else if u.value.starts_with("postgres://") || u.value.starts_with("postgresql://") {
                u.value
            } else {
                t.ctx()
                    .error(u.span, "`url` must start with sqlite:// or postgres://");
                default
            }
        }
        None => default,
    };
    t.finish();
    StoreConfig { url }
}

fn read_daemon(ctx: &Ctx, t: Option<Table<'_>>) -> DaemonConfig {
    let mut d = DaemonConfig {
        metrics_listen: None,
        watch: true,
        retry_initial: Duration::from_secs(5),
        retry_max: Duration::from_secs(300),
        instance: None,
        lease_ttl: Duration::from_secs(15),
        sla_check: Duration::from_secs(30),
    };
    let Some(mut t) = t else {
        return d;
    };
    if let Some(l) = t.string("metrics_listen") {
        match l.value.parse() {
            Ok(a) => d.metrics_listen = Some(a),
            Err(_) => ctx.error(
                l.span,
                "`metrics_listen` must be an address with port, e.g. \"127.0.0.1:9898\"",
            ),
        }
    }
    if let Some(w) = t.boolean("watch") {
        d.watch = w.value;
    }
    if let Some(r) = t.duration("retry_initial") {
        d.retry_initial = r.value.max(Duration::from_millis(100));
    }
    if let Some(r) = t.duration("retry_max") {
        d.retry_max = r.value.max(d.retry_initial);
    }
    if let Some(n) = t.string("instance") {
        let v = n.value.trim();
        if v.is_empty() || v.len() > 64 || v.chars().any(|c| c.is_control() || c == '/') {
            ctx.error(
                n.span,
                "`instance` must be a short name (1 to 64 characters, no `/`), e.g. \"node-a\"",
            );
        } else {
            d.instance = Some(v.to_string());
        }
    }
    if let Some(c) = t.duration("sla_check") {
        d.sla_check = c
            .value
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
    }
    if let Some(l) = t.duration("lease_ttl") {
        if l.value < Duration::from_secs(3) || l.value > Duration::from_secs(600) {
            ctx.error(
                l.span,
                "`lease_ttl` must be between \"3s\" and \"10m\" (default \"15s\"): \
                 a killed instance's mailboxes are taken over after this long",
            );
        } else {
            d.lease_ttl = l.value;
        }
    }
    t.finish();
    d
}

fn read_tls(t: &mut Table<'_>, default: Tls) -> At<Tls> {
    match t.string("tls") {
        None => At::new(default, t.span.clone()),
        Some(s) => {
            let v = match s.value.as_str() {
                "implicit" | "tls" | "ssl" => Tls::Implicit,
                "starttls" => Tls::StartTls,
                "none" | "plain" => Tls::None,
                _ => {
                    t.ctx().error(
                        s.span.clone(),
                        "`tls` must be \"implicit\", \"starttls\" or \"none\"",
                    );
                    default
                }
            };
            At::new(v, s.span)
        }
    }
}

/// Whether a host name or address is this machine (127.0.0.0/8, ::1,
/// `localhost`): the only place where a connection without TLS cannot be
/// read by anyone else.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") || h.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Transport security checks shared by IMAP and SMTP: no cleartext
/// credentials to another machine, and a loud warning when certificate
/// checks are off for one.
fn check_transport(
    ctx: &Ctx,
    what: &str,
    host: Option<&At<String>>,
    tls: &At<Tls>,
    danger: Option<&At<bool>>,
) {
    let Some(host) = host else { return };
    if is_loopback(&host.value) {
        return;
    }
    if tls.value == Tls::None {
        ctx.error(
            tls.span.clone(),
            format!(
                "`tls = \"none\"` would send the {what} password and all mail in clear text to {}; \
                 it is only allowed for a loopback host (127.0.0.1, ::1, localhost). \
                 Use `tls = \"implicit\"` or `tls = \"starttls\"`",
                host.value
            ),
        );
    }
    if let Some(d) = danger
        && d.value
    {
        ctx.warning(
            d.span.clone(),
            format!(
                "`danger_accept_invalid_certs = true` for {}: anyone on the network path can \
                 impersonate the {what} server and read the password; use it only for a test \
                 server, or install the server's CA certificate instead",
                host.value
            ),
        );
    }
}

fn read_auth(t: &mut Table<'_>) -> AuthMechanism {
    match t.string("auth") {
        None => AuthMechanism::Login,
        Some(s) => match s.value.to_ascii_lowercase().as_str() {
            "login" => AuthMechanism::Login,
            "plain" => AuthMechanism::Plain,
            "xoauth2" | "oauth2" => AuthMechanism::XOAuth2,
            _ => {
                t.ctx()
                    .error(s.span, "`auth` must be \"login\", \"plain\" or \"xoauth2\"");
                AuthMechanism::Login
            }
        },
    }
}

/// Reads `password_file` / `password_command` / `password_env` /
/// `password_credential` (or `token_command` for XOAUTH2). Exactly one.
fn read_secret(t: &mut Table<'_>, base: &Path, required: bool) -> Option<SecretSource> {
    let ctx = t.ctx();
    let mut found: Vec<(SecretSource, std::ops::Range<usize>)> = Vec::new();
    if t.has("password") {
        let span = t.take("password").map_or(t.span.clone(), |v| v.span);
        ctx.error(
            span,
            "passwords are never written in the config: use password_file, password_command, password_env or password_credential",
        );
    }
    if let Some(f) = t.string("password_file") {
        found.push((SecretSource::File(resolve(base, &f.value)), f.span));
    }
    for key in ["password_command", "token_command"] {
        if let Some(c) = t.strings(key) {
            let span = c.first().map_or(t.span.clone(), |c| c.span.clone());
            let argv: Vec<String> = if c.len() == 1 {
                c[0].value.split_whitespace().map(str::to_string).collect()
            } else {
                c.into_iter().map(|a| a.value).collect()
            };
            if argv.is_empty() {
                ctx.error(span, format!("`{key}` is empty"));
            } else {
                found.push((SecretSource::Command(argv), span));
            }
        }
    }
    if let Some(e) = t.string("password_env") {
        found.push((SecretSource::Env(e.value), e.span));
    }
    if let Some(c) = t.string("password_credential") {
        found.push((SecretSource::Credential(c.value), c.span));
    }
    if found.len() > 1 {
        ctx.error(
            found[1].1.clone(),
            "give only one of password_file, password_command, token_command, password_env, password_credential",
        );
    }
    if found.is_empty() && required {
        ctx.error(
            t.span.clone(),
            format!(
                "{} needs a password source: password_file, password_command, password_env or password_credential",
                t.what()
            ),
        );
    }
    found.into_iter().next().map(|(s, _)| s)
}

fn read_mailbox(
    ctx: &Ctx,
    mut t: Table<'_>,
    base: &Path,
    default_folders: &Folders,
) -> Option<(MailboxConfig, std::ops::Range<usize>)> {
    let span = t.span.clone();
    let name = t.required_string("name");
    if let Some(n) = &name {
        t.set_what(format!("mailbox {:?}", n.value));
    }
    let kind_s = t.required_string("kind");
    let addresses = t.strings("addresses").unwrap_or_default();
    let sent_folders: Vec<String> = t
        .strings("sent_folders")
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.value)
        .collect();
    for a in &addresses {
        check_address(ctx, a);
    }
    let folders = read_folders(t.table("folders", "[mailbox.folders]"), default_folders);
    let kind = match kind_s.as_ref().map(|k| k.value.as_str()) {
        Some("maildir") => {
            let path = t.required_string("path");
            path.map(|p| MailboxKind::Maildir {
                path: resolve(base, &p.value),
            })
        }
        Some("imap") => read_imap(ctx, &mut t, base).map(MailboxKind::Imap),
        Some(other) => {
            if let Some(k) = &kind_s {
                ctx.error(
                    k.span.clone(),
                    format!("unknown mailbox kind {other:?}; use \"imap\" or \"maildir\""),
                );
            }
            None
        }
        None => None,
    };
    t.finish();
    let name = name?;
    Some((
        MailboxConfig {
            name: name.value,
            kind: kind?,
            addresses: addresses.into_iter().map(|a| a.value).collect(),
            folders,
            sent_folders,
            location: ctx.location(&span),
        },
        name.span,
    ))
}

fn read_imap(ctx: &Ctx, t: &mut Table<'_>, base: &Path) -> Option<ImapConfig> {
    let host = t.required_string("host");
    let tls = read_tls(t, Tls::Implicit);
    let port = t.integer("port");
    let tls_span = tls.clone();
    let tls = tls.value;
    let port = match port {
        Some(p) if (1..=65535).contains(&p.value) => p.value as u16,
        Some(p) => {
            ctx.error(p.span, "`port` must be between 1 and 65535");
            0
        }
        None => match tls {
            Tls::Implicit => 993,
            _ => 143,
        },
    };
    let username = t.required_string("username");
    let auth = read_auth(t);
    let secret = read_secret(t, base, true);
    let folder = t.string("folder").map_or("INBOX".into(), |f| f.value);
    let idle = t.boolean("idle").is_none_or(|b| b.value);
    let poll_interval = t
        .duration("poll_interval")
        .map_or(Duration::from_secs(60), |d| {
            d.value.max(Duration::from_secs(1))
        });
    let batch_size = t
        .integer("batch_size")
        .map_or(100, |b| b.value.clamp(1, 1000) as u32);
    let file_every = t
        .integer("file_every")
        .map_or(crate::daemon::FILE_EVERY as u32, |b| {
            b.value.clamp(1, 100_000) as u32
        });
    let timeout = t.duration("timeout").map_or(Duration::from_secs(60), |d| {
        d.value.max(Duration::from_secs(1))
    });
    let danger = t.boolean("danger_accept_invalid_certs");
    check_transport(ctx, "IMAP", host.as_ref(), &tls_span, danger.as_ref());
    let danger = danger.is_some_and(|b| b.value);
    let use_move = t.boolean("use_move").is_none_or(|b| b.value);
    Some(ImapConfig {
        host: host?.value,
        port,
        tls,
        username: username?.value,
        auth,
        secret: secret?,
        folder,
        idle,
        poll_interval,
        batch_size,
        file_every,
        timeout,
        danger_accept_invalid_certs: danger,
        use_move,
    })
}

fn read_outbound(ctx: &Ctx, t: Option<Table<'_>>, base: &Path) -> OutboundConfig {
    let default = OutboundConfig::File {
        dir: base.join("outbox"),
    };
    let Some(mut t) = t else {
        return default;
    };
    let kind = t.required_string("kind");
    let out = match kind.as_ref().map(|k| k.value.as_str()) {
        Some("file") => OutboundConfig::File {
            dir: t
                .string("dir")
                .map_or_else(|| base.join("outbox"), |d| resolve(base, &d.value)),
        },
        Some("smtp") => {
            let host = t.required_string("host");
            let tls_span = read_tls(&mut t, Tls::StartTls);
            let tls = tls_span.value;
            let port = match t.integer("port") {
                Some(p) if (1..=65535).contains(&p.value) => p.value as u16,
                Some(p) => {
                    ctx.error(p.span, "`port` must be between 1 and 65535");
                    0
                }
                None => match tls {
                    Tls::Implicit => 465,
                    Tls::StartTls => 587,
                    Tls::None => 25,
                },
            };
            let username = t.string("username").map(|u| u.value);
            let auth = read_auth(&mut t);
            let secret = read_secret(&mut t, base, username.is_some());
            let timeout = t.duration("timeout").map_or(Duration::from_secs(60), |d| {
                d.value.max(Duration::from_secs(1))
            });
            let pool_size = t
                .integer("pool_size")
                .map_or(4, |p| p.value.clamp(1, 64) as u32);
            let danger = t.boolean("danger_accept_invalid_certs");
            check_transport(ctx, "SMTP", host.as_ref(), &tls_span, danger.as_ref());
            let danger = danger.is_some_and(|b| b.value);
            match host {
                Some(h) => OutboundConfig::Smtp(SmtpConfig {
                    host: h.value,
                    port,
                    tls,
                    username,
                    auth,
                    secret,
                    timeout,
                    pool_size,
                    danger_accept_invalid_certs: danger,
                }),
                None => default,
            }
        }
        Some(other) => {
            if let Some(k) = &kind {
                ctx.error(
                    k.span.clone(),
                    format!("unknown outbound kind {other:?}; use \"smtp\" or \"file\""),
                );
            }
            default
        }
        None => default,
    };
    t.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = dir.path().join("switchboard.toml");
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        Config::load(&p).map(|(c, _)| c).map_err(|d| {
            d.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    #[test]
    fn minimal_config_has_sane_defaults() {
        let c = load_str("[reply]\nfrom = \"Shop <help@shop.example>\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.domain, "shop.example");
        assert!(c.auto_reply);
        assert_eq!(c.limits.per_sender_interval, Duration::from_secs(86400));
        assert!(
            c.all_our_addresses()
                .contains(&"help@shop.example".to_string())
        );
        assert!(matches!(c.outbound, OutboundConfig::File { .. }));
        assert!(c.store.url.starts_with("sqlite://"));
    }

    #[test]
    fn every_error_is_reported_with_position() {
        let e = load_str(
            "auto_replies = true\n[limits]\nper_sender_interval = \"soon\"\n[[mailbox]]\nname = \"a\"\nkind = \"imap\"\nhost = \"h\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains("DIR/switchboard.toml:1:1: unknown key `auto_replies` in the top level; did you mean `auto_reply`?"), "{e}");
        assert!(
            e.contains("DIR/switchboard.toml:3:23: `per_sender_interval`: cannot read \"soon\""),
            "{e}"
        );
        assert!(e.contains("DIR/switchboard.toml:9:"), "{e}");
        assert!(
            e.contains("passwords are never written in the config"),
            "{e}"
        );
        // The secret itself never appears in a message.
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn imap_mailbox() {
        let c = load_str(
            "[[mailbox]]\nname = \"support\"\nkind = \"imap\"\nhost = \"imap.example.com\"\nusername = \"support\"\npassword_env = \"SUPPORT_PW\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let MailboxKind::Imap(i) = &c.mailboxes[0].kind else {
            panic!("not imap");
        };
        assert_eq!(i.port, 993);
        assert_eq!(i.tls, Tls::Implicit);
        assert_eq!(i.secret, SecretSource::Env("SUPPORT_PW".into()));
    }

    /// Issue: `tls = "none"` was accepted for any host, and a remote
    /// server received `LOGIN "u" "password"` in clear.
    #[test]
    fn cleartext_only_on_loopback() {
        let imap = |host: &str, extra: &str| {
            format!(
                "[[mailbox]]\nname = \"s\"\nkind = \"imap\"\nhost = \"{host}\"\nusername = \"u\"\npassword_env = \"PW\"\n{extra}"
            )
        };
        let e = load_str(&imap("imap.example.com", "tls = \"none\"\n"))
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("DIR/switchboard.toml:7:7: `tls = \"none\"` would send the IMAP password"),
            "{e}"
        );
        for host in ["127.0.0.1", "localhost", "::1", "127.0.0.2"] {
            assert!(load_str(&imap(host, "tls = \"none\"\n")).is_ok(), "{host}");
        }
        let e =
            load_str("[outbound]\nkind = \"smtp\"\nhost = \"smtp.example.com\"\ntls = \"none\"\n")
                .err()
                .unwrap_or_default();
        assert!(e.contains("would send the SMTP password"), "{e}");
        // Invalid certificates for a remote host: a warning, not silence.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("switchboard.toml");
        std::fs::write(
            &p,
            imap("imap.example.com", "danger_accept_invalid_certs = true\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, warnings) = Config::load(&p).unwrap_or_else(|d| panic!("{d}"));
        assert!(
            warnings
                .to_string()
                .contains("warning: `danger_accept_invalid_certs = true` for imap.example.com"),
            "{warnings}"
        );
    }
}
