//! Full-text search (`_text` on the narrative, `_content` on the whole resource): the words of a
//! text, normalized like string values (lower case, no accents), indexed as string rows of the
//! parameter. A search word matches a resource that has a word starting with it; the words of one
//! value must all match (`_content=food bank`), comma-separated values are alternatives.

use serde_json::Value;

use super::extract::normalize;

/// Most characters of one indexed word; search words are cut the same way, so a longer word
/// still matches by its first characters.
pub const MAX_WORD_CHARS: usize = 40;

/// Most distinct words indexed per resource and parameter (a narrative of a few pages).
pub const MAX_WORDS: usize = 1_000;

/// The search words of a `_text` / `_content` value.
pub fn search_words(value: &str) -> Vec<String> {
    let mut words = Words::new(usize::MAX);
    words.add(value);
    words.list
}

/// The distinct words of a resource's narrative (`text.div`), for `_text`.
pub fn narrative_words(resource: &Value) -> Vec<String> {
    let mut words = Words::new(MAX_WORDS);
    if let Some(div) = resource["text"]["div"].as_str() {
        words.add(&xhtml_text(div));
    }
    words.list
}

/// The distinct words of every text value of a resource, its narrative included, for
/// `_content`. Identifiers of the machinery (ids, references, URLs, code systems, binary data)
/// are left out: they are searched by their own parameters and only add noise here.
pub fn content_words(resource: &Value) -> Vec<String> {
    let mut words = Words::new(MAX_WORDS);
    walk(resource, &mut words);
    words.list
}

fn walk(value: &Value, words: &mut Words) {
    if words.full() {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("div", Value::String(div)) => words.add(&xhtml_text(div)),
                    (
                        "resourceType" | "id" | "reference" | "system" | "url" | "data" | "fullUrl"
                        | "profile" | "versionId" | "lastUpdated" | "source" | "contentType"
                        | "language",
                        _,
                    ) => {}
                    (_, Value::String(text)) => words.add(text),
                    (_, nested) => walk(nested, words),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(text) => words.add(text),
                    nested => walk(nested, words),
                }
            }
        }
        _ => {}
    }
}

/// Distinct normalized words in the order met, up to a limit.
struct Words {
    list: Vec<String>,
    seen: rustc_hash::FxHashSet<String>,
    limit: usize,
}

impl Words {
    fn new(limit: usize) -> Self {
        Words {
            list: Vec::new(),
            seen: rustc_hash::FxHashSet::default(),
            limit,
        }
    }

    fn full(&self) -> bool {
        self.list.len() >= self.limit
    }

    /// Adds the words of `text`: runs of letters and digits, one-character words left out.
    fn add(&mut self, text: &str) {
        for raw in text.split(|c: char| !c.is_alphanumeric()) {
            if self.full() {
                return;
            }
            if raw.chars().nth(1).is_none() {
                continue;
            }
            let mut word = normalize(raw);
            if let Some((at, _)) = word.char_indices().nth(MAX_WORD_CHARS) {
                word.truncate(at);
            }
            if self.seen.insert(word.clone()) {
                self.list.push(word);
            }
        }
    }
}

/// The text of an XHTML fragment: tags dropped (each acts as a space), the common entities and
/// character references decoded.
fn xhtml_text(xhtml: &str) -> String {
    let mut text = String::with_capacity(xhtml.len());
    let mut rest = xhtml;
    while let Some(at) = rest.find(['<', '&']) {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => rest = &rest[end + 1..],
                None => rest = "",
            }
            text.push(' ');
            continue;
        }
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            text.push('&');
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
            "nbsp" => Some(' '),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                text.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                text.push('&');
                rest = &rest[1..];
            }
        }
    }
    text.push_str(rest);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn narrative_words_come_from_the_xhtml_text() {
        let patient = json!({"resourceType":"Patient","text":{"status":"generated",
            "div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Needs <b>food</b>&amp;housing; caf&#233; M&#xFC;nchen &bogus; a</p></div>"}});
        assert_eq!(
            narrative_words(&patient),
            ["needs", "food", "housing", "cafe", "munchen", "bogus"]
        );
    }

    #[test]
    fn content_words_skip_identifiers_of_the_machinery() {
        let observation = json!({"resourceType":"Observation","id":"obs123","status":"final",
            "subject":{"reference":"Patient/p1","display":"Ana Muñoz"},
            "code":{"coding":[{"system":"http://loinc.org","code":"88122-7","display":"Worried food would run out"}]},
            "note":[{"text":"Lives with grandmother, food bank referral"}],
            "valueString":"Often true"});
        let words = content_words(&observation);
        for word in [
            "final",
            "ana",
            "munoz",
            "88122",
            "worried",
            "food",
            "grandmother",
            "often",
        ] {
            assert!(words.contains(&word.to_string()), "{word} in {words:?}");
        }
        for word in ["obs123", "p1", "http", "loinc", "observation"] {
            assert!(!words.contains(&word.to_string()), "{word} in {words:?}");
        }
        assert_eq!(words.iter().filter(|w| *w == "food").count(), 1);
    }

    #[test]
    fn words_are_bounded() {
        let long = "x".repeat(500);
        assert_eq!(search_words(&long)[0].len(), MAX_WORD_CHARS);
        let many: String = (0..5_000).map(|i| format!("w{i} ")).collect();
        let resource = json!({"resourceType":"Basic","code":{"text":many}});
        assert_eq!(content_words(&resource).len(), MAX_WORDS);
        assert_eq!(xhtml_text("<div>a &"), " a &");
    }
}
