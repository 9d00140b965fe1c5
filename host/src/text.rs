//! Cutting untrusted or unbounded text (policy reasons and messages, errors)
//! to a size, without splitting a UTF-8 character.

/// The longest prefix of `s` of at most `max_bytes` bytes.
pub fn prefix_within(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut cut = max_bytes;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// `s` cut to at most `max_bytes` bytes plus `…` when it was longer. A cut
/// string is a new, small allocation: keeping the original's capacity would
/// let a policy make the host hold its whole oversized buffer.
pub fn bounded(s: String, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s;
    }
    let mut out = String::with_capacity(max_bytes + '…'.len_utf8());
    out.push_str(prefix_within(&s, max_bytes));
    out.push('…');
    out
}

/// Text from a policy, fit for a log line: cut to `max_bytes` (see
/// [`bounded`]), then made [`printable`].
pub fn loggable(s: String, max_bytes: usize) -> String {
    let s = bounded(s, max_bytes);
    match printable(&s) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// `s` with control characters (newlines, carriage returns, escapes)
/// written as escapes, so text from a policy stays on one log line and
/// cannot pose as scour's own output.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_between_characters() {
        assert_eq!(prefix_within("héllo", 2), "h", "é is two bytes");
        assert_eq!(prefix_within("héllo", 3), "hé");
        assert_eq!(prefix_within("short", 10), "short");
        assert_eq!(bounded("héllo".into(), 2), "h…");
        assert_eq!(bounded("héllo".into(), 6), "héllo");
        assert!(
            bounded("x".repeat(1 << 20), 8).capacity() < 16,
            "a cut string is a new allocation"
        );
    }

    #[test]
    fn control_characters_become_escapes() {
        assert_eq!(printable("plain text, ünicode"), "plain text, ünicode");
        assert_eq!(printable("one\nINFO fake\r\u{1b}[31m"), "one\\nINFO fake\\r\\u{1b}[31m");
    }
}
