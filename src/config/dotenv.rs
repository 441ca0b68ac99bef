//! The `.env` file of the working directory: `KEY=VALUE` lines that fill in what the
//! environment does not set (the environment wins), for API keys and base URLs kept
//! out of shell history and crontabs.
//!
//! Lines: blank, `# comment`, `KEY=VALUE` or `export KEY=VALUE`. A value may be
//! `'single quoted'` (taken as written), `"double quoted"` (`\n`, `\"`, `\\` escapes)
//! or bare (trimmed; ` #` starts a comment). Anything else is an error naming the line.

use std::path::Path;

/// A line of a `.env` file that is not a setting.
#[derive(Debug, thiserror::Error)]
#[error("{path}, line {line}: {message}")]
pub struct DotenvError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// The settings of `path`, in file order; none when the file does not exist and
/// `required` is false (the default `.env`; a file named on purpose must be there).
pub fn read(path: &Path, required: bool) -> Result<Vec<(String, String)>, DotenvError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Vec::new()),
        Err(e) => {
            return Err(DotenvError {
                path: path.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            });
        }
    };
    parse(&text).map_err(|(line, message)| DotenvError { path: path.display().to_string(), line, message })
}

/// Parses a `.env` text: the settings, or the first bad line and why.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((number, "expected KEY=VALUE".into()));
        };
        let key = key.trim();
        let valid_key = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((number, format!("{key:?} is not a variable name (letters, digits, _)")));
        }
        let value = value_of(value.trim()).map_err(|m| (number, format!("{key}: {m}")))?;
        if value.contains('\0') {
            return Err((number, format!("{key}: the value holds a NUL character")));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn value_of(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix('\'') {
        let Some(end) = rest.find('\'') else { return Err("the single quote is never closed".into()) };
        return after_quote(&rest[end + 1..]).map(|()| rest[..end].to_string());
    }
    if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return after_quote(&rest[i + 1..]).map(|()| out),
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other @ ('"' | '\\' | '$')) => out.push(other),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => return Err("the double quote is never closed".into()),
                },
                c => out.push(c),
            }
        }
        return Err("the double quote is never closed".into());
    }
    // Bare: up to a comment (a `#` at its start, or after a space or tab).
    let comment = if value.starts_with('#') { Some(0) } else { value.find(" #").or_else(|| value.find("\t#")) };
    let bare = match comment {
        Some(at) => &value[..at],
        None => value,
    };
    Ok(bare.trim().to_string())
}

/// What may follow a closing quote: nothing, or a comment.
fn after_quote(rest: &str) -> Result<(), String> {
    let rest = rest.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected {rest:?} after the closing quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_people_write() {
        let text = "# keys\n\nBUILTWITH_API_KEY=abc+/=  \nexport SIMILARWEB_API_KEY = \"s w\\\"x\" # comment\n\
                    YAHOO_COOKIE_URL='http://127.0.0.1:8080/fc'\nEMPTY=\nBARE=value # note\nNOTE= # only a note\n";
        let got = parse(text).unwrap();
        let want = [
            ("BUILTWITH_API_KEY", "abc+/="),
            ("SIMILARWEB_API_KEY", "s w\"x"),
            ("YAHOO_COOKIE_URL", "http://127.0.0.1:8080/fc"),
            ("EMPTY", ""),
            ("BARE", "value"),
            ("NOTE", ""),
        ];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(parse("A=1\njust words\n").unwrap_err().0, 2);
        assert_eq!(parse("1KEY=x").unwrap_err().0, 1);
        assert!(parse("K=\"open").unwrap_err().1.contains("never closed"));
        assert!(parse("K='a' b").unwrap_err().1.contains("after the closing quote"));
        assert!(parse("K=\"a\\0\"").is_ok() && parse("K=a\0b").unwrap_err().1.contains("NUL"));
        assert_eq!(parse("\u{feff}K=v").unwrap(), [("K".to_string(), "v".to_string())]);
    }
}
