//! What configuration files of both binaries share: turning a parser's error (its message and
//! the byte span it points at) into one line that names the line and the key.

use std::ops::Range;

/// "line L, key `K`: MESSAGE" (or "line L: MESSAGE" when the line has no key), on one line.
pub fn locate_error(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let message = message.trim().replace('\n', " ");
    let Some(span) = span else { return message };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split_once('=').map(|(key, _)| key.trim()).filter(|k| !k.is_empty() && !k.starts_with('#'));
    match key {
        Some(key) => format!("line {line_no}, key `{key}`: {message}"),
        None => format!("line {line_no}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_line_and_the_key() {
        let text = "a = 1\nbee = \"x\"\n";
        assert_eq!(locate_error(text, Some(6..9), "bad\nthing"), "line 2, key `bee`: bad thing");
        assert_eq!(locate_error(text, Some(0..1), "no"), "line 1, key `a`: no");
        assert_eq!(locate_error("[table\n", Some(0..1), "unclosed"), "line 1: unclosed");
        assert_eq!(locate_error(text, None, "whole file"), "whole file");
        assert_eq!(locate_error(text, Some(999..1000), "past the end"), "line 3: past the end");
    }
}
