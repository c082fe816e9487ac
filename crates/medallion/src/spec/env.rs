//! `${VAR}` references in project settings, so secrets stay in the environment, not in the file.

/// Replaces every `${VAR}` in `text` with the environment variable's value (`$$` is a literal `$`).
/// An unset variable or an unterminated reference is an error naming it.
pub fn expand(text: &str) -> Result<String, String> {
    expand_with(text, |name| std::env::var(name).ok())
}

/// [`expand`] with the variables looked up by `lookup`.
pub fn expand_with(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            // Errors give positions, never the text: a setting may hold a secret.
            let at = text.len() - rest.len() + i + 1;
            let end = body.find('}').ok_or_else(|| format!("unterminated `${{` at character {at}"))?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "the `${{…}}` at character {at} does not name an environment variable (letters, digits, `_`)"
                ));
            }
            out.push_str(&lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `text` is well-formed for [`expand`] (references closed and named properly), without
/// needing the variables to be set.
pub fn check(text: &str) -> Result<(), String> {
    expand_with(text, |_| Some(String::new())).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn references_are_replaced_and_errors_name_the_variable() {
        assert_eq!(expand_with("Bearer ${KEY}", env).as_deref(), Ok("Bearer s3cr3t"));
        assert_eq!(expand_with("${KEY}${KEY}", env).as_deref(), Ok("s3cr3ts3cr3t"));
        assert_eq!(expand_with("a$b $$ c$", env).as_deref(), Ok("a$b $ c$"));
        assert_eq!(expand_with("${MISSING}", env), Err("environment variable `MISSING` is not set".to_string()));
        assert_eq!(expand_with("ab${KEY", env), Err("unterminated `${` at character 3".to_string()));
        assert!(expand_with("${A-B}", env).expect_err("bad name").contains("does not name an environment variable"));
        // Issue 22: a typo in a secret never echoes it.
        for text in ["SEKRET${oops", "SEKRET${a-SEKRET}x", "x$$${SEKRET"] {
            let e = expand_with(text, env).expect_err("malformed");
            assert!(!e.contains("SEKRET"), "{e}");
        }
        assert!(check("${ANY_NAME}").is_ok());
    }
}
