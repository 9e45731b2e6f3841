//! Encodings for `encode()`/`decode()` (base64, base64url, hex) and `escape()`/`unescape()`
//! (HTML, JSON).

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64_encode(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(char::from(
                    alphabet[((n >> (18 - 6 * position)) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let symbols: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let trimmed = symbols
        .strip_suffix(b"==")
        .or_else(|| symbols.strip_suffix(b"="))
        .unwrap_or(&symbols);
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut buffer = 0_u32;
    let mut bits = 0;
    for symbol in trimmed {
        let value = alphabet.iter().position(|a| a == symbol)?;
        buffer = (buffer << 6) | u32::try_from(value).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// `encode(format)`: `None` for an unknown format.
pub fn encode(text: &str, format: &str) -> Option<String> {
    match format {
        "base64" => Some(base64_encode(text.as_bytes(), STANDARD)),
        "urlbase64" => Some(base64_encode(text.as_bytes(), URL_SAFE)),
        "hex" => Some(text.bytes().map(|b| format!("{b:02x}")).collect()),
        _ => None,
    }
}

/// `decode(format)`: `None` for an unknown format or text that does not decode to UTF-8.
pub fn decode(text: &str, format: &str) -> Option<String> {
    let bytes = match format {
        "base64" => base64_decode(text, STANDARD)?,
        "urlbase64" => base64_decode(text, URL_SAFE)?,
        "hex" => {
            if !text.len().is_multiple_of(2) {
                return None;
            }
            (0..text.len())
                .step_by(2)
                .map(|at| {
                    text.get(at..at + 2)
                        .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                })
                .collect::<Option<Vec<u8>>>()?
        }
        _ => return None,
    };
    String::from_utf8(bytes).ok()
}

/// `escape(target)` for `html` or `json`.
pub fn escape(text: &str, target: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match (target, c) {
            ("html", '&') => out.push_str("&amp;"),
            ("html", '<') => out.push_str("&lt;"),
            ("html", '>') => out.push_str("&gt;"),
            ("html", '"') => out.push_str("&quot;"),
            ("html", '\'') => out.push_str("&#39;"),
            ("json", '"') => out.push_str("\\\""),
            ("json", '\\') => out.push_str("\\\\"),
            ("json", '\n') => out.push_str("\\n"),
            ("json", '\r') => out.push_str("\\r"),
            ("json", '\t') => out.push_str("\\t"),
            ("json", c) if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            ("html" | "json", c) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// `unescape(target)` for `html` or `json`.
pub fn unescape(text: &str, target: &str) -> Option<String> {
    match target {
        "html" => {
            let mut out = String::with_capacity(text.len());
            let mut rest = text;
            while let Some(at) = rest.find('&') {
                out.push_str(&rest[..at]);
                rest = &rest[at..];
                let Some(end) = rest.find(';').filter(|end| *end <= 10) else {
                    out.push('&');
                    rest = &rest[1..];
                    continue;
                };
                let entity = &rest[1..end];
                let decoded = match entity {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => entity
                        .strip_prefix("#x")
                        .or_else(|| entity.strip_prefix("#X"))
                        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                        .or_else(|| entity.strip_prefix('#').and_then(|n| n.parse().ok()))
                        .and_then(char::from_u32),
                };
                match decoded {
                    Some(c) => {
                        out.push(c);
                        rest = &rest[end + 1..];
                    }
                    None => {
                        out.push('&');
                        rest = &rest[1..];
                    }
                }
            }
            out.push_str(rest);
            Some(out)
        }
        "json" => {
            let mut out = String::with_capacity(text.len());
            let mut chars = text.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        out.push(
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)?,
                        );
                    }
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        assert_eq!(
            encode("subjects?_d", "base64").as_deref(),
            Some("c3ViamVjdHM/X2Q=")
        );
        assert_eq!(
            encode("subjects?_d", "urlbase64").as_deref(),
            Some("c3ViamVjdHM_X2Q=")
        );
        assert_eq!(
            decode("c3ViamVjdHM_X2Q=", "urlbase64").as_deref(),
            Some("subjects?_d")
        );
        assert_eq!(decode("dGVzdA==", "base64").as_deref(), Some("test"));
        assert_eq!(encode("test", "hex").as_deref(), Some("74657374"));
        assert_eq!(decode("74657374", "hex").as_deref(), Some("test"));
        assert_eq!(decode("7g", "hex"), None);
        assert_eq!(
            escape("\"1<2\"", "html").as_deref(),
            Some("&quot;1&lt;2&quot;")
        );
        assert_eq!(
            unescape("&quot;1&lt;2&quot;", "html").as_deref(),
            Some("\"1<2\"")
        );
        assert_eq!(escape("\"1<2\"", "json").as_deref(), Some("\\\"1<2\\\""));
        assert_eq!(unescape("\\\"1<2\\\"", "json").as_deref(), Some("\"1<2\""));
    }
}
