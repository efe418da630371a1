//! A real Postfix (Debian's package) as the relay, in its own instance: its own
//! configuration, queue and log under a temp folder, listening on a loopback
//! port. It bounces as a remote server would, minutes later in real life and
//! at once here: a message to `*@gone.test` dies with 5.1.1, one to
//! `*@full.test` with 4.2.2 (given up at once, `maximal_queue_lifetime = 0`),
//! one to `*@ok.test` is taken and discarded. The DSNs go to the return path,
//! whose domain (`bounces.test`) Postfix delivers into a maildir, as the MTA a
//! team runs for its bounce domain would.
//!
//! Postfix must run as root (its master drops privileges to the `postfix` user).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

pub struct Postfix {
    config: PathBuf,
    pub port: u16,
    /// The maildir the bounces are delivered to.
    pub maildir: PathBuf,
    dir: PathBuf,
}

const POSTFIX: &str = "/usr/sbin/postfix";

impl Postfix {
    pub fn start(dir: &Path) -> Postfix {
        assert!(
            Path::new(POSTFIX).exists(),
            "{POSTFIX} is missing: install Debian's postfix package (.ci/run does)"
        );
        let (uid, gid) = postfix_user();
        let root = dir.join("postfix");
        let (config, queue, data) = (root.join("etc"), root.join("queue"), root.join("data"));
        let maildir = root.join("bounces");
        for d in [
            &config,
            &queue,
            &data,
            &maildir.join("new"),
            &maildir.join("cur"),
            &maildir.join("tmp"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        // The postfix user must reach the queue (its chroot-less daemons) and write the maildir.
        for d in [dir, &root] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for d in ["", "new", "cur", "tmp"] {
            std::os::unix::fs::chown(maildir.join(d), Some(uid), Some(gid)).unwrap();
        }
        std::os::unix::fs::chown(&data, Some(uid), None).unwrap();
        let port = free_port();
        std::fs::write(config.join("master.cf"), master_cf(port)).unwrap();
        std::fs::write(config.join("main.cf"), main_cf(&root, uid, gid)).unwrap();
        std::fs::write(
            config.join("transport"),
            "gone.test error:5.1.1 mailbox does not exist\n\
             full.test retry:4.2.2 mailbox full\n\
             ok.test discard:delivered\n",
        )
        .unwrap();
        let postfix = Postfix {
            config,
            port,
            maildir,
            dir: root,
        };
        postfix.run("start");
        super::wait_until(
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
            || format!("postfix never listened on {port}; its log:\n{}", postfix.log()),
        );
        postfix
    }

    fn run(&self, action: &str) {
        let out = Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.config)
            .arg(action)
            .output()
            .unwrap();
        assert!(
            out.status.success() || action == "stop",
            "postfix {action}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The mail files delivered to the maildir's `sub` folder (`new`, `cur`).
    pub fn mails(&self, sub: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.run("stop");
    }
}

fn postfix_user() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postfix"]).output().unwrap();
        assert!(
            out.status.success(),
            "no postfix user: install Debian's postfix package"
        );
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
    };
    (id("-u"), id("-g"))
}

fn main_cf(root: &Path, uid: u32, gid: u32) -> String {
    let root = root.display();
    format!(
        "compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_reject_unlisted_recipient = no
transport_maps = texthash:{root}/etc/transport
maximal_queue_lifetime = 0
bounce_queue_lifetime = 0
smtp_dns_support_level = disabled
virtual_mailbox_domains = bounces.test
virtual_mailbox_base = {root}
virtual_mailbox_maps = static:bounces/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"
    )
}

/// Debian's master.cf with the SMTP listener on `port` and nothing chrooted
/// (the instance's queue is not set up as a chroot).
fn master_cf(port: u16) -> String {
    let proto = std::fs::read_to_string("/etc/postfix/master.cf.proto")
        .or_else(|_| std::fs::read_to_string("/etc/postfix/master.cf"))
        .unwrap();
    proto
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with(['#', ' ', '\t']) || fields.len() < 8 {
                return line.to_string();
            }
            let service = if fields[0] == "smtp" && fields[1] == "inet" {
                format!("127.0.0.1:{port}")
            } else {
                fields[0].to_string()
            };
            let mut out = vec![service.as_str(), fields[1], fields[2], fields[3], "n"];
            out.extend(&fields[5..]);
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
