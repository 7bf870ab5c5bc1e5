//! TSIG keys from files in BIND's `tsig-keygen` format:
//!
//! ```text
//! key "ddns" {
//!         algorithm hmac-sha256;
//!         secret "kG0k4...=";
//! };
//! ```

use std::fmt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result, ResultExt};

/// The HMAC algorithms lanyard signs updates with. Weaker ones (hmac-md5, hmac-sha1,
/// hmac-sha224) are refused when a key file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    /// The algorithm's name as BIND writes it (also its TSIG algorithm name, RFC 8945).
    pub fn name(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    pub(crate) fn to_hickory(self) -> hickory_proto::rr::rdata::tsig::TsigAlgorithm {
        use hickory_proto::rr::rdata::tsig::TsigAlgorithm as H;
        match self {
            TsigAlgorithm::HmacSha256 => H::HmacSha256,
            TsigAlgorithm::HmacSha384 => H::HmacSha384,
            TsigAlgorithm::HmacSha512 => H::HmacSha512,
        }
    }
}

/// A shared TSIG secret. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name as the server knows it (`key "NAME"`), without a trailing dot.
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .finish()
    }
}

impl TsigKey {
    /// Reads the one `key` statement of a `tsig-keygen` file.
    pub fn from_file(path: &Path) -> Result<TsigKey> {
        let text = std::fs::read_to_string(path)
            .with_context(ErrorKind::Io, || format!("read the TSIG key file {}", path.display()))?;
        TsigKey::parse(&text).map_err(|e| e.context(format!("TSIG key file {}", path.display())))
    }

    /// Parses the text of a `tsig-keygen` file: exactly one `key "NAME" { algorithm ALG;
    /// secret "BASE64"; };` statement; `#`, `//` and `/* */` comments are allowed.
    pub fn parse(text: &str) -> Result<TsigKey> {
        let tokens = tokenize(text)?;
        let mut keys = Vec::new();
        let mut rest = tokens.as_slice();
        while let Some((first, tail)) = rest.split_first() {
            match first {
                Token::Word(w) if w == "key" => {
                    let (key, after) = parse_key(tail)?;
                    keys.push(key);
                    rest = after;
                }
                other => {
                    return Err(Error::usage(format!(
                        "expected a `key \"NAME\" {{ ... }};` statement, found {other}"
                    )))
                }
            }
        }
        match keys.len() {
            1 => Ok(keys.remove(0)),
            0 => Err(Error::usage(
                "no `key` statement (make one with `tsig-keygen -a hmac-sha256 NAME`)",
            )),
            n => Err(Error::usage(format!(
                "{n} `key` statements; lanyard signs with one key: keep one per file"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semicolon,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "`{w}`"),
            Token::Quoted(q) => write!(f, "\"{q}\""),
            Token::Open => f.write_str("`{`"),
            Token::Close => f.write_str("`}`"),
            Token::Semicolon => f.write_str("`;`"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                let mut closed = false;
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    previous = c;
                }
                if !closed {
                    return Err(Error::usage("a `/*` comment is not closed"));
                }
            }
            '{' => tokens.push(Token::Open),
            '}' => tokens.push(Token::Close),
            ';' => tokens.push(Token::Semicolon),
            '"' => {
                let mut quoted = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    quoted.push(c);
                }
                if !closed {
                    return Err(Error::usage("a quoted string is not closed"));
                }
                tokens.push(Token::Quoted(quoted));
            }
            c => {
                let mut word = String::from(c);
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// `"NAME" { algorithm ALG; secret "BASE64"; };` after the `key` keyword.
fn parse_key(tokens: &[Token]) -> Result<(TsigKey, &[Token])> {
    let (name, rest) = match tokens.split_first() {
        Some((Token::Quoted(n) | Token::Word(n), rest)) => {
            (n.trim_end_matches('.').to_string(), rest)
        }
        _ => return Err(Error::usage("`key` must be followed by the key's name")),
    };
    if name.is_empty() || hickory_proto::rr::Name::from_ascii(&name).is_err() {
        return Err(Error::usage(format!("key name {name:?} is not a valid DNS name")));
    }
    let mut rest = match rest.split_first() {
        Some((Token::Open, rest)) => rest,
        _ => return Err(Error::usage(format!("key \"{name}\": expected `{{` after the name"))),
    };
    let (mut algorithm, mut secret) = (None, None);
    loop {
        match rest {
            [Token::Close, Token::Semicolon, tail @ ..] => {
                rest = tail;
                break;
            }
            [Token::Word(field), value, Token::Semicolon, tail @ ..] => {
                let value = match value {
                    Token::Word(v) | Token::Quoted(v) => v.clone(),
                    other => {
                        return Err(Error::usage(format!(
                            "key \"{name}\": `{field}` needs a value, found {other}"
                        )))
                    }
                };
                match field.as_str() {
                    "algorithm" => algorithm = Some(parse_algorithm(&name, &value)?),
                    "secret" => secret = Some(parse_secret(&name, &value)?),
                    other => {
                        return Err(Error::usage(format!(
                        "key \"{name}\": unknown field `{other}` (expected algorithm and secret)"
                    )))
                    }
                }
                rest = tail;
            }
            [] => return Err(Error::usage(format!("key \"{name}\": missing `}};` at the end"))),
            [other, ..] => {
                return Err(Error::usage(format!("key \"{name}\": unexpected {other}")));
            }
        }
    }
    let algorithm = algorithm.ok_or_else(|| {
        Error::usage(format!("key \"{name}\": no `algorithm` (hmac-sha256 or stronger)"))
    })?;
    let secret = secret.ok_or_else(|| Error::usage(format!("key \"{name}\": no `secret`")))?;
    Ok((TsigKey { name, algorithm, secret }, rest))
}

fn parse_algorithm(name: &str, value: &str) -> Result<TsigAlgorithm> {
    match value.to_ascii_lowercase().trim_end_matches('.') {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        "hmac-md5" | "hmac-md5.sig-alg.reg.int" | "hmac-sha1" | "hmac-sha224" => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "key \"{name}\": algorithm {value} is too weak for lanyard: make a key with \
                     `tsig-keygen -a hmac-sha256 {name}` (or hmac-sha384, hmac-sha512)"
            ),
        )),
        other => Err(Error::usage(format!(
            "key \"{name}\": unknown algorithm {other:?} (expected hmac-sha256, hmac-sha384 or \
             hmac-sha512)"
        ))),
    }
}

fn parse_secret(name: &str, value: &str) -> Result<Vec<u8>> {
    // BIND accepts the base64 split by white space (inside the quotes).
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let secret = data_encoding::BASE64.decode(compact.as_bytes()).map_err(|e| {
        Error::usage(format!("key \"{name}\": the secret is not valid base64 ({e})"))
    })?;
    if secret.is_empty() {
        return Err(Error::usage(format!("key \"{name}\": the secret is empty")));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated by `tsig-keygen -a hmac-sha256 ddns` (BIND 9.18).
    const KEYGEN: &str = "key \"ddns\" {\n\talgorithm hmac-sha256;\n\tsecret \"SQ8RkOESyqy1u97safyX0UZ84f5aFhewHTS1OlHTOhk=\";\n};\n";

    #[test]
    fn reads_tsig_keygen_output() {
        let key = TsigKey::parse(KEYGEN).unwrap();
        assert_eq!(key.name, "ddns");
        assert_eq!(key.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(key.secret.len(), 32);
        assert_eq!(&key.secret[..3], &[0x49, 0x0f, 0x11]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("SQ8R"), "Debug shows the secret: {shown}");
    }

    #[test]
    fn reads_other_algorithms_comments_and_trailing_dots() {
        let text = "# made by hand\nkey ddns.example. { // the update key\n algorithm HMAC-SHA512; /* strong */ secret \"AAEC AwQ=\"; };";
        let key = TsigKey::parse(text).unwrap();
        assert_eq!(key.name, "ddns.example");
        assert_eq!(key.algorithm, TsigAlgorithm::HmacSha512);
        assert_eq!(key.secret, vec![0, 1, 2, 3, 4]);
        let key = TsigKey::parse("key \"k\" { algorithm hmac-sha384; secret \"AA==\"; };").unwrap();
        assert_eq!(key.algorithm, TsigAlgorithm::HmacSha384);
    }

    #[test]
    fn refuses_weak_unknown_and_malformed_keys() {
        let refusal = |text: &str| TsigKey::parse(text).unwrap_err();
        let weak = refusal("key \"k\" { algorithm hmac-md5; secret \"AA==\"; };");
        assert_eq!(weak.kind(), ErrorKind::Unsupported);
        assert!(weak.to_string().contains("tsig-keygen -a hmac-sha256 k"), "{weak}");
        assert!(refusal("key \"k\" { algorithm hmac-sha1; secret \"AA==\"; };")
            .to_string()
            .contains("too weak"));
        let unknown = refusal("key \"k\" { algorithm rot13; secret \"AA==\"; };");
        assert_eq!(unknown.kind(), ErrorKind::Usage);
        assert!(refusal("key \"k\" { algorithm hmac-sha256; secret \"not base64!\"; };")
            .to_string()
            .contains("not valid base64"));
        assert!(refusal("key \"k\" { secret \"AA==\"; };").to_string().contains("no `algorithm`"));
        assert!(refusal("key \"k\" { algorithm hmac-sha256; };")
            .to_string()
            .contains("no `secret`"));
        assert!(refusal("key \"k\" { algorithm hmac-sha256; secret \"AA==\";")
            .to_string()
            .contains("missing"));
        assert!(refusal("").to_string().contains("no `key` statement"));
        assert!(refusal(&format!("{KEYGEN}{KEYGEN}")).to_string().contains("2 `key` statements"));
        assert!(refusal("options { };").to_string().contains("expected a `key"));
        assert!(refusal("key \"k\" { algorithm hmac-sha256; secret \"AA==")
            .to_string()
            .contains("not closed"));
    }

    #[test]
    fn from_file_names_the_file() {
        let err = TsigKey::from_file(Path::new("/nonexistent/ddns.key")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ddns.key"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
