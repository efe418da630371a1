//! Storage faults through the real binary: a disk that fills up under the
//! running daemon, and a database it is not allowed to write. Both use a real
//! small filesystem (tmpfs) that the test mounts, so they need root; where the
//! test cannot mount one it says so and skips.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use common::{Nudge, SmtpServer, scratch, wait_until};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

/// A tmpfs of a few MiB mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "nudge-test"])
            .arg(path)
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!(
                "skipped: cannot mount a tmpfs at {} (the test needs root)",
                path.display()
            );
            return None;
        }
        Some(SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Writes a file until the disk has no room left.
    fn fill(&self) -> PathBuf {
        let ballast = self.path.join("ballast");
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // The last partial chunk may still fit in smaller writes.
        while file.write_all(&chunk[..512]).is_ok() {}
        ballast
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn stage_change(nudge: &Nudge, email: &str) -> (u16, Value) {
    let body = json!({"name": "Disk Lead", "company": "Full Ltd", "email": email, "stage": "intent"});
    nudge.http("POST", "/stage-changes", Some(&body.to_string()))
}

/// The disk under the database fills while the daemon takes stage changes
/// and sends their emails, and is freed two seconds after the first write
/// fails. Meanwhile writes are refused and `/health` and `nudge status` say
/// the store cannot write; afterwards the daemon recovers by itself. Every
/// accepted stage change's email reaches the SMTP server, and none more often
/// than the bound on sends in flight (here none at all: the daemon never
/// stopped, so nothing it sent was forgotten).
#[test]
fn a_full_disk_refuses_writes_then_recovers_by_itself_losing_and_repeating_nothing() {
    const CONCURRENCY: usize = 4;
    let tmp = scratch();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "12m") else {
        return;
    };
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::with_database(
        &smtp,
        MONDAY_9AM,
        Some(&disk.path.join("nudge.db")),
        &format!("[delivery]\nconcurrency = {CONCURRENCY}\n"),
    );
    nudge.start();

    let accepted = Mutex::new(Vec::new());
    let refused = Mutex::new(Vec::new());
    let post = |email: String| {
        let (status, answer) = stage_change(&nudge, &email);
        match status {
            202 => accepted.lock().unwrap().push(email),
            500..=599 => refused.lock().unwrap().push((email, answer)),
            _ => panic!("{email}: {status} {answer}"),
        }
    };
    for i in 0..40 {
        post(format!("before-{i}@example.com"));
    }

    let ballast = disk.fill();
    // Writes go on until one meets the full disk, which the daemon then reports.
    let mut i = 0;
    let health = wait_until(
        || {
            post(format!("during-{i}@example.com"));
            i += 1;
            let (status, body) = nudge.http("GET", "/health", None);
            (status == 503).then_some(body)
        },
        || format!("no write failed on the full disk\n{}", nudge.log()),
    );
    assert!(health["store"].as_str().unwrap().contains("cannot write"), "{health}");
    let status = nudge.status();
    assert_eq!(status["store"]["writable"], false, "{status:#}");
    assert!(
        status["store"]["error"].as_str().unwrap().contains("disk is full"),
        "{status:#}"
    );
    // Two seconds of a full disk, with writes still coming.
    for _ in 0..8 {
        post(format!("during-{i}@example.com"));
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    std::fs::remove_file(ballast).unwrap();

    // The daemon recovers by itself: writes are accepted again, including
    // those the client had to resend.
    for (email, _) in std::mem::take(&mut *refused.lock().unwrap()) {
        let (status, answer) = wait_until(
            || Some(stage_change(&nudge, &email)).filter(|(s, _)| *s == 202),
            || format!("{email} still refused after the disk was freed\n{}", nudge.log()),
        );
        assert_eq!(status, 202, "{answer}");
        accepted.lock().unwrap().push(email);
    }
    for i in 0..40 {
        post(format!("after-{i}@example.com"));
    }
    assert!(refused.lock().unwrap().is_empty(), "{:?}", refused.lock().unwrap());
    let accepted = accepted.into_inner().unwrap();

    let sent_to = |smtp: &SmtpServer| {
        let mut to: Vec<String> = smtp.mails().into_iter().flat_map(|m| m.to).collect();
        to.sort();
        to.dedup();
        to
    };
    wait_until(
        || (sent_to(&smtp).len() >= accepted.len()).then_some(()),
        || {
            format!(
                "{} of {} recipients reached\n{:#}\n{}",
                sent_to(&smtp).len(),
                accepted.len(),
                nudge.status(),
                nudge.log()
            )
        },
    );
    nudge.settle();
    assert_eq!(nudge.http("GET", "/health", None).0, 200);
    assert_eq!(nudge.status()["store"]["writable"], true);

    // Checked by Message-ID: every queued message reached the server, none
    // more than the bound on unrecorded sends.
    let mails = smtp.mails();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for mail in &mails {
        *copies.entry(mail.message_id.as_str()).or_default() += 1;
    }
    let rows = nudge.query("SELECT message_id, status FROM outbox");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), accepted.len(), "one email per accepted stage change");
    for row in rows {
        let id = row[0].as_str().unwrap();
        assert_eq!(row[1], "sent", "{row}");
        assert!(copies.contains_key(id), "{id} never reached the server");
    }
    let repeated: usize = copies.values().map(|n| n - 1).sum();
    assert!(
        repeated <= 2 * CONCURRENCY,
        "{repeated} repeated sends, more than the {} in flight: {copies:?}",
        2 * CONCURRENCY
    );
    for email in &accepted {
        assert!(sent_to(&smtp).contains(email), "{email} got nothing");
    }
    nudge.stop();
}

/// A database on a read-only filesystem: the daemon refuses to start and
/// says which file, why, and what to do, instead of an SQLite code from
/// whatever first tried to write.
#[test]
fn a_read_only_database_is_named_with_its_cause_at_start() {
    let tmp = scratch();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "8m") else {
        return;
    };
    let smtp = SmtpServer::start(tmp.path());
    let database = disk.path.join("nudge.db");
    let nudge = Nudge::with_database(&smtp, MONDAY_9AM, Some(&database), "");
    nudge.cli(&["status"]);
    disk.remount("ro");
    let (ok, _, stderr) = nudge.try_cli(&["run"]);
    assert!(!ok, "started on a read-only database");
    assert!(stderr.contains(&database.display().to_string()), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(stderr.contains("writable"), "{stderr}");
    assert!(
        !stderr.contains("code: 14") && !stderr.contains("readonly database"),
        "{stderr}"
    );
    disk.remount("rw");
}
