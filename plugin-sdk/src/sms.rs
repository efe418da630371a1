//! SMS length as carriers count it: GSM-7 when every character is in the GSM
//! 03.38 alphabet (extension characters such as `€ [ ] { }` take two septets),
//! otherwise UCS-2 for the whole message (one Chinese character or emoji is
//! enough; characters outside the BMP take two UTF-16 units). A single message
//! holds 160 septets or 70 UCS-2 units; a concatenated one 153 or 67 per part,
//! and a character is never split across parts.

/// The encoding a message is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// How a text will be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsCount {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    pub segments: usize,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets a character takes in GSM-7, or None if it is not in the alphabet.
pub fn gsm7_cost(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Counts encoding, units and segments of `text`.
pub fn count(text: &str) -> SmsCount {
    let gsm: Option<Vec<usize>> = text.chars().map(gsm7_cost).collect();
    let (encoding, costs, single, part) = match gsm {
        Some(costs) => (Encoding::Gsm7, costs, 160, 153),
        None => (Encoding::Ucs2, text.chars().map(char::len_utf16).collect(), 70, 67),
    };
    let units: usize = costs.iter().sum();
    let segments = if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        // Fill parts in order; a character that does not fit starts the next part.
        let mut segments = 1;
        let mut used = 0;
        for cost in costs {
            if used + cost > part {
                segments += 1;
                used = 0;
            }
            used += cost;
        }
        segments
    };
    SmsCount {
        encoding,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_boundaries() {
        assert_eq!(
            count(&"a".repeat(160)),
            SmsCount {
                encoding: Encoding::Gsm7,
                units: 160,
                segments: 1
            }
        );
        assert_eq!(count(&"a".repeat(161)).segments, 2);
        assert_eq!(count(&"a".repeat(306)).segments, 2);
        assert_eq!(count(&"a".repeat(307)).segments, 3);
        assert_eq!(count("").segments, 0);
    }

    #[test]
    fn extension_characters_count_two_and_do_not_split() {
        assert_eq!(
            count(&"€".repeat(80)),
            SmsCount {
                encoding: Encoding::Gsm7,
                units: 160,
                segments: 1
            }
        );
        assert_eq!(count(&format!("{}€", "a".repeat(159))).segments, 2);
        // 152 septets then a 2-septet character: it moves to the second part, so
        // 306 septets, which would fit two parts if characters could be split, need three.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(count(&text).units, 306);
        assert_eq!(count(&text).segments, 3);
        assert_eq!(count(&"a".repeat(306)).segments, 2);
    }

    #[test]
    fn ucs2_boundaries_and_surrogates() {
        assert_eq!(
            count(&"中".repeat(70)),
            SmsCount {
                encoding: Encoding::Ucs2,
                units: 70,
                segments: 1
            }
        );
        assert_eq!(count(&"中".repeat(71)).segments, 2);
        assert_eq!(count(&"中".repeat(134)).segments, 2);
        assert_eq!(count(&"中".repeat(135)).segments, 3);
        // One non-GSM character makes the whole message UCS-2.
        let mixed = format!("{}中", "a".repeat(69));
        assert_eq!(
            count(&mixed),
            SmsCount {
                encoding: Encoding::Ucs2,
                units: 70,
                segments: 1
            }
        );
        assert_eq!(count("😀").units, 2);
        // 66 units then an emoji (2 units) does not fit the 67-unit part.
        let text = format!("{}😀{}", "中".repeat(66), "中".repeat(10));
        assert_eq!(count(&text).segments, 2);
        let text = format!("{}😀", "中".repeat(69));
        assert_eq!(count(&text).units, 71);
        assert_eq!(count(&text).segments, 2);
    }
}
