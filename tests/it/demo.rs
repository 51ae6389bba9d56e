//! The bundled demo runs end to end and files every message somewhere.

use switchboard::daemon::drain;

#[tokio::test]
async fn demo_files_every_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (shared, mut md, path, cfg) = crate::common::demo_pipeline(dir.path(), None).await;
    let path = &path;
    let info = switchboard::daemon::mailbox_info(&cfg.mailboxes[0]);
    let total = switchboard::demo::message_count();
    assert!(total >= 30, "the demo has {total} messages");
    let outcomes = drain(&mut md, &shared, &info)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcomes.len(), total);
    // The inbox is empty, and every message is in exactly one folder.
    assert!(md.list("INBOX").is_empty());
    let mut filed = 0;
    for entry in std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && entry.path().is_dir() && name != ".Sent" {
            filed += md.list(&name[1..].replace('.', "/")).len();
        }
    }
    assert_eq!(filed, total);
    // Every reply went out once and a copy is in Sent.
    let replies = outcomes.iter().filter(|o| o.verdict == "reply").count();
    assert!(replies >= 5, "only {replies} automatic replies");
    let outbox_files = std::fs::read_dir(dir.path().join("examples/demo/outbox"))
        .map(|r| {
            r.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(outbox_files, replies);
    assert_eq!(md.list("Sent").len(), replies);
    // Order lookups against the demo's orders.db: the owner gets the
    // order's real status and tracking; anyone else gets no data and a
    // person; a delayed order goes to a person.
    let of = |from: &str| {
        outcomes
            .iter()
            .find(|o| o.from == from)
            .unwrap_or_else(|| panic!("no outcome for {from}"))
    };
    let sent: Vec<String> = std::fs::read_dir(dir.path().join("examples/demo/outbox"))
        .map(|r| {
            r.flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    for (from, tracking) in [
        ("priya.nair@customer.test", "JD014600009988776655"),
        ("tom.hartley@gmail.example", "JD014600003724512345"),
    ] {
        let o = of(from);
        assert_eq!(o.verdict, "reply", "{o:?}");
        let mail = sent
            .iter()
            .find(|m| m.contains(from))
            .unwrap_or_else(|| panic!("no reply to {from}"));
        assert!(mail.contains(tracking), "{mail}");
    }
    let guessed = of("sam.reed@mailbox.example");
    assert_eq!(guessed.verdict, "route", "{guessed:?}");
    assert!(
        guessed.why.contains("belongs to someone else"),
        "{guessed:?}"
    );
    assert!(
        !sent
            .iter()
            .any(|m| m.contains("JD014600009988776655") && !m.contains("priya.nair@")),
        "order data went to someone else"
    );
    let delayed = of("ben.carter@customer.test");
    assert_eq!(delayed.verdict, "route", "{delayed:?}");
    // A second run finds nothing to do and sends nothing.
    let again = drain(&mut md, &shared, &info)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.is_empty());
}
