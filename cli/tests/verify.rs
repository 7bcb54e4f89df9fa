//! `hookspool verify`: on a data directory with one flipped byte in one item's payload it
//! reports that item by queue and key and exits 1; `--quarantine` moves it to `corrupt`; a
//! directory a daemon is using is refused with exit 3, and `--url` has the daemon check it.

#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::path::Path;
use std::process::Output;

use support::{hookspool, sigterm, start};

fn run(dir: &Path, args: &[&str]) -> Output {
    hookspool()
        .env_remove("HOOKSPOOL_URL")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Runs and checks the exit code; returns stdout and stderr.
fn exits(dir: &Path, args: &[&str], code: i32) -> (String, String) {
    let o = run(dir, args);
    let (out, err) = (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    );
    assert_eq!(o.status.code(), Some(code), "{args:?}: {out} {err}");
    (out, err)
}

/// Flips one byte of the payload holding `mark`, in whichever file of `dir` holds it.
fn damage(dir: &Path, mark: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(mark.len()).position(|w| w == mark.as_bytes()) {
            bytes[at + 1] ^= 0x20;
            std::fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("{mark} is in no file");
}

#[test]
fn verify_reports_damage_by_queue_and_key_and_quarantines_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    exits(&dir, &["queue", "create", "q"], 0);
    for n in 1..=3 {
        let data = format!(r#"{{"mark":"<item {n}>"}}"#);
        exits(&dir, &["push", "q", "--data", &data], 0);
    }
    let (_, err) = exits(&dir, &["verify"], 0);
    assert_eq!(err, "checked 3 items in 1 queues: 0 damaged\n");
    damage(&dir, "<item 2>");

    let (out, err) = exits(&dir, &["verify"], 1);
    assert!(
        out.starts_with("q 2: ") && out.contains("checksum"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("1 damaged"), "{err}");
    let (out, _) = exits(&dir, &["verify", "--json"], 1);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (line["queue"].as_str(), line["key"].as_u64()),
        (Some("q"), Some(2))
    );
    // Verifying changed nothing; --quarantine moves the item.
    exits(&dir, &["count", "q", "--phase", "pending"], 0);
    assert_eq!(
        exits(&dir, &["count", "q", "--phase", "corrupt"], 0).0,
        "0\n"
    );
    let (_, err) = exits(&dir, &["verify", "--quarantine"], 1);
    assert!(err.contains("1 damaged, 1 quarantined"), "{err}");
    assert_eq!(
        exits(&dir, &["count", "q", "--phase", "corrupt"], 0).0,
        "1\n"
    );

    // In use by a daemon: refused like every offline command; through --url it answers.
    let (mut daemon, addr) = start(&dir, &[]);
    let (_, err) = exits(&dir, &["verify"], 3);
    assert!(err.contains("--url"), "{err}");
    let url = format!("http://{addr}");
    let (out, _) = exits(&dir, &["--url", &url, "verify"], 1);
    assert!(out.starts_with("q 2: quarantined: "), "{out}");
    exits(&dir, &["--url", &url, "delete", "q", "2"], 0);
    let (_, err) = exits(&dir, &["--url", &url, "verify"], 0);
    assert!(err.contains(" 0 damaged"), "{err}");
    sigterm(&daemon);
    assert!(daemon.wait().unwrap().success());
}
