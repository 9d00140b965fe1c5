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

/// `s` cut to at most `max_bytes` bytes plus `…` when it was longer.
pub fn bounded(mut s: String, max_bytes: usize) -> String {
    if s.len() > max_bytes {
        let cut = prefix_within(&s, max_bytes).len();
        s.truncate(cut);
        s.push('…');
    }
    s
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
    }
}
