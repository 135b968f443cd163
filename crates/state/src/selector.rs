//! Label selectors: the kubectl string syntax (`app=web,tier!=db`, `env in (prod,staging)`,
//! `release`, `!release`, `version>3`), structured `LabelSelector`s and node selector terms, all
//! compiled into one `Selector` whose `matches` allocates nothing.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::SelectorError;
use crate::objects::{
    LabelSelector, LabelSelectorOperator, NodeSelectorOperator, NodeSelectorTerm,
};
use crate::validate::names;

/// Longest selector text accepted, so parsing stays cheap whatever a request carries.
pub const MAX_SELECTOR_BYTES: usize = 16 * 1024;

/// A compiled label selector: requirements ANDed together. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Sorted by key, so equal selectors print identically.
    requirements: Vec<Requirement>,
}

/// One `key operator values` test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated, for binary search.
    values: Vec<String>,
    /// The integer operand of `Gt`/`Lt`.
    bound: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and the operator's arity.
    pub fn new(
        key: &str,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        let invalid = |detail: String| SelectorError::Invalid(format!("{key:?}: {detail}"));
        names::qualified_name(key).map_err(invalid)?;
        let arity_ok = match operator {
            Operator::Equals | Operator::NotEquals | Operator::GreaterThan | Operator::LessThan => {
                values.len() == 1
            }
            Operator::In | Operator::NotIn => !values.is_empty(),
            Operator::Exists | Operator::DoesNotExist => values.is_empty(),
        };
        if !arity_ok {
            return Err(invalid(format!(
                "wrong number of values ({}) for operator {operator:?}",
                values.len()
            )));
        }
        let mut bound = 0;
        if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            bound = values[0]
                .parse()
                .map_err(|_| invalid(format!("{:?} is not an integer", values[0])))?;
        } else {
            for value in &values {
                names::label_value(value)
                    .map_err(|detail| invalid(format!("value {value:?}: {detail}")))?;
            }
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
            bound,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = |v: &String| self.values.binary_search(v).is_ok();
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan => integer(value).is_some_and(|v| v > self.bound),
            Operator::LessThan => integer(value).is_some_and(|v| v < self.bound),
        }
    }
}

fn integer(value: Option<&String>) -> Option<i64> {
    value.and_then(|text| text.parse().ok())
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Parses kubectl's `-l` syntax. Whitespace-only text selects everything.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::Invalid(format!(
                "longer than {MAX_SELECTOR_BYTES} bytes"
            )));
        }
        Parser::new(text).parse()
    }

    /// Compiles `matchLabels` and `matchExpressions`.
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements =
            Vec::with_capacity(selector.match_labels.len() + selector.match_expressions.len());
        for (key, value) in &selector.match_labels {
            requirements.push(Requirement::new(
                key,
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for expression in &selector.match_expressions {
            let operator = match expression.operator {
                LabelSelectorOperator::In => Operator::In,
                LabelSelectorOperator::NotIn => Operator::NotIn,
                LabelSelectorOperator::Exists => Operator::Exists,
                LabelSelectorOperator::DoesNotExist => Operator::DoesNotExist,
            };
            requirements.push(Requirement::new(
                &expression.key,
                operator,
                expression.values.clone(),
            )?);
        }
        Ok(Selector::from_requirements(requirements))
    }

    /// Compiles a node affinity term (its `Gt`/`Lt` compare integer label values).
    pub fn from_node_selector_term(term: &NodeSelectorTerm) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::with_capacity(term.match_expressions.len());
        for expression in &term.match_expressions {
            let operator = match expression.operator {
                NodeSelectorOperator::In => Operator::In,
                NodeSelectorOperator::NotIn => Operator::NotIn,
                NodeSelectorOperator::Exists => Operator::Exists,
                NodeSelectorOperator::DoesNotExist => Operator::DoesNotExist,
                NodeSelectorOperator::Gt => Operator::GreaterThan,
                NodeSelectorOperator::Lt => Operator::LessThan,
            };
            requirements.push(Requirement::new(
                &expression.key,
                operator,
                expression.values.clone(),
            )?);
        }
        Ok(Selector::from_requirements(requirements))
    }

    /// Equality on every pair: a Service's `selector` or a pod's `nodeSelector`.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Selector, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(key, value)| Requirement::new(key, Operator::Equals, vec![value.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Selector::from_requirements(requirements))
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(labels))
    }

    /// Whether this selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let first = self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Equals => write!(f, "{key}={first}"),
            Operator::NotEquals => write!(f, "{key}!={first}"),
            Operator::In => write!(f, "{key} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::GreaterThan => write!(f, "{key}>{first}"),
            Operator::LessThan => write!(f, "{key}<{first}"),
        }
    }
}

/// kubectl's form, sorted by key: `app=web,env in (prod,staging)`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            requirement.fmt(f)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Selector::parse(text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Open,
    Close,
    Comma,
    Greater,
    Less,
    End,
}

impl Token<'_> {
    fn describe(self) -> String {
        let text = match self {
            Token::Word(word) => return format!("{word:?}"),
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Bang => "!",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::Greater => ">",
            Token::Less => "<",
            Token::End => return "end of selector".to_owned(),
        };
        format!("{text:?}")
    }
}

/// A recursive-descent parser over a one-token lookahead lexer.
struct Parser<'a> {
    text: &'a str,
    position: usize,
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'<' | b'>')
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser { text, position: 0 }
    }

    /// The next token and its byte offset, without consuming it.
    fn peek(&self) -> (usize, Token<'a>, usize) {
        let bytes = self.text.as_bytes();
        let mut start = self.position;
        while start < bytes.len() && bytes[start].is_ascii_whitespace() {
            start += 1;
        }
        let Some(&first) = bytes.get(start) else {
            return (start, Token::End, start);
        };
        let next = bytes.get(start + 1).copied();
        let (token, len) = match (first, next) {
            (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
            (b'!', Some(b'=')) => (Token::NotEquals, 2),
            (b'=', _) => (Token::Equals, 1),
            (b'!', _) => (Token::Bang, 1),
            (b'(', _) => (Token::Open, 1),
            (b')', _) => (Token::Close, 1),
            (b',', _) => (Token::Comma, 1),
            (b'>', _) => (Token::Greater, 1),
            (b'<', _) => (Token::Less, 1),
            _ => {
                let len = bytes[start..]
                    .iter()
                    .position(|&b| b.is_ascii_whitespace() || is_special(b))
                    .unwrap_or(bytes.len() - start);
                (Token::Word(&self.text[start..start + len]), len)
            }
        };
        (start, token, start + len)
    }

    fn next(&mut self) -> (usize, Token<'a>) {
        let (start, token, end) = self.peek();
        self.position = end;
        (start, token)
    }

    fn error(&self, position: usize, expected: &'static str, found: Token<'_>) -> SelectorError {
        SelectorError::Syntax {
            selector: self.text.to_owned(),
            position,
            expected,
            found: found.describe(),
        }
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().1 == Token::End {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                (_, Token::End) => break,
                (_, Token::Comma) => continue,
                (position, found) => {
                    return Err(self.error(position, "\",\" or end of selector", found))
                }
            }
        }
        Ok(Selector::from_requirements(requirements))
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (position, token) = self.next();
        let key = match token {
            Token::Bang => {
                let key = self.word("a label key")?;
                return Requirement::new(key, Operator::DoesNotExist, Vec::new());
            }
            Token::Word(key) => key,
            found => return Err(self.error(position, "a label key or \"!\"", found)),
        };
        let (operator, values) = self.operator_and_values()?;
        Requirement::new(key, operator, values)
    }

    /// What follows a key: nothing (`Exists`), `=`/`==`/`!=` value, `>`/`<` integer, or
    /// `in`/`notin` with a value set.
    fn operator_and_values(&mut self) -> Result<(Operator, Vec<String>), SelectorError> {
        let (position, token, _) = self.peek();
        let operator = match token {
            Token::Comma | Token::End => return Ok((Operator::Exists, Vec::new())),
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::Greater => Operator::GreaterThan,
            Token::Less => Operator::LessThan,
            Token::Word("in") => Operator::In,
            Token::Word("notin") => Operator::NotIn,
            found => {
                let expected = "an operator (=, ==, !=, in, notin, >, <), \",\" or end of selector";
                return Err(self.error(position, expected, found));
            }
        };
        self.next();
        let values = match operator {
            Operator::Equals | Operator::NotEquals => vec![self.optional_word().to_owned()],
            Operator::GreaterThan | Operator::LessThan => vec![self.word("an integer")?.to_owned()],
            _ => self.value_set()?,
        };
        Ok((operator, values))
    }

    fn word(&mut self, expected: &'static str) -> Result<&'a str, SelectorError> {
        match self.next() {
            (_, Token::Word(word)) => Ok(word),
            (position, found) => Err(self.error(position, expected, found)),
        }
    }

    /// A value after `=`, which may be empty (`tier=` selects an empty value).
    fn optional_word(&mut self) -> &'a str {
        match self.peek().1 {
            Token::Word(word) => {
                self.next();
                word
            }
            _ => "",
        }
    }

    /// `(v1, v2, …)`; values may be empty but the set may not.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            (_, Token::Open) => {}
            (position, found) => return Err(self.error(position, "\"(\"", found)),
        }
        if let (position, Token::Close, _) = self.peek() {
            return Err(self.error(position, "a label value", Token::Close));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.optional_word().to_owned());
            match self.next() {
                (_, Token::Comma) => continue,
                (_, Token::Close) => return Ok(values),
                (position, found) => return Err(self.error(position, "\",\" or \")\"", found)),
            }
        }
    }
}
