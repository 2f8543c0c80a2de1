//! What a token file holds, read alike by lbd and lbctl.

/// The token a token file's `text` holds: the text without surrounding whitespace, which
/// must be one word on one line (a bearer token can carry neither a space nor a line
/// break, so any other token could never be sent). lbd and lbctl read token files alike.
pub fn token_in(text: &str) -> Result<&str, &'static str> {
    let token = text.trim();
    if token.is_empty() {
        return Err("is empty");
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds more than a token: a token is one line without spaces");
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_holds_one_word_on_one_line() {
        assert_eq!(
            token_in("  s3cret-token-0123456789\n"),
            Ok("s3cret-token-0123456789")
        );
        assert_eq!(token_in(" \n"), Err("is empty"));
        for two in ["first-token\nsecond-token", "a token", "tab\tinside"] {
            assert!(token_in(two).is_err(), "{two:?}");
        }
    }
}
