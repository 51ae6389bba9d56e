//! Admin errors: every problem, with the exact `path:line:col`.

use switchboard::config::Config;
use switchboard::knowledge::Knowledge;

use crate::common::{BASE_CONFIG, BASE_RULES, Setup, write};

/// Loads the setup and returns all diagnostics as text with the temp dir
/// replaced by `T`.
fn problems(setup: &Setup) -> String {
    let text = match Config::load(&setup.path("switchboard.toml")) {
        Err(d) => d.to_string(),
        Ok((cfg, _)) => match Knowledge::load(&cfg) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        },
    };
    text.replace(&setup.dir.path().display().to_string(), "T")
}

#[test]
fn bad_toml_reports_the_syntax_error_position() {
    let setup = Setup::new("[[rule]]\nname = \"x\nroute = \"support\"\n");
    let p = problems(&setup);
    assert!(p.contains("T/rules/00-rules.toml:"), "{p}");
    assert!(p.contains("TOML syntax error"), "{p}");
}

#[test]
fn unknown_key_with_suggestion() {
    let rules = "[[rule]]\nname = \"billing\"\nwhen = { subject = { contains = \"invoice\" } }\nroute = \"billing\"\nflagg = [\"x\"]\n";
    let setup = Setup::new(rules);
    let p = problems(&setup);
    // BASE_RULES has 10 lines before the inserted text (which starts after a newline).
    let line = BASE_RULES.lines().count() + 1 + 5;
    assert!(
        p.contains(&format!("T/rules/00-rules.toml:{line}:1: unknown key `flagg` in rule \"billing\"; did you mean `flag`?")),
        "{p}"
    );
}

#[test]
fn bad_regex_points_at_the_pattern() {
    let rules = "[[rule]]\nname = \"r\"\nwhen = { body = { regex = 'order (\\d+' } }\nroute = \"support\"\n";
    let setup = Setup::new(rules);
    let p = problems(&setup);
    let line = BASE_RULES.lines().count() + 1 + 3;
    assert!(
        p.contains(&format!(
            "T/rules/00-rules.toml:{line}:27: invalid regex \"order (\\\\d+\": unclosed group"
        )),
        "{p}"
    );
}

#[test]
fn missing_template_undefined_queue_and_duplicates_all_at_once() {
    let rules = "[[rule]]\nname = \"a\"\nreply = \"thank-you\"\n\n[[rule]]\nname = \"b\"\nroute = \"biling\"\n\n[[rule]]\nname = \"a\"\nroute = \"support\"\n";
    let setup = Setup::new(rules);
    write(
        &setup.path("rules/faq/dup.toml"),
        "[[entry]]\nid = \"opening-hours\"\ntemplate = \"faq/nope\"\nexamples = [\"x\"]\n",
    );
    let p = problems(&setup);
    let base = BASE_RULES.lines().count() + 1;
    for want in [
        format!(
            "T/rules/00-rules.toml:{}:9: template \"thank-you\" not found",
            base + 3
        ),
        format!(
            "T/rules/00-rules.toml:{}:9: queue \"biling\" is not defined: add a [[queue]] with name = \"biling\"; did you mean \"billing\"?",
            base + 7
        ),
        format!(
            "T/rules/00-rules.toml:{}:1: rule name \"a\" is already used at T/rules/00-rules.toml:{}:1",
            base + 9,
            base + 1
        ),
        "T/rules/faq/faq.toml:2:1: duplicate FAQ id \"opening-hours\"".to_string(),
        "T/rules/faq/dup.toml:3:12: template \"faq/nope\" not found".to_string(),
    ] {
        assert!(p.contains(&want), "missing {want:?} in:\n{p}");
    }
}

#[test]
fn config_errors_are_all_reported() {
    let cfg = format!(
        "{BASE_CONFIG}\n[limits]\nmax_replies_per_hour = \"many\"\nper_sender_intervall = \"1d\"\n"
    );
    let setup = Setup::with(&cfg, BASE_RULES);
    let p = problems(&setup);
    let base = BASE_CONFIG.lines().count() + 2;
    assert!(
        p.contains(&format!(
            "T/switchboard.toml:{}:24: `max_replies_per_hour` must be an integer, not a string",
            base + 1
        )),
        "{p}"
    );
    assert!(p.contains(&format!("T/switchboard.toml:{}:1: unknown key `per_sender_intervall` in [limits]; did you mean `per_sender_interval`?", base + 2)), "{p}");
}

#[test]
fn template_with_unknown_variable() {
    let setup = Setup::new("");
    write(
        &setup.path("templates/ack.txt.j2"),
        "Hello\n  {{ customer.nmae }}\n",
    );
    let p = problems(&setup);
    assert!(
        p.contains(
            "T/templates/ack.txt.j2:2:6: `customer` has no field `nmae`; it has: name, email"
        ),
        "{p}"
    );
}

#[test]
fn clean_setup_has_no_problems() {
    let setup = Setup::new("");
    assert_eq!(problems(&setup), "");
}
