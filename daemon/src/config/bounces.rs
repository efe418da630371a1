//! `[bounces]`: bounces that come back as mail, minutes to days after the relay
//! took the message. Each email goes out with a return path that names it
//! (`bounce+<id>-<tag>@<return_path_domain>`); the mail server that receives
//! mail for that domain delivers the reports into a maildir that nudge reads.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BouncesConfig {
    /// The domain of the return path: its MX must reach the server that fills `maildir`.
    pub(crate) return_path_domain: Spanned<String>,
    /// The local part before `+`.
    #[serde(default = "default_local_part")]
    pub(crate) local_part: Spanned<String>,
    /// The maildir (with `new/` and `cur/`) the reports are delivered to; relative:
    /// to the folder of nudge.toml.
    pub(crate) maildir: PathBuf,
}

fn default_local_part() -> Spanned<String> {
    Spanned::new(0..0, "bounce".into())
}

impl BouncesConfig {
    /// What is wrong with the settings, said so that the admin can fix it, with
    /// the place in nudge.toml of the value that is wrong.
    pub(crate) fn problem(&self) -> Option<(Range<usize>, String)> {
        let domain = self.return_path_domain.get_ref().trim();
        if domain.is_empty() || domain.contains(['@', ' ', '<', '>']) || !domain.contains('.') {
            return Some((
                self.return_path_domain.span(),
                format!(
                    "[bounces] return_path_domain = \"{domain}\" is not a domain: write the domain whose MX \
                     receives the bounces, e.g. \"bounces.example.com\""
                ),
            ));
        }
        let local = self.local_part.get_ref();
        if local.is_empty() || !local.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Some((
                self.local_part.span(),
                format!("[bounces] local_part = \"{local}\" must be letters, digits, '-', '_' or '.', e.g. \"bounce\""),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, load_text as load};

    #[test]
    fn a_return_path_domain_that_is_no_domain_is_named_with_its_line_and_column() {
        let err = load("[email]\nfrom = \"s@example.com\"\n[bounces]\nreturn_path_domain = \"bounce@example.com\"\nmaildir = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nudge.toml:4:22: [bounces] return_path_domain"), "{err}");
        assert!(err.contains("e.g. \"bounces.example.com\""), "{err}");
        let err = load("[bounces]\nreturn_path_domain = \"b.example.com\"\nlocal_part = \"a b\"\nmaildir = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nudge.toml:3:14: [bounces] local_part"), "{err}");
    }

    #[test]
    fn the_maildir_is_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nudge.toml");
        std::fs::write(
            &file,
            "[bounces]\nreturn_path_domain = \"b.example.com\"\nmaildir = \"mail/bounces\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        let bounces = config.bounces.expect("[bounces]");
        assert_eq!(bounces.maildir, dir.path().join("mail/bounces"));
        assert_eq!(bounces.local_part.get_ref(), "bounce");
    }
}
