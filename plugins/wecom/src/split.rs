//! Splitting content that is over WeCom's size limit into several messages.
//!
//! The rule: while what is left is over `limit` bytes, cut it at the last
//! newline within the first `limit` bytes, else at the last space, else at the
//! last character boundary; a newline or space that a cut falls on is dropped
//! (it would only start the next message with blank space). So a character is
//! never cut, every part is at most `limit` bytes and never empty, and the parts
//! put back together, with one dropped newline or space after a part where the
//! content has one, give the content back.

/// The parts of `content`, each at most `limit` bytes, in order.
pub fn split(content: &str, limit: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = content;
    while rest.len() > limit {
        // A separator exactly at `limit` still fits (the part ends before it), and
        // one at 0 would leave an empty part.
        let window = &rest.as_bytes()[1..=limit];
        let separator = window
            .iter()
            .rposition(|&b| b == b'\n')
            .or_else(|| window.iter().rposition(|&b| b == b' '));
        match separator {
            // ASCII bytes never occur inside a multi-byte UTF-8 character, so this is a boundary.
            Some(index) => {
                let at = index + 1;
                parts.push(&rest[..at]);
                rest = &rest[at + 1..];
            }
            None => {
                let at = floor_char_boundary(rest, limit);
                parts.push(&rest[..at]);
                rest = &rest[at..];
            }
        }
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

/// The last character boundary at or before `index`, but past the first
/// character, so that a limit smaller than a character still makes progress.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let first_char_len = text.chars().next().map_or(0, char::len_utf8);
    (1..=index)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(first_char_len)
        .max(first_char_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MARKDOWN_LIMIT, TEXT_LIMIT};

    /// Checks the module's rule: parts are non-empty, within the limit, whole
    /// UTF-8, and give back `content` when the dropped separators are put back.
    fn assert_split_follows_the_rule(content: &str, parts: &[&str], limit: usize) {
        let mut position = 0;
        for (number, part) in parts.iter().enumerate() {
            assert!(!part.is_empty(), "part {number} is empty");
            assert!(
                part.len() <= limit,
                "part {number} is {} bytes, over {limit}",
                part.len()
            );
            assert!(
                std::str::from_utf8(part.as_bytes()).is_ok(),
                "part {number} is not whole UTF-8"
            );
            assert!(
                content[position..].starts_with(part),
                "part {number} is not the next piece of the content"
            );
            position += part.len();
            if content[position..].starts_with(['\n', ' ']) {
                position += 1;
            }
        }
        assert_eq!(position, content.len(), "the parts do not cover the whole content");
    }

    #[test]
    fn text_of_exactly_2048_bytes_is_one_message() {
        // "中" is 3 bytes: 2 + 682 × 3 = 2048.
        let content = format!("ab{}", "中".repeat(682));
        assert_eq!(content.len(), TEXT_LIMIT);
        assert_eq!(split(&content, TEXT_LIMIT), vec![content.as_str()]);
    }

    #[test]
    fn text_of_2049_bytes_is_two_messages_without_cutting_a_character() {
        // 3 + 682 × 3 = 2049; byte 2048 is inside the last "中", so the cut is at 2046.
        let content = format!("abc{}", "中".repeat(682));
        assert_eq!(content.len(), TEXT_LIMIT + 1);
        let parts = split(&content, TEXT_LIMIT);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![2046, 3]);
        assert_eq!(parts[1], "中");
        assert_split_follows_the_rule(&content, &parts, TEXT_LIMIT);
    }

    #[test]
    fn markdown_of_exactly_4096_bytes_is_one_message() {
        // 1 + 1365 × 3 = 4096.
        let content = format!("a{}", "中".repeat(1365));
        assert_eq!(content.len(), MARKDOWN_LIMIT);
        assert_eq!(split(&content, MARKDOWN_LIMIT), vec![content.as_str()]);
    }

    #[test]
    fn markdown_of_4097_bytes_is_two_messages_without_cutting_a_character() {
        // 2 + 1365 × 3 = 4097; the last boundary within 4096 bytes is 4094.
        let content = format!("ab{}", "中".repeat(1365));
        assert_eq!(content.len(), MARKDOWN_LIMIT + 1);
        let parts = split(&content, MARKDOWN_LIMIT);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![4094, 3]);
        assert_split_follows_the_rule(&content, &parts, MARKDOWN_LIMIT);
    }

    #[test]
    fn a_newline_is_preferred_to_a_later_space_and_is_dropped() {
        let content = format!("{}\n{} {}", "中".repeat(600), "中".repeat(40), "中".repeat(600));
        let parts = split(&content, TEXT_LIMIT);
        assert_eq!(
            parts,
            vec!["中".repeat(600), format!("{} {}", "中".repeat(40), "中".repeat(600))]
        );
        assert_split_follows_the_rule(&content, &parts, TEXT_LIMIT);
    }

    #[test]
    fn without_a_newline_the_last_space_is_used() {
        let content = format!("{} {} {}", "字".repeat(300), "字".repeat(300), "字".repeat(300));
        let parts = split(&content, TEXT_LIMIT);
        assert_eq!(
            parts,
            vec![format!("{} {}", "字".repeat(300), "字".repeat(300)), "字".repeat(300)]
        );
        assert_split_follows_the_rule(&content, &parts, TEXT_LIMIT);
    }

    #[test]
    fn a_separator_exactly_at_the_limit_still_splits_there() {
        let content = format!("{}\nrest", "a".repeat(TEXT_LIMIT));
        assert_eq!(
            split(&content, TEXT_LIMIT),
            vec!["a".repeat(TEXT_LIMIT).as_str(), "rest"]
        );
        // A final dropped newline leaves no empty message behind.
        let trailing = format!("{}\n", "a".repeat(TEXT_LIMIT));
        assert_eq!(split(&trailing, TEXT_LIMIT), vec!["a".repeat(TEXT_LIMIT).as_str()]);
        assert_split_follows_the_rule(&trailing, &split(&trailing, TEXT_LIMIT), TEXT_LIMIT);
    }

    #[test]
    fn long_mixed_content_follows_the_rule() {
        let line = "客户 Li 的跟进提醒：请今天回电 📞\n";
        let content = line.repeat(400) + &"emoji🙂".repeat(900);
        for limit in [TEXT_LIMIT, MARKDOWN_LIMIT] {
            let parts = split(&content, limit);
            assert!(parts.len() > 2);
            assert_split_follows_the_rule(&content, &parts, limit);
        }
        assert!(split("", TEXT_LIMIT).is_empty());
    }
}
