//! Tests of the daemon's settings: defaults, flags over the file, refusals.
#![allow(clippy::unwrap_used)] // tests may panic on failure
use super::*;

#[test]
fn non_loopback_without_token_is_refused() {
    let args = ServeArgs {
        listen: Some("0.0.0.0:8080".parse().unwrap()),
        ..ServeArgs::default()
    };
    let e = ServeConfig::resolve(args, PathBuf::from("d")).unwrap_err();
    assert!(e.to_string().contains("without an API token"), "{e}");
    let args = ServeArgs {
        listen: Some("0.0.0.0:8080".parse().unwrap()),
        tokens: vec!["a-long-enough-token".to_owned()],
        ..ServeArgs::default()
    };
    assert!(ServeConfig::resolve(args, PathBuf::from("d")).is_ok());
}

#[test]
fn per_subscription_defaults_to_the_loops_and_the_flag_sets_it() {
    let c = ServeConfig::resolve(ServeArgs::default(), PathBuf::from("d")).unwrap();
    assert_eq!(c.delivery.per_subscription, 16);
    assert_eq!(c.delivery.concurrency, 64);
    let args = ServeArgs {
        per_subscription: Some(6),
        ..ServeArgs::default()
    };
    let c = ServeConfig::resolve(args, PathBuf::from("d")).unwrap();
    assert_eq!(c.delivery.per_subscription, 6);
}

#[test]
fn zero_requests_in_flight_is_refused_when_the_settings_are_read() {
    for args in [
        ServeArgs {
            per_subscription: Some(0),
            ..ServeArgs::default()
        },
        ServeArgs {
            concurrency: Some(0),
            ..ServeArgs::default()
        },
    ] {
        let err = ServeConfig::resolve(args, PathBuf::from("d")).unwrap_err();
        assert!(
            matches!(&err, CliError::Input(m) if m.contains("must be at least 1")),
            "{err}"
        );
    }
}

#[test]
fn file_settings_apply_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookspool.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9999\"\nretry_schedule = [\"1s\", \"2m\"]\nconcurrency = 7\n\
         per_subscription = 6\nallow_networks = [\"10.1.0.0/16\"]\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        concurrency: Some(9),
        ..ServeArgs::default()
    };
    let c = ServeConfig::resolve(args, PathBuf::from("d")).unwrap();
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(
        c.delivery.schedule.delays,
        [Duration::from_secs(1), Duration::from_mins(2)]
    );
    assert_eq!(c.delivery.concurrency, 9, "the flag wins over the file");
    assert_eq!(c.delivery.per_subscription, 6, "from the file");
    assert!(c.delivery.http.policy.permits("10.1.2.3".parse().unwrap()));

    std::fs::write(&path, "lisen = \"x\"\n").unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..ServeArgs::default()
    };
    let e = ServeConfig::resolve(args, PathBuf::from("d")).unwrap_err();
    assert!(
        e.to_string().contains("lisen"),
        "an unknown setting is named: {e}"
    );
}

/// Every bad `[channels.NAME]` or `[[sources]]` entry is refused with a message naming it.
#[test]
fn bad_channels_and_sources_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookspool.toml");
    let cases = [
        ("[channels.\"hookspool.x\"]\n", "reserved"),
        ("[channels.\"bad id!\"]\n", "bad id!"),
        (
            "[channels.orders]\nsecret = \"not-whsec\"\n",
            "not a whsec_ secret",
        ),
        ("[channels.orders]\ncommand = []\n", "must name a program"),
        ("[channels.orders]\ncolour = 1\n", "colour"),
        (
            "[[sources]]\nurl = \"http://a:1\"\nevent = \"e.*\"\nchannel = \"nope\"\n",
            "add a [channels.nope] table",
        ),
        (
            "[channels.orders]\n[[sources]]\nurl = \"ftp://a\"\nevent = \"e\"\n\
             channel = \"orders\"\n",
            "ftp://a",
        ),
        (
            "listen = \"0.0.0.0:1\"\ntokens = [\"a-long-enough-token\"]\n\
             [channels.orders]\n[[sources]]\nurl = \"http://a:1\"\nevent = \"e\"\n\
             channel = \"orders\"\n",
            "public_url",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&path, text).unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(args, PathBuf::from("d")).unwrap_err();
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
    std::fs::write(
        &path,
        "[channels.orders]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         command = [\"true\"]\n[[sources]]\nurl = \"http://a:1\"\nevent = \"e.*\"\n\
         channel = \"orders\"\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..ServeArgs::default()
    };
    let c = ServeConfig::resolve(args, PathBuf::from("d")).unwrap();
    assert_eq!((c.channels.len(), c.sources.len()), (1, 1));
    assert!(
        !format!("{c:?}").contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "the channel secret is masked in Debug"
    );
}

#[test]
fn tokens_are_masked_in_debug() {
    let args = ServeArgs {
        tokens: vec!["a-very-secret-token-1".to_owned()],
        ..ServeArgs::default()
    };
    let c = ServeConfig::resolve(args, PathBuf::from("d")).unwrap();
    assert!(!format!("{c:?}").contains("a-very-secret-token-1"));
}

/// The data directory decides the backend unless `--backend` names one; naming the
/// other durable one than the directory holds is refused.
#[test]
fn the_backend_follows_the_data_directory() {
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(BackendKind::detect(empty.path()), None);
    assert_eq!(backend(None, empty.path()).unwrap(), BackendKind::Journal);
    assert_eq!(
        backend(Some(BackendKind::Sled), empty.path()).unwrap(),
        BackendKind::Sled
    );

    let sled = tempfile::tempdir().unwrap();
    drop(SledBackend::open(sled.path()).unwrap());
    assert_eq!(BackendKind::detect(sled.path()), Some(BackendKind::Sled));
    assert_eq!(backend(None, sled.path()).unwrap(), BackendKind::Sled);
    let e = backend(Some(BackendKind::Journal), sled.path()).unwrap_err();
    assert!(
        e.to_string().contains("holds a sled store, not journal"),
        "{e}"
    );

    let journal = tempfile::tempdir().unwrap();
    drop(JournalBackend::open(journal.path()).unwrap());
    assert_eq!(
        BackendKind::detect(journal.path()),
        Some(BackendKind::Journal)
    );
    assert_eq!(
        backend(Some(BackendKind::Memory), journal.path()).unwrap(),
        BackendKind::Memory
    );
}

#[test]
fn the_claim_pause_defaults_by_backend_and_the_flag_or_file_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    let journal = ServeConfig::resolve(ServeArgs::default(), dir.path().to_owned()).unwrap();
    assert_eq!(journal.delivery.claim_pause, Duration::ZERO);
    let database = || ServeArgs {
        database_url: Some("postgresql://app@db.example/app".to_owned()),
        ..ServeArgs::default()
    };
    let postgres = ServeConfig::resolve(database(), dir.path().to_owned()).unwrap();
    assert_eq!(postgres.backend, BackendKind::Postgres);
    assert_eq!(postgres.delivery.claim_pause, Duration::from_millis(5));
    let args = ServeArgs {
        claim_pause: Some(Duration::ZERO),
        ..database()
    };
    let c = ServeConfig::resolve(args, dir.path().to_owned()).unwrap();
    assert_eq!(c.delivery.claim_pause, Duration::ZERO);
    let path = dir.path().join("hookspool.toml");
    std::fs::write(&path, "claim_pause = \"20ms\"\n").unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..ServeArgs::default()
    };
    let c = ServeConfig::resolve(args, dir.path().to_owned()).unwrap();
    assert_eq!(c.delivery.claim_pause, Duration::from_millis(20));
    std::fs::write(&path, "claim_pause = \"soon\"\n").unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..ServeArgs::default()
    };
    let e = ServeConfig::resolve(args, dir.path().to_owned()).unwrap_err();
    assert!(
        e.to_string().contains("config `claim_pause` = \"soon\""),
        "{e}"
    );
    let args = ServeArgs {
        claim_pause: Some(Duration::from_secs(5)),
        ..database()
    };
    let e = ServeConfig::resolve(args, dir.path().to_owned()).unwrap_err();
    assert!(e.to_string().contains("must be at most 1s"), "{e}");
}

#[test]
fn the_snapshot_warning_defaults_to_a_minute_and_the_flag_or_file_sets_or_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let database = || ServeArgs {
        database_url: Some("postgresql://app@db.example/app".to_owned()),
        ..ServeArgs::default()
    };
    let warning = |args: ServeArgs| {
        let c = ServeConfig::resolve(args, dir.path().to_owned()).unwrap();
        let db = c.database.expect("a database");
        assert_eq!(db.options().snapshot_warning, db.snapshot_warning);
        db.snapshot_warning
    };
    assert_eq!(warning(database()), Some(Duration::from_mins(1)));
    for (flag, expected) in [
        ("off", None),
        ("OFF", None),
        ("2m", Some(Duration::from_mins(2))),
        ("500ms", Some(Duration::from_millis(500))),
    ] {
        let args = ServeArgs {
            database_snapshot_warning: Some(parse_warn_after(flag).unwrap()),
            ..database()
        };
        assert_eq!(
            warning(args),
            expected,
            "--database-snapshot-warning {flag}"
        );
    }
    let e = parse_warn_after("soon").unwrap_err();
    assert!(e.contains("\"soon\"") && e.contains("`off`"), "{e}");

    let path = dir.path().join("hookspool.toml");
    let from_file = |text: &str| {
        std::fs::write(&path, text).unwrap();
        ServeConfig::resolve(
            ServeArgs {
                config: Some(path.clone()),
                ..database()
            },
            dir.path().to_owned(),
        )
    };
    let c = from_file("database_snapshot_warning = \"5m\"\n").unwrap();
    assert_eq!(
        c.database.unwrap().snapshot_warning,
        Some(Duration::from_mins(5))
    );
    let c = from_file("database_snapshot_warning = \"off\"\n").unwrap();
    assert_eq!(c.database.unwrap().snapshot_warning, None);
    let e = from_file("database_snapshot_warning = \"soon\"\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("config `database_snapshot_warning` = \"soon\""),
        "{e}"
    );
    // The flag wins over the file.
    std::fs::write(&path, "database_snapshot_warning = \"5m\"\n").unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        database_snapshot_warning: Some(WarnAfter(None)),
        ..database()
    };
    assert_eq!(warning(args), None);
}
