//! Requirement expressions: `items:write and (admin or support) and not suspended`.

use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

/// The longest expression accepted, in bytes.
const MAX_LEN: usize = 1024;
/// The deepest nesting accepted.
const MAX_DEPTH: usize = 32;

/// A parsed requirement expression.
///
/// Grammar: `or := and ("or" and)*`, `and := unary ("and" unary)*`,
/// `unary := "not" unary | "(" or ")" | atom`; `&&`, `||`, `!` are synonyms. An atom is a
/// name made of letters, digits and `: . _ - * /`, matched exactly and case-sensitively.
///
/// ```
/// use tower_api_guard::authz::Expr;
///
/// let e: Expr = "items:write and (admin or support) and not suspended".parse().unwrap();
/// let held = ["items:write", "support"];
/// assert!(e.eval(&mut |atom: &str| held.contains(&atom)));
/// assert_eq!(e.atoms(), ["items:write", "admin", "support", "suspended"]);
/// assert!("admin and (".parse::<Expr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Atom(Box<str>),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Atom(&'a str),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn is_atom_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-' | b'*' | b'/')
}

fn error(at: usize, what: &str) -> ConfigError {
    ConfigError::new(format!("expression error at {at}: {what}"))
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token<'_>)>, ConfigError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                tokens.push((start, Token::Open));
                i += 1;
            }
            b')' => {
                tokens.push((start, Token::Close));
                i += 1;
            }
            b'!' => {
                tokens.push((start, Token::Not));
                i += 1;
            }
            b'&' | b'|' => {
                if bytes.get(i + 1) != Some(&b) {
                    return Err(error(start, "expected '&&' or '||'"));
                }
                tokens.push((start, if b == b'&' { Token::And } else { Token::Or }));
                i += 2;
            }
            _ if is_atom_byte(b) => {
                while i < bytes.len() && is_atom_byte(bytes[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                tokens.push((
                    start,
                    match word {
                        "and" => Token::And,
                        "or" => Token::Or,
                        "not" => Token::Not,
                        _ => Token::Atom(word),
                    },
                ));
            }
            _ => return Err(error(start, "unexpected character")),
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<(usize, Token<'a>)>,
    pos: usize,
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(at, _)| *at)
    }

    fn or(&mut self, depth: usize) -> Result<Node, ConfigError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.and(depth)?, true);
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            push_flat(&mut items, self.and(depth)?, true);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Node, ConfigError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.unary(depth)?, false);
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            push_flat(&mut items, self.unary(depth)?, false);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::And(items)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Node, ConfigError> {
        if depth >= MAX_DEPTH {
            return Err(error(self.at(), "nested too deeply"));
        }
        let at = self.at();
        match self.tokens.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Token::Not) => {
                self.pos += 1;
                Ok(Node::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(error(self.at(), "expected ')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Atom(name)) => {
                self.pos += 1;
                Ok(Node::Atom(name.into()))
            }
            Some(Token::Close) => Err(error(at, "unbalanced ')'")),
            Some(_) => Err(error(at, "expected a name, 'not' or '('")),
            None => Err(error(at, "unexpected end of expression")),
        }
    }
}

/// Append `node`, splicing in the items of a nested node of the same kind, so that
/// `(a or b) or c` and `a or b or c` are the same expression.
fn push_flat(items: &mut Vec<Node>, node: Node, or: bool) {
    match node {
        Node::Or(inner) if or => items.extend(inner),
        Node::And(inner) if !or => items.extend(inner),
        other => items.push(other),
    }
}

impl Expr {
    /// Parse an expression.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the byte position and what was expected; also for an
    /// empty expression, one over 1024 bytes, or one nested deeper than 32.
    pub fn parse(text: &str) -> Result<Expr, ConfigError> {
        if text.len() > MAX_LEN {
            return Err(ConfigError::new("expression longer than 1024 bytes"));
        }
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(ConfigError::new("empty expression"));
        }
        let mut parser = Parser {
            tokens,
            pos: 0,
            end: text.len(),
        };
        let root = parser.or(0)?;
        if parser.pos != parser.tokens.len() {
            let at = parser.at();
            return Err(match parser.peek() {
                Some(Token::Close) => error(at, "unbalanced ')'"),
                _ => error(at, "expected 'and', 'or' or the end"),
            });
        }
        Ok(Expr { root })
    }

    /// Evaluate, with `has` deciding each atom. Short-circuits; allocates nothing.
    pub fn eval<F: FnMut(&str) -> bool>(&self, has: &mut F) -> bool {
        eval(&self.root, has)
    }

    /// The atoms in order of first appearance, without repeats.
    pub fn atoms(&self) -> Vec<&str> {
        let mut out = Vec::new();
        collect(&self.root, &mut out);
        out
    }
}

fn eval<F: FnMut(&str) -> bool>(node: &Node, has: &mut F) -> bool {
    match node {
        Node::Atom(a) => has(a),
        Node::Not(inner) => !eval(inner, has),
        Node::And(items) => items.iter().all(|n| eval(n, has)),
        Node::Or(items) => items.iter().any(|n| eval(n, has)),
    }
}

fn collect<'a>(node: &'a Node, out: &mut Vec<&'a str>) {
    match node {
        Node::Atom(a) => {
            if !out.contains(&&**a) {
                out.push(a);
            }
        }
        Node::Not(inner) => collect(inner, out),
        Node::And(items) | Node::Or(items) => items.iter().for_each(|n| collect(n, out)),
    }
}

/// Precedence: 0 for `or`, 1 for `and`, 2 for `not` and atoms.
fn precedence(node: &Node) -> u8 {
    match node {
        Node::Or(_) => 0,
        Node::And(_) => 1,
        Node::Not(_) | Node::Atom(_) => 2,
    }
}

fn write_node(f: &mut fmt::Formatter<'_>, node: &Node, min: u8) -> fmt::Result {
    let paren = precedence(node) < min;
    if paren {
        f.write_str("(")?;
    }
    match node {
        Node::Atom(a) => f.write_str(a)?,
        Node::Not(inner) => {
            f.write_str("not ")?;
            write_node(f, inner, 2)?;
        }
        Node::And(items) | Node::Or(items) => {
            let (sep, level) = if matches!(node, Node::And(_)) {
                (" and ", 2)
            } else {
                (" or ", 1)
            };
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write_node(f, item, level)?;
            }
        }
    }
    if paren {
        f.write_str(")")?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_node(f, &self.root, 0)
    }
}

impl FromStr for Expr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn truth(e: &str, held: &[&str]) -> bool {
        Expr::parse(e)
            .unwrap()
            .eval(&mut |a: &str| held.contains(&a))
    }

    #[test]
    fn precedence_and_grouping() {
        assert_eq!(
            Expr::parse("a or b and c").unwrap(),
            Expr::parse("a or (b and c)").unwrap()
        );
        assert_eq!(
            Expr::parse("not a and b").unwrap(),
            Expr::parse("(not a) and b").unwrap()
        );
        assert_eq!(
            Expr::parse("a && b || !c").unwrap(),
            Expr::parse("(a and b) or not c").unwrap()
        );
        assert!(truth("a or b and c", &["a"]));
        assert!(!truth("(a or b) and c", &["a"]));
        assert!(truth("not not a", &["a"]));
        let e = "items:write and (admin or support) and not suspended";
        assert!(truth(e, &["items:write", "admin"]));
        assert!(!truth(e, &["items:write", "admin", "suspended"]));
        assert!(!truth(e, &["admin"]));
        assert!(truth("posts:* or x/y.z-w_1", &["x/y.z-w_1"]));
    }

    #[test]
    fn errors_name_positions() {
        let msg = |e: &str| Expr::parse(e).unwrap_err().message().to_owned();
        assert_eq!(msg(""), "empty expression");
        assert_eq!(msg("   "), "empty expression");
        assert_eq!(
            msg("a and"),
            "expression error at 5: unexpected end of expression"
        );
        assert_eq!(
            msg("a and or b"),
            "expression error at 6: expected a name, 'not' or '('"
        );
        assert_eq!(msg("(a or b"), "expression error at 7: expected ')'");
        assert_eq!(msg("a or b)"), "expression error at 6: unbalanced ')'");
        assert_eq!(msg(")"), "expression error at 0: unbalanced ')'");
        assert_eq!(
            msg("a b"),
            "expression error at 2: expected 'and', 'or' or the end"
        );
        assert_eq!(msg("a & b"), "expression error at 2: expected '&&' or '||'");
        assert_eq!(
            msg("a and $"),
            "expression error at 6: unexpected character"
        );
        assert_eq!(
            msg("Admin AND b"),
            "expression error at 6: expected 'and', 'or' or the end"
        );
    }

    #[test]
    fn caps() {
        assert!(Expr::parse(&"(".repeat(10_000)).is_err());
        assert!(Expr::parse(&"not ".repeat(40)).is_err());
        let deep = format!("{}a{}", "(".repeat(31), ")".repeat(31));
        assert!(Expr::parse(&deep).is_ok());
        let too_deep = format!("{}a{}", "(".repeat(33), ")".repeat(33));
        assert!(Expr::parse(&too_deep).is_err());
        assert!(Expr::parse(&"a or ".repeat(300)).is_err());
    }

    #[test]
    fn display_round_trips_and_atoms() {
        for e in [
            "a",
            "a and b or c",
            "a and (b or c)",
            "not (a or b) and c",
            "not not a",
            "(a or b) and (c or not d)",
        ] {
            let parsed = Expr::parse(e).unwrap();
            assert_eq!(
                Expr::parse(&parsed.to_string()).unwrap(),
                parsed,
                "{e} -> {parsed}"
            );
        }
        assert_eq!(
            Expr::parse("a and (b or c)").unwrap().to_string(),
            "a and (b or c)"
        );
        assert_eq!(Expr::parse("b or a and b").unwrap().atoms(), ["b", "a"]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = Expr::parse(&s);
        }

        #[test]
        fn parsed_expressions_round_trip(s in "([()!]|and|or|not|a|b|c| ){0,60}") {
            if let Ok(e) = Expr::parse(&s) {
                prop_assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
            }
        }
    }
}
