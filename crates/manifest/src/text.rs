//! Text from an agent, made safe to put before a person.

/// `text` safe to print on a person's terminal: control characters
/// (escape sequences included) and characters that print nothing or
/// reorder what follows (zero-width, bidirectional overrides) are shown as
/// `\u{..}` escapes, so text from the agent cannot move the cursor,
/// recolour or rewrite what the person reads. Newlines and tabs are kept
/// when `multiline`.
pub fn printable(text: &str, multiline: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let keep = multiline && (c == '\n' || c == '\t');
        if (c.is_control() || is_invisible(c)) && !keep {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that print nothing or reorder what follows.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}
