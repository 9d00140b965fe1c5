//! Label and field selectors with the Kubernetes query syntax.

use std::collections::BTreeSet;

use serde_json::Value;

/// A parsed `labelSelector`: every requirement must hold (comma = AND).
#[derive(Debug, Default)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug)]
struct Requirement {
    key: String,
    op: LabelOp,
}

#[derive(Debug)]
enum LabelOp {
    Exists,
    DoesNotExist,
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Comma,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("identifier '{s}'"),
            Token::Comma => "','".into(),
            Token::Bang => "'!'".into(),
            Token::Eq => "'='".into(),
            Token::DoubleEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Gt => "'>'".into(),
            Token::Lt => "'<'".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
        }
    }
}

fn describe(token: Option<&Token>) -> String {
    token.map_or_else(|| "end of string".into(), Token::describe)
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' | '(' | ')' | '>' | '<' => {
                chars.next();
                tokens.push(match c {
                    ',' => Token::Comma,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '>' => Token::Gt,
                    _ => Token::Lt,
                });
            }
            '=' | '!' => {
                chars.next();
                let double = chars.peek() == Some(&'=');
                if double {
                    chars.next();
                }
                tokens.push(match (c, double) {
                    ('=', false) => Token::Eq,
                    ('=', true) => Token::DoubleEq,
                    ('!', false) => Token::Bang,
                    _ => Token::NotEq,
                });
            }
            _ => {
                let mut ident = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || ",()><=!".contains(c) {
                        break;
                    }
                    ident.push(c);
                    chars.next();
                }
                tokens.push(Token::Ident(ident));
            }
        }
    }
    tokens
}

impl LabelSelector {
    /// Parses the full Kubernetes label selector syntax; the error explains what is malformed.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let tokens = lex(input);
        let mut pos = 0;
        let mut requirements = Vec::new();
        if tokens.is_empty() {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(parse_requirement(&tokens, &mut pos)?);
            match tokens.get(pos) {
                None => break,
                Some(Token::Comma) => {
                    pos += 1;
                    if pos == tokens.len() {
                        return Err("found end of string after ',', expected: a requirement".into());
                    }
                }
                Some(other) => return Err(format!("found {}, expected: ','", other.describe())),
            }
        }
        Ok(Self { requirements })
    }

    /// Whether an object with these labels is selected.
    pub(crate) fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match (&r.op, value) {
                (LabelOp::Exists, v) => v.is_some(),
                (LabelOp::DoesNotExist, v) => v.is_none(),
                (LabelOp::In(set), Some(v)) => set.contains(v),
                (LabelOp::In(_), None) => false,
                (LabelOp::NotIn(set), Some(v)) => !set.contains(v),
                (LabelOp::NotIn(_), None) => true,
                (LabelOp::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v > *n),
                (LabelOp::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v < *n),
                (LabelOp::GreaterThan(_) | LabelOp::LessThan(_), None) => false,
            }
        })
    }
}

fn parse_requirement(tokens: &[Token], pos: &mut usize) -> Result<Requirement, String> {
    if tokens.get(*pos) == Some(&Token::Bang) {
        *pos += 1;
        let key = expect_key(tokens, pos)?;
        return match tokens.get(*pos) {
            None | Some(Token::Comma) => Ok(Requirement {
                key,
                op: LabelOp::DoesNotExist,
            }),
            Some(t) => Err(format!(
                "found {}, expected: ',' or end of string after '!{key}'",
                t.describe()
            )),
        };
    }
    let key = expect_key(tokens, pos)?;
    let op = match tokens.get(*pos) {
        None | Some(Token::Comma) => {
            return Ok(Requirement {
                key,
                op: LabelOp::Exists,
            });
        }
        Some(t) => t.clone(),
    };
    *pos += 1;
    let op = match op {
        Token::Eq | Token::DoubleEq | Token::NotEq => {
            let value = match tokens.get(*pos) {
                Some(Token::Ident(v)) => {
                    *pos += 1;
                    v.clone()
                }
                None | Some(Token::Comma) => String::new(),
                Some(t) => return Err(format!("found {}, expected: a value for key '{key}'", t.describe())),
            };
            validate_value(&value)?;
            let set = BTreeSet::from([value]);
            if op == Token::NotEq {
                LabelOp::NotIn(set)
            } else {
                LabelOp::In(set)
            }
        }
        Token::Gt | Token::Lt => {
            let n = match tokens.get(*pos) {
                Some(Token::Ident(v)) => v
                    .parse::<i64>()
                    .map_err(|_| format!("for 'gt', 'lt' operators, the value must be an integer: '{v}'"))?,
                t => return Err(format!("found {}, expected: an integer for key '{key}'", describe(t))),
            };
            *pos += 1;
            if op == Token::Gt {
                LabelOp::GreaterThan(n)
            } else {
                LabelOp::LessThan(n)
            }
        }
        Token::Ident(word) if word == "in" || word == "notin" => {
            let set = parse_values(tokens, pos)?;
            if word == "in" {
                LabelOp::In(set)
            } else {
                LabelOp::NotIn(set)
            }
        }
        other => {
            return Err(format!(
                "found {}, expected: in, notin, =, ==, !=, gt, lt after key '{key}'",
                other.describe()
            ));
        }
    };
    Ok(Requirement { key, op })
}

fn expect_key(tokens: &[Token], pos: &mut usize) -> Result<String, String> {
    match tokens.get(*pos) {
        Some(Token::Ident(key)) => {
            *pos += 1;
            validate_key(key)?;
            Ok(key.clone())
        }
        t => Err(format!("found {}, expected: !, identifier", describe(t))),
    }
}

fn parse_values(tokens: &[Token], pos: &mut usize) -> Result<BTreeSet<String>, String> {
    if tokens.get(*pos) != Some(&Token::Open) {
        return Err(format!("found {}, expected: '('", describe(tokens.get(*pos))));
    }
    *pos += 1;
    let mut values = BTreeSet::new();
    let mut expect_value = true;
    loop {
        match tokens.get(*pos) {
            Some(Token::Ident(v)) if expect_value => {
                validate_value(v)?;
                values.insert(v.clone());
                expect_value = false;
            }
            Some(Token::Comma) => {
                if expect_value {
                    values.insert(String::new());
                }
                expect_value = true;
            }
            Some(Token::Close) => {
                if expect_value {
                    values.insert(String::new());
                }
                *pos += 1;
                return Ok(values);
            }
            t => return Err(format!("found {}, expected: ',' or ')'", describe(t))),
        }
        *pos += 1;
    }
}

fn is_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

/// Whether `s` is a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253 characters).
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            b.first().is_some_and(alnum) && b.last().is_some_and(alnum) && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) || !is_name_part(name) {
        return Err(format!(
            "invalid label key '{key}': must be an optional DNS subdomain prefix and '/', then 1-63 \
             alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value '{value}': must be empty or 1-63 alphanumerics, '-', '_' or '.', \
             starting and ending with an alphanumeric"
        ))
    }
}

/// A parsed `fieldSelector`: `path=value`, `path==value` or `path!=value` terms joined by commas.
#[derive(Debug, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the selector, accepting only the field paths in `supported`.
    pub(crate) fn parse(input: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in split_unescaped(input) {
            if term.trim().is_empty() {
                continue;
            }
            let (field, equal, value) =
                split_term(&term).ok_or_else(|| format!("invalid selector: '{input}'; can't understand '{term}'"))?;
            let field = field.trim().to_string();
            if !supported.contains(&field.as_str()) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field, equal, unescape(value)));
        }
        Ok(Self { terms })
    }

    /// Whether the object is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let actual = field.split('.').try_fold(object, |v, part| v.get(part));
            let actual = match actual {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Splits on commas that are not escaped with a backslash, keeping the escapes.
fn split_unescaped(input: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            parts.push(String::new());
            continue;
        }
        parts.last_mut().expect("never empty").push(c);
    }
    parts
}

/// Finds the first unescaped operator: returns (field, is-equality, raw value).
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'!' if bytes.get(i + 1) == Some(&b'=') => return Some((&term[..i], false, &term[i + 2..])),
            b'=' if bytes.get(i + 1) == Some(&b'=') => return Some((&term[..i], true, &term[i + 2..])),
            b'=' => return Some((&term[..i], true, &term[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_operators() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "7"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web, db)",
            "app notin (db)",
            "missing notin (db)",
            "app",
            "!missing",
            "app=web,tier=front",
            "n>5",
            "n<8",
            "example.com/missing notin (a)",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s} should match");
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web,db)",
            "missing",
            "!app",
            "app=web,tier=back",
            "n>7",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(Some(&l)),
                "{s} should not match"
            );
        }
        assert!(
            LabelSelector::parse("x=")
                .unwrap()
                .matches(Some(&labels(json!({"x": ""}))))
        );
    }

    #[test]
    fn malformed_label_selectors() {
        for s in [
            "=x",
            "app in (a",
            "app in a",
            "app=(x)",
            "app=web,",
            "!app=x",
            "app notin",
            "-bad=x",
            "a b",
            "n>x",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "a,b"}, "spec": {"nodeName": "n1"}, "status": {}});
        let supported = ["metadata.name", "spec.nodeName", "status.phase"];
        let m = |s: &str| FieldSelector::parse(s, &supported).unwrap().matches(&obj);
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.nodeName==n1,status.phase!=Running"));
        assert!(m("status.phase="));
        assert!(m(r"metadata.name=a\,b"));
        assert!(!m("spec.nodeName!=n1"));
        assert!(FieldSelector::parse("spec.foo=x", &supported).is_err());
        assert!(FieldSelector::parse("spec.nodeName", &supported).is_err());
    }
}
