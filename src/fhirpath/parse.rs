//! FHIRPath syntax: tokens and a precedence-climbing parser producing [`Expr`].

use super::FhirPathError;
use super::decimal::Decimal;
use super::quantity::{Quantity, calendar_keyword};
use super::temporal::{DateTimeValue, TimeValue};

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
    /// The type name as written, without backticks (`Quantity`, `FHIR.Patient`, `System.String`).
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
    /// `{}`.
    Empty,
    /// `$index` or `$total` (by name, without `$`).
    Variable(String),
    Date(DateTimeValue),
    DateTime(DateTimeValue),
    Time(TimeValue),
    Quantity(Quantity),
    /// Unary `-` (true) or `+` (false).
    Polarity(Box<Expr>, bool),
    Binary(Box<Expr>, BinaryOp, Box<Expr>),
}

/// The infix operators without a variant of their own in [`Expr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Multiply,
    Divide,
    Div,
    Mod,
    Add,
    Subtract,
    Concatenate,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equivalent,
    NotEquivalent,
    In,
    Contains,
    Xor,
    Implies,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Identifier(String),
    /// A `backtick` identifier: never a keyword.
    Delimited(String),
    String(String),
    Number(String),
    Env(String),
    /// `$this`, `$index`, `$total` (without `$`).
    Variable(String),
    Date(DateTimeValue),
    DateTime(DateTimeValue),
    Time(TimeValue),
    Symbol(&'static str),
}

/// The longest expression accepted, in bytes (expressions come from definitions and clients).
const MAX_LENGTH: usize = 4096;
/// The deepest syntax tree accepted, so hostile input cannot exhaust the stack when the tree
/// is checked, cloned or dropped.
const MAX_DEPTH: usize = 160;
/// The deepest recursion of the parser itself (parentheses, arguments, operands, signs).
const MAX_NESTING: usize = 48;

const SYMBOLS: [&str; 23] = [
    "!=", "!~", "<=", ">=", ".", "(", ")", "[", "]", "{", "}", "|", "=", "~", ",", "+", "-", "*",
    "/", "&", "<", ">", "%",
];

fn error(message: impl Into<String>) -> FhirPathError {
    FhirPathError(message.into())
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
}

impl Lexer {
    fn peek(&self, offset: usize) -> Option<char> {
        self.chars.get(self.at + offset).copied()
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.at;
        while self.peek(0).is_some_and(&keep) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// The text between `quote`s, with FHIRPath escapes resolved.
    fn quoted(&mut self, quote: char) -> Result<String, FhirPathError> {
        self.at += 1;
        let mut value = String::new();
        loop {
            match self.peek(0) {
                None => return Err(error("unterminated string or identifier")),
                Some(c) if c == quote => {
                    self.at += 1;
                    return Ok(value);
                }
                Some('\\') => {
                    let escaped = self.peek(1).ok_or_else(|| error("unterminated string"))?;
                    self.at += 2;
                    value.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'f' => '\u{c}',
                        'u' => {
                            let hex: String = (0..4).filter_map(|i| self.peek(i)).collect();
                            let code = u32::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|_| hex.len() == 4)
                                .ok_or_else(|| error("invalid \\u escape"))?;
                            self.at += 4;
                            char::from_u32(code).ok_or_else(|| error("invalid \\u escape"))?
                        }
                        '\\' | '/' | '\'' | '"' | '`' => escaped,
                        other => return Err(error(format!("invalid escape \\{other}"))),
                    });
                }
                Some(other) => {
                    value.push(other);
                    self.at += 1;
                }
            }
        }
    }

    /// Exactly `count` digits.
    fn digits(&mut self, count: usize) -> Option<String> {
        let text: String = (0..count).filter_map(|i| self.peek(i)).collect();
        (text.len() == count && text.chars().all(|c| c.is_ascii_digit())).then(|| {
            self.at += count;
            text
        })
    }

    /// `hh[:mm[:ss[.fff]]]`.
    fn clock(&mut self) -> Result<String, FhirPathError> {
        let mut text = self.digits(2).ok_or_else(|| error("invalid time"))?;
        for _ in 0..2 {
            if self.peek(0) == Some(':') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
                text.push(':');
                text += &self.digits(2).ok_or_else(|| error("invalid time"))?;
            }
        }
        if text.len() == 8
            && self.peek(0) == Some('.')
            && self.peek(1).is_some_and(|c| c.is_ascii_digit())
        {
            self.at += 1;
            text.push('.');
            text += &self.take_while(|c| c.is_ascii_digit());
        }
        Ok(text)
    }

    /// A literal after `@`: `@2015-02-04T14:34:28Z`, `@2015T`, `@T14:30`.
    fn temporal(&mut self) -> Result<Token, FhirPathError> {
        self.at += 1;
        if self.peek(0) == Some('T') {
            self.at += 1;
            let text = self.clock()?;
            return TimeValue::parse(&text)
                .map(Token::Time)
                .ok_or_else(|| error(format!("invalid time @T{text}")));
        }
        let mut text = self.digits(4).ok_or_else(|| error("invalid date"))?;
        for _ in 0..2 {
            if self.peek(0) == Some('-') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
                text.push('-');
                text += &self.digits(2).ok_or_else(|| error("invalid date"))?;
            }
        }
        if self.peek(0) != Some('T') {
            return DateTimeValue::parse_date(&text)
                .map(Token::Date)
                .ok_or_else(|| error(format!("invalid date @{text}")));
        }
        self.at += 1;
        text.push('T');
        if self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            text += &self.clock()?;
            if self.peek(0) == Some('Z') {
                self.at += 1;
                text.push('Z');
            } else if matches!(self.peek(0), Some('+' | '-'))
                && self.peek(1).is_some_and(|c| c.is_ascii_digit())
                && self.peek(3) == Some(':')
            {
                let sign = self.peek(0).unwrap_or('+');
                self.at += 1;
                let hours = self.digits(2).ok_or_else(|| error("invalid time zone"))?;
                self.at += 1;
                let minutes = self.digits(2).ok_or_else(|| error("invalid time zone"))?;
                text += &format!("{sign}{hours}:{minutes}");
            }
        }
        DateTimeValue::parse_date_time(&text)
            .map(Token::DateTime)
            .ok_or_else(|| error(format!("invalid date-time @{text}")))
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, FhirPathError> {
    let mut tokens = Vec::new();
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        at: 0,
    };
    while let Some(c) = lexer.peek(0) {
        let next = lexer.peek(1);
        if c.is_whitespace() {
            lexer.at += 1;
        } else if c == '/' && next == Some('/') {
            lexer.take_while(|c| c != '\n');
        } else if c == '/' && next == Some('*') {
            lexer.at += 2;
            loop {
                match (lexer.peek(0), lexer.peek(1)) {
                    (Some('*'), Some('/')) => {
                        lexer.at += 2;
                        break;
                    }
                    (Some(_), _) => lexer.at += 1,
                    (None, _) => return Err(error("unterminated comment")),
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            tokens.push(Token::Identifier(
                lexer.take_while(|c| c.is_ascii_alphanumeric() || c == '_'),
            ));
        } else if c == '`' {
            tokens.push(Token::Delimited(lexer.quoted('`')?));
        } else if c == '$' {
            lexer.at += 1;
            let name = lexer.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            match name.as_str() {
                "this" | "index" | "total" => tokens.push(Token::Variable(name)),
                _ => return Err(error(format!("unknown variable ${name}"))),
            }
        } else if c.is_ascii_digit() {
            let mut number = lexer.take_while(|c| c.is_ascii_digit());
            if lexer.peek(0) == Some('.') && lexer.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                lexer.at += 1;
                number.push('.');
                number += &lexer.take_while(|c| c.is_ascii_digit());
            }
            tokens.push(Token::Number(number));
        } else if c == '\'' {
            tokens.push(Token::String(lexer.quoted('\'')?));
        } else if c == '@' {
            tokens.push(lexer.temporal()?);
        } else if c == '%' {
            lexer.at += 1;
            let name = match lexer.peek(0) {
                Some('`') => lexer.quoted('`')?,
                Some('\'') => lexer.quoted('\'')?,
                _ => lexer.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            };
            if name.is_empty() {
                return Err(error("expected a name after '%'"));
            }
            tokens.push(Token::Env(name));
        } else {
            let two: String = [Some(c), next].iter().flatten().collect();
            let symbol = SYMBOLS
                .iter()
                .find(|symbol| two.starts_with(**symbol) && symbol.len() == 2)
                .or_else(|| {
                    SYMBOLS
                        .iter()
                        .find(|symbol| symbol.len() == 1 && symbol.starts_with(c))
                })
                .filter(|symbol| **symbol != "%")
                .ok_or_else(|| error(format!("unexpected character '{c}'")))?;
            lexer.at += symbol.len();
            tokens.push(Token::Symbol(symbol));
        }
    }
    Ok(tokens)
}

/// Parses a FHIRPath expression.
pub fn parse(text: &str) -> Result<Expr, FhirPathError> {
    if text.len() > MAX_LENGTH {
        return Err(error("expression too long"));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        position: 0,
        depth: 0,
        nesting: 0,
    };
    let expr = parser.expression(0)?;
    if parser.position < parser.tokens.len() {
        return Err(error(format!(
            "unexpected {:?}",
            parser.tokens[parser.position]
        )));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    /// An upper bound of the depth of the tree built so far.
    depth: usize,
    /// How deeply the parser has recursed.
    nesting: usize,
}

#[derive(Clone, Copy)]
enum Infix {
    Type(bool),
    Union,
    Equals(bool),
    And,
    Or,
    Binary(BinaryOp),
}

/// Binding power of infix operators (higher binds tighter), per the FHIRPath grammar.
fn infix(token: &Token) -> Option<(u8, Infix)> {
    let word = match token {
        Token::Identifier(word) => word.as_str(),
        Token::Symbol(symbol) => symbol,
        _ => return None,
    };
    Some(match word {
        "implies" => (1, Infix::Binary(BinaryOp::Implies)),
        "or" => (2, Infix::Or),
        "xor" => (2, Infix::Binary(BinaryOp::Xor)),
        "and" => (3, Infix::And),
        "in" => (4, Infix::Binary(BinaryOp::In)),
        "contains" => (4, Infix::Binary(BinaryOp::Contains)),
        "=" => (5, Infix::Equals(false)),
        "!=" => (5, Infix::Equals(true)),
        "~" => (5, Infix::Binary(BinaryOp::Equivalent)),
        "!~" => (5, Infix::Binary(BinaryOp::NotEquivalent)),
        "<" => (6, Infix::Binary(BinaryOp::Less)),
        "<=" => (6, Infix::Binary(BinaryOp::LessOrEqual)),
        ">" => (6, Infix::Binary(BinaryOp::Greater)),
        ">=" => (6, Infix::Binary(BinaryOp::GreaterOrEqual)),
        "|" => (7, Infix::Union),
        "is" => (8, Infix::Type(true)),
        "as" => (8, Infix::Type(false)),
        "+" => (9, Infix::Binary(BinaryOp::Add)),
        "-" => (9, Infix::Binary(BinaryOp::Subtract)),
        "&" => (9, Infix::Binary(BinaryOp::Concatenate)),
        "*" => (10, Infix::Binary(BinaryOp::Multiply)),
        "/" => (10, Infix::Binary(BinaryOp::Divide)),
        "div" => (10, Infix::Binary(BinaryOp::Div)),
        "mod" => (10, Infix::Binary(BinaryOp::Mod)),
        _ => return None,
    })
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
            other => Err(error(format!("expected '{symbol}', found {other:?}"))),
        }
    }

    fn deeper(&mut self) -> Result<(), FhirPathError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(error("expression nested too deeply"))
        } else {
            Ok(())
        }
    }

    fn nest(&mut self) -> Result<(), FhirPathError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            Err(error("expression nested too deeply"))
        } else {
            Ok(())
        }
    }

    fn expression(&mut self, min_precedence: u8) -> Result<Expr, FhirPathError> {
        let entry_depth = self.depth;
        self.nest()?;
        self.deeper()?;
        let mut left = self.unary()?;
        while let Some((power, operator)) = self.peek().and_then(infix) {
            if power < min_precedence {
                break;
            }
            self.position += 1;
            self.deeper()?;
            left = match operator {
                Infix::Type(is) => {
                    let type_name = self.type_name()?;
                    if is {
                        Expr::Is(Box::new(left), type_name)
                    } else {
                        Expr::As(Box::new(left), type_name)
                    }
                }
                other => {
                    let right = Box::new(self.expression(power + 1)?);
                    let left = Box::new(left);
                    match other {
                        Infix::Union => Expr::Union(left, right),
                        Infix::Equals(negate) => Expr::Equals(left, right, negate),
                        Infix::And => Expr::And(left, right),
                        Infix::Or => Expr::Or(left, right),
                        Infix::Binary(op) => Expr::Binary(left, op, right),
                        Infix::Type(_) => return Err(error("unexpected type operator")),
                    }
                }
            };
        }
        self.depth = entry_depth;
        self.nesting -= 1;
        Ok(left)
    }

    /// A type specifier: `Quantity`, `FHIR.Quantity`, ``FHIR.`Patient` ``, `System.String`.
    fn type_name(&mut self) -> Result<String, FhirPathError> {
        let mut name = match self.next() {
            Some(Token::Identifier(name) | Token::Delimited(name)) => name,
            _ => return Err(error("expected a type name")),
        };
        if self.peek() == Some(&Token::Symbol(".")) {
            self.position += 1;
            match self.next() {
                Some(Token::Identifier(part) | Token::Delimited(part)) => {
                    name = format!("{name}.{part}")
                }
                _ => return Err(error("expected a type name")),
            }
        }
        Ok(name)
    }

    fn unary(&mut self) -> Result<Expr, FhirPathError> {
        match self.peek() {
            Some(Token::Symbol(sign @ ("-" | "+"))) => {
                let negative = *sign == "-";
                self.position += 1;
                self.deeper()?;
                self.nest()?;
                let operand = self.unary()?;
                self.nesting -= 1;
                Ok(Expr::Polarity(Box::new(operand), negative))
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, FhirPathError> {
        let mut expr = self.term()?;
        loop {
            match self.peek() {
                Some(Token::Symbol(".")) => {
                    self.position += 1;
                    self.deeper()?;
                    let name = match self.next() {
                        Some(Token::Identifier(name) | Token::Delimited(name)) => name,
                        _ => return Err(error("expected a name after '.'")),
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
                    self.deeper()?;
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
                other => return Err(error(format!("expected ',' or ')', found {other:?}"))),
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
            Some(Token::Symbol("{")) => {
                self.expect("}")?;
                Ok(Expr::Empty)
            }
            Some(Token::String(text)) => Ok(Expr::String(text)),
            Some(Token::Number(text)) => self.number(text),
            Some(Token::Env(name)) => Ok(Expr::Env(name)),
            Some(Token::Date(value)) => Ok(Expr::Date(value)),
            Some(Token::DateTime(value)) => Ok(Expr::DateTime(value)),
            Some(Token::Time(value)) => Ok(Expr::Time(value)),
            Some(Token::Variable(name)) => Ok(if name == "this" {
                Expr::This
            } else {
                Expr::Variable(name)
            }),
            Some(Token::Identifier(name)) if name == "true" || name == "false" => {
                Ok(Expr::Bool(name == "true"))
            }
            Some(Token::Identifier(name) | Token::Delimited(name)) => {
                if self.peek() == Some(&Token::Symbol("(")) {
                    let args = self.arguments()?;
                    Ok(Expr::Call(None, name, args))
                } else {
                    Ok(Expr::Identifier(name))
                }
            }
            other => Err(error(format!("unexpected {other:?}"))),
        }
    }

    /// A number, or a quantity when a unit follows (`4 'mg'`, `2 weeks`).
    fn number(&mut self, text: String) -> Result<Expr, FhirPathError> {
        let unit = match self.peek() {
            Some(Token::String(unit)) => Some(unit.clone()),
            Some(Token::Identifier(word)) if calendar_keyword(word).is_some() => Some(word.clone()),
            _ => None,
        };
        let Some(unit) = unit else {
            return Ok(Expr::Number(text));
        };
        self.position += 1;
        let value = Decimal::parse(&text).ok_or_else(|| error(format!("invalid number {text}")))?;
        Ok(Expr::Quantity(Quantity::new(value, unit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_official_search_expression_parses() {
        let params: serde_json::Value =
            serde_json::from_str(include_str!("../search/r4-search-parameters.json"))
                .unwrap_or_default();
        let mut count = 0;
        for param in params.as_array().cloned().unwrap_or_default() {
            if let Some(expression) = param["expression"].as_str() {
                assert!(
                    parse(expression).is_ok(),
                    "{expression}: {:?}",
                    parse(expression)
                );
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
        assert!(parse("a.".repeat(1000).trim_end_matches('.')).is_err());
        assert!(parse("1+".repeat(1000).trim_end_matches('+')).is_err());
        assert!(parse(&"-".repeat(1000)).is_err());
        assert!(parse("2 + 2 /* open").is_err());
        assert!(parse("@2015-13").is_err());
        assert!(parse("'\\uZZZZ'").is_err());
    }

    #[test]
    fn precedence_follows_the_grammar() {
        let number = |n: &str| Box::new(Expr::Number(n.into()));
        assert_eq!(
            parse("1 + 2 * 3"),
            Ok(Expr::Binary(
                number("1"),
                BinaryOp::Add,
                Box::new(Expr::Binary(number("2"), BinaryOp::Multiply, number("3")))
            ))
        );
        assert_eq!(
            parse("1 > 2 is Boolean"),
            Ok(Expr::Binary(
                number("1"),
                BinaryOp::Greater,
                Box::new(Expr::Is(number("2"), "Boolean".into()))
            ))
        );
        assert_eq!(
            parse("-1.convertsToInteger()"),
            Ok(Expr::Polarity(
                Box::new(Expr::Call(
                    Some(number("1")),
                    "convertsToInteger".into(),
                    vec![]
                )),
                true
            ))
        );
        assert!(matches!(parse("4 days"), Ok(Expr::Quantity(_))));
        assert!(matches!(
            parse("@2015-02-04T14:34:28.123+10:00"),
            Ok(Expr::DateTime(_))
        ));
        assert!(matches!(parse("@T14:34"), Ok(Expr::Time(_))));
        assert!(parse("@T14:34:28Z").is_err());
        assert_eq!(
            parse("2 // note\n/ 2 /* more */"),
            Ok(Expr::Binary(number("2"), BinaryOp::Divide, number("2")))
        );
        assert_eq!(parse("%`vs-x`"), Ok(Expr::Env("vs-x".into())));
        assert_eq!(parse("'\\u0065\\''"), Ok(Expr::String("e'".into())));
    }
}
