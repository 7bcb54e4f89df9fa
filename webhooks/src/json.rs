//! JSON text as hookspool shows it: compacted onto one line without re-encoding (key order
//! and every value kept as stored). Used by the API's delivery and item views and the CLI.

/// Removes the whitespace between the tokens of valid JSON text (never inside strings),
/// keeping everything else, key order included, exactly as stored: how a JSON payload is
/// shown on one line (JSON lines, tables) without re-serializing it.
pub fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::compact_json;

    #[test]
    fn compact_json_keeps_strings_and_key_order_intact() {
        assert_eq!(
            compact_json("{ \"z b\" : \"c \\\" d\" ,\n\t\"a\": [1, 2] }"),
            "{\"z b\":\"c \\\" d\",\"a\":[1,2]}"
        );
    }
}
