//! FHIRPath syntax: tokens and a precedence-climbing parser producing [`Expr`].

use super::FhirPathError;

/// A parsed FHIRPath expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    This,
    Env(String),
    String(String),
    Number(String),
    Bool(bool),
    Identifier(String),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    Union(Box<Expr>, Box<Expr>),
    /// `=` (false) or `!=` (true).
    Equals(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Identifier(String),
    String(String),
    Number(String),
    Env(String),
    Symbol(&'static str),
}

/// The longest expression accepted, in bytes (expressions come from definitions and clients).
const MAX_LENGTH: usize = 4096;
/// The deepest nesting accepted, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

fn tokenize(text: &str) -> Result<Vec<Token>, FhirPathError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Identifier(chars[start..i].iter().collect()));
        } else if c == '`' {
            let start = i + 1;
            i = start;
            while i < chars.len() && chars[i] != '`' {
                i += 1;
            }
            if i >= chars.len() {
                return Err(FhirPathError("unterminated `identifier`".into()));
            }
            tokens.push(Token::Identifier(chars[start..i].iter().collect()));
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || (chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))) {
                i += 1;
            }
            tokens.push(Token::Number(chars[start..i].iter().collect()));
        } else if c == '\'' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(FhirPathError("unterminated string".into())),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let escaped = chars.get(i + 1).copied().ok_or_else(|| FhirPathError("unterminated string".into()))?;
                        value.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(other) => {
                        value.push(*other);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::String(value));
        } else if c == '%' {
            let start = i + 1;
            i = start;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-') {
                i += 1;
            }
            tokens.push(Token::Env(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let symbol = match (two.as_str(), c) {
                ("!=", _) => "!=",
                (_, '.') => ".",
                (_, '(') => "(",
                (_, ')') => ")",
                (_, '[') => "[",
                (_, ']') => "]",
                (_, '|') => "|",
                (_, '=') => "=",
                (_, ',') => ",",
                _ => return Err(FhirPathError(format!("unexpected character '{c}'"))),
            };
            i += symbol.len();
            tokens.push(Token::Symbol(symbol));
        }
    }
    Ok(tokens)
}

/// Parses a FHIRPath expression.
pub fn parse(text: &str) -> Result<Expr, FhirPathError> {
    if text.len() > MAX_LENGTH {
        return Err(FhirPathError("expression too long".into()));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, position: 0, depth: 0 };
    let expr = parser.expression(0)?;
    if parser.position < parser.tokens.len() {
        return Err(FhirPathError(format!("unexpected {:?}", parser.tokens[parser.position])));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    depth: usize,
}

/// Binding power of infix operators (higher binds tighter).
fn precedence(token: &Token) -> Option<u8> {
    match token {
        Token::Identifier(word) if word == "is" || word == "as" => Some(5),
        Token::Symbol("|") => Some(4),
        Token::Symbol("=") | Token::Symbol("!=") => Some(3),
        Token::Identifier(word) if word == "and" => Some(2),
        Token::Identifier(word) if word == "or" => Some(1),
        _ => None,
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn expect(&mut self, symbol: &'static str) -> Result<(), FhirPathError> {
        match self.next() {
            Some(Token::Symbol(s)) if s == symbol => Ok(()),
            other => Err(FhirPathError(format!("expected '{symbol}', found {other:?}"))),
        }
    }

    fn expression(&mut self, min_precedence: u8) -> Result<Expr, FhirPathError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FhirPathError("expression nested too deeply".into()));
        }
        let mut left = self.postfix()?;
        while let Some(token) = self.peek().cloned() {
            let Some(power) = precedence(&token) else { break };
            if power < min_precedence || power == 0 {
                break;
            }
            self.position += 1;
            left = match token {
                Token::Identifier(word) if word == "is" || word == "as" => {
                    let type_name = self.type_name()?;
                    if word == "is" { Expr::Is(Box::new(left), type_name) } else { Expr::As(Box::new(left), type_name) }
                }
                Token::Symbol("|") => Expr::Union(Box::new(left), Box::new(self.expression(power + 1)?)),
                Token::Symbol("=") => Expr::Equals(Box::new(left), Box::new(self.expression(power + 1)?), false),
                Token::Symbol("!=") => Expr::Equals(Box::new(left), Box::new(self.expression(power + 1)?), true),
                Token::Identifier(word) if word == "and" => Expr::And(Box::new(left), Box::new(self.expression(power + 1)?)),
                _ => Expr::Or(Box::new(left), Box::new(self.expression(power + 1)?)),
            };
        }
        self.depth -= 1;
        Ok(left)
    }

    /// A type specifier: `Quantity`, `FHIR.Quantity`, `System.String`.
    fn type_name(&mut self) -> Result<String, FhirPathError> {
        let Some(Token::Identifier(mut name)) = self.next() else {
            return Err(FhirPathError("expected a type name".into()));
        };
        while self.peek() == Some(&Token::Symbol(".")) {
            self.position += 1;
            let Some(Token::Identifier(part)) = self.next() else {
                return Err(FhirPathError("expected a type name".into()));
            };
            name = part;
        }
        Ok(name)
    }

    fn postfix(&mut self) -> Result<Expr, FhirPathError> {
        let mut expr = self.term()?;
        loop {
            match self.peek() {
                Some(Token::Symbol(".")) => {
                    self.position += 1;
                    let Some(Token::Identifier(name)) = self.next() else {
                        return Err(FhirPathError("expected a name after '.'".into()));
                    };
                    if self.peek() == Some(&Token::Symbol("(")) {
                        let args = self.arguments()?;
                        expr = Expr::Call(Some(Box::new(expr)), name, args);
                    } else {
                        expr = Expr::Member(Box::new(expr), name);
                    }
                }
                Some(Token::Symbol("[")) => {
                    self.position += 1;
                    let index = self.expression(0)?;
                    self.expect("]")?;
                    expr = Expr::Index(Box::new(expr), Box::new(index));
                }
                _ => return Ok(expr),
            }
        }
    }

    fn arguments(&mut self) -> Result<Vec<Expr>, FhirPathError> {
        self.expect("(")?;
        let mut args = Vec::new();
        if self.peek() == Some(&Token::Symbol(")")) {
            self.position += 1;
            return Ok(args);
        }
        loop {
            args.push(self.expression(0)?);
            match self.next() {
                Some(Token::Symbol(",")) => continue,
                Some(Token::Symbol(")")) => return Ok(args),
                other => return Err(FhirPathError(format!("expected ',' or ')', found {other:?}"))),
            }
        }
    }

    fn term(&mut self) -> Result<Expr, FhirPathError> {
        match self.next() {
            Some(Token::Symbol("(")) => {
                let inner = self.expression(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::String(text)) => Ok(Expr::String(text)),
            Some(Token::Number(text)) => Ok(Expr::Number(text)),
            Some(Token::Env(name)) => Ok(Expr::Env(name)),
            Some(Token::Identifier(name)) => match name.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                "$this" => Ok(Expr::This),
                _ if self.peek() == Some(&Token::Symbol("(")) => {
                    let args = self.arguments()?;
                    Ok(Expr::Call(None, name, args))
                }
                _ => Ok(Expr::Identifier(name)),
            },
            other => Err(FhirPathError(format!("unexpected {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_official_search_expression_parses() {
        let params: serde_json::Value = serde_json::from_str(include_str!("../search/r4-search-parameters.json")).unwrap_or_default();
        let mut count = 0;
        for param in params.as_array().cloned().unwrap_or_default() {
            if let Some(expression) = param["expression"].as_str() {
                assert!(parse(expression).is_ok(), "{expression}: {:?}", parse(expression));
                count += 1;
            }
            for component in param["component"].as_array().cloned().unwrap_or_default() {
                if let Some(expression) = component["expression"].as_str() {
                    assert!(parse(expression).is_ok(), "{expression}");
                }
            }
        }
        assert!(count > 1300);
    }

    #[test]
    fn hostile_expressions_fail_cleanly() {
        assert!(parse(&"(".repeat(10_000)).is_err());
        assert!(parse("a.").is_err());
        assert!(parse("'open").is_err());
        assert!(parse("a ! b").is_err());
    }
}
