//! How an SMS text travels: in the GSM 03.38 7-bit alphabet when every character is in it (with
//! its extension table, whose characters take two septets), otherwise in UCS-2 (UTF-16 code
//! units: a character outside the Basic Multilingual Plane, such as most emoji, takes two). A text
//! longer than one segment is split into concatenated segments, each losing room to the
//! concatenation header: 160 → 153 septets, 70 → 67 code units. Providers bill per segment.

/// The encoding an SMS text needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GSM 03.38, 7 bits per character (extension characters take two).
    Gsm7,
    /// UCS-2 / UTF-16, 16 bits per code unit.
    Ucs2,
}

/// How a text splits into SMS segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// The encoding it needs.
    pub encoding: Encoding,
    /// Its length in the encoding's units (septets or UTF-16 code units).
    pub units: usize,
    /// How many segments it takes (0 for an empty text).
    pub count: usize,
}

/// GSM 03.38's basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38's extension table (each character is an escape and itself: two septets).
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

/// The segments `text` takes.
pub fn segments(text: &str) -> Segments {
    let mut septets = 0;
    let mut gsm7 = true;
    for character in text.chars() {
        if GSM7_BASIC.contains(character) {
            septets += 1;
        } else if GSM7_EXTENSION.contains(character) {
            septets += 2;
        } else {
            gsm7 = false;
            break;
        }
    }
    let (encoding, units, single, concatenated) =
        if gsm7 { (Encoding::Gsm7, septets, 160, 153) } else { (Encoding::Ucs2, text.encode_utf16().count(), 70, 67) };
    let count = match units {
        0 => 0,
        units if units <= single => 1,
        units => units.div_ceil(concatenated),
    };
    Segments { encoding, units, count }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_texts_are_gsm7() {
        assert_eq!(segments(""), Segments { encoding: Encoding::Gsm7, units: 0, count: 0 });
        assert_eq!(
            segments("Your appointment is confirmed."),
            Segments { encoding: Encoding::Gsm7, units: 30, count: 1 }
        );
        assert_eq!(segments(&"a".repeat(160)).count, 1);
        assert_eq!(segments(&"a".repeat(161)).count, 2, "161 septets: two segments of at most 153");
        assert_eq!(segments(&"a".repeat(306)).count, 2);
        assert_eq!(segments(&"a".repeat(307)).count, 3);
        // £, é, Ñ, ¿ are in the basic set; €, [ and ] take an escape each.
        assert_eq!(segments("£5 à Málaga?").encoding, Encoding::Ucs2, "á is not in GSM 03.38");
        assert_eq!(segments("¿Qué tal? 5£"), Segments { encoding: Encoding::Gsm7, units: 12, count: 1 });
        assert_eq!(segments("Total: 20€ [paid]").units, 20);
        assert_eq!(segments(&"€".repeat(80)).count, 1, "80 euro signs are 160 septets");
        assert_eq!(segments(&"€".repeat(81)).count, 2);
    }

    #[test]
    fn anything_else_is_ucs2() {
        assert_eq!(segments("Привет"), Segments { encoding: Encoding::Ucs2, units: 6, count: 1 });
        assert_eq!(segments(&"ж".repeat(70)).count, 1);
        assert_eq!(segments(&"ж".repeat(71)).count, 2, "71 code units: two segments of at most 67");
        // An emoji outside the BMP is two UTF-16 code units, and one turns the whole text UCS-2.
        assert_eq!(segments("See you soon 👋"), Segments { encoding: Encoding::Ucs2, units: 15, count: 1 });
        assert_eq!(segments(&format!("{}👋", "a".repeat(69))).count, 2);
    }
}
