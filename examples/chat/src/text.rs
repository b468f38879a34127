//! What text the chat accepts: control characters (NUL first of all) are
//! refused wherever text comes in, and names (of people and rooms) refuse
//! invisible characters and mixed-script look-alikes, and are compared
//! after Unicode normalisation (NFKC) and case folding.

use unicode_normalization::UnicodeNormalization;

/// Why a text was refused; the `Display` text is the field's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Not a string.
    #[error("must be a string")]
    NotAString,
    /// Empty or only whitespace.
    #[error("can't be blank")]
    Blank,
    /// Over the field's length, in characters.
    #[error("should be at most {0} characters")]
    TooLong(usize),
    /// Under the field's length, in characters.
    #[error("should be at least {0} characters")]
    TooShort(usize),
    /// A control character: NUL, the other C0 controls (in a message, line
    /// feed, carriage return and tab are allowed), DEL, or a C1 control.
    #[error("must not contain control characters")]
    Control,
    /// A character that is not seen: zero-width characters, joiners, the
    /// soft hyphen, variation selectors, tags, filler characters.
    #[error("must not contain invisible characters")]
    Invisible,
    /// A character that changes the direction of the text around it
    /// (bidirectional embeddings, overrides, isolates and marks).
    #[error("must not contain bidirectional control characters")]
    Bidi,
    /// Letters of several scripts among Latin, Greek and Cyrillic, whose
    /// letters look alike (`pаypal` with a Cyrillic `а`).
    #[error("must not mix Latin, Greek and Cyrillic letters")]
    MixedScripts,
}

/// Whether `c` is a control character (Unicode general category Cc).
fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Whether `c` changes the direction of text (Unicode's bidirectional
/// formatting characters and marks).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{61c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is shown as nothing (or as a blank that is not a space).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200d}'
            | '\u{2060}'..='\u{2065}'
            | '\u{206a}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// Refuses control characters; `multiline` allows line feed, carriage
/// return and tab (a message's body).
///
/// # Errors
///
/// [`TextError::Control`].
pub fn check_controls(s: &str, multiline: bool) -> Result<(), TextError> {
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if s.chars().any(|c| is_control(c) && !allowed(c)) {
        return Err(TextError::Control);
    }
    Ok(())
}

/// A string field of `max` characters at most, not blank, without
/// control characters (but line breaks and tabs when `multiline`); kept
/// as written.
///
/// # Errors
///
/// See [`TextError`].
pub fn text(v: Option<&serde_json::Value>, max: usize, multiline: bool) -> Result<String, TextError> {
    let s = v.and_then(serde_json::Value::as_str).ok_or(TextError::NotAString)?;
    check_controls(s, multiline)?;
    if s.trim().is_empty() {
        return Err(TextError::Blank);
    }
    if s.chars().count() > max {
        return Err(TextError::TooLong(max));
    }
    Ok(s.to_owned())
}

/// A name as shown and as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// As shown: NFKC-normalised, trimmed, inner runs of whitespace made
    /// one space.
    pub display: String,
    /// As compared (unique): the display form case-folded and normalised
    /// again (NFKC_Casefold, less the characters refused anyway).
    pub key: String,
}

/// Which look-alike script a letter belongs to, if any.
fn script(c: char) -> Option<u8> {
    match c {
        'a'..='z' | 'A'..='Z' | '\u{c0}'..='\u{24f}' | '\u{1e00}'..='\u{1eff}' => Some(0),
        '\u{370}'..='\u{3ff}' | '\u{1f00}'..='\u{1fff}' => Some(1),
        '\u{400}'..='\u{52f}' => Some(2),
        _ => None,
    }
}

/// Checks and normalises a name of at most `max` characters: a person's
/// or a room's.
///
/// # Errors
///
/// [`TextError`]: not a string, blank, too long, control, invisible or
/// bidirectional characters, mixed look-alike scripts.
pub fn name(v: Option<&serde_json::Value>, max: usize) -> Result<Name, TextError> {
    let raw = v.and_then(serde_json::Value::as_str).ok_or(TextError::NotAString)?;
    check_controls(raw, false)?;
    // refused before normalisation, which would drop some of them quietly
    if raw.chars().any(is_bidi) {
        return Err(TextError::Bidi);
    }
    if raw.chars().any(is_invisible) {
        return Err(TextError::Invisible);
    }
    let normal: String = raw.nfkc().collect();
    let display = normal.split_whitespace().collect::<Vec<_>>().join(" ");
    if display.is_empty() {
        return Err(TextError::Blank);
    }
    if display.chars().count() > max {
        return Err(TextError::TooLong(max));
    }
    // NFKC can produce characters refused above (a compatibility form of
    // one): checked again on the result
    check_controls(&display, false)?;
    if display.chars().any(|c| is_bidi(c) || is_invisible(c)) {
        return Err(TextError::Invisible);
    }
    let mut scripts = display.chars().filter_map(script);
    if let Some(first) = scripts.next() {
        if scripts.any(|s| s != first) {
            return Err(TextError::MixedScripts);
        }
    }
    let key: String = fold(&display).nfkc().collect();
    Ok(Name { display, key })
}

/// Full case folding as far as the standard library goes (lowercase), with
/// the folds lowercasing lacks (`ß` to `ss`, final sigma to sigma).
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'ς' => "σ".to_owned(),
            'ß' | 'ẞ' => "ss".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(s: &str) -> Result<Name, TextError> {
        name(Some(&json!(s)), 40)
    }

    #[test]
    fn names_compare_after_nfkc_and_case_folding() {
        let alice = n("Alice").unwrap();
        assert_eq!(alice.display, "Alice");
        for same in ["alice", "ALICE", "Ａｌｉｃｅ", "  alice ", "𝐀lice"] {
            assert_eq!(n(same).unwrap().key, alice.key, "{same}");
        }
        assert_eq!(n("Straße").unwrap().key, n("STRASSE").unwrap().key);
        assert_eq!(n("ann  marie").unwrap().display, "ann marie");
        assert_eq!(n("Zoë").unwrap().key, n("Zoe\u{308}").unwrap().key);
    }

    #[test]
    fn invisible_and_look_alike_tricks_are_refused() {
        assert_eq!(n("al\u{200b}ice"), Err(TextError::Invisible));
        assert_eq!(n("al\u{200d}ice"), Err(TextError::Invisible));
        assert_eq!(n("\u{feff}alice"), Err(TextError::Invisible));
        assert_eq!(n("alice\u{e0041}"), Err(TextError::Invisible));
        assert_eq!(n("\u{202e}ecila"), Err(TextError::Bidi));
        assert_eq!(n("alice\u{2066}"), Err(TextError::Bidi));
        assert_eq!(n("al\u{0}ice"), Err(TextError::Control));
        assert_eq!(n("al\nice"), Err(TextError::Control));
        assert_eq!(n("al\u{85}ice"), Err(TextError::Control));
        // a Cyrillic а among Latin letters
        assert_eq!(n("p\u{430}ypal"), Err(TextError::MixedScripts));
        assert_eq!(n("\u{3b1}lice"), Err(TextError::MixedScripts));
        // one script is fine, digits and punctuation with any
        assert!(n("Алиса").is_ok());
        assert!(n("Ἀλίκη 2").is_ok());
        assert!(n("李小龙").is_ok());
        assert_eq!(n("\u{3000}"), Err(TextError::Blank));
        assert_eq!(n(&"x".repeat(41)), Err(TextError::TooLong(40)));
        assert_eq!(name(Some(&json!(3)), 40), Err(TextError::NotAString));
    }

    #[test]
    fn messages_keep_line_breaks_but_not_other_controls() {
        assert!(text(Some(&json!("a\nb\tc\r\n")), 100, true).is_ok());
        for bad in ["a\u{0}b", "\u{7}", "a\u{1b}[31m", "\u{7f}", "\u{9b}"] {
            assert_eq!(text(Some(&json!(bad)), 100, true), Err(TextError::Control), "{bad:?}");
        }
        assert_eq!(text(Some(&json!("a\nb")), 100, false), Err(TextError::Control));
        assert_eq!(text(Some(&json!(" \n ")), 100, true), Err(TextError::Blank));
    }
}
