//! Requirement expressions: `items:write and (admin or support) and not suspended`.
//!
//! Parsed once at start-up into a flat, prefix-ordered array of small nodes plus one string
//! holding every atom's name; evaluation walks that array, short-circuits, and allocates
//! nothing.

use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

/// The longest expression accepted, in bytes (of the input and of its canonical form).
const MAX_LEN: usize = 1024;
/// The deepest nesting of `(` and `not` accepted.
const MAX_DEPTH: usize = 32;

/// A parsed requirement expression.
///
/// Grammar: `or := and ("or" and)*`, `and := unary ("and" unary)*`,
/// `unary := "not" unary | "(" or ")" | atom`; `&&`, `||`, `!` are synonyms of `and`, `or`,
/// `not`, which bind in the order `not` > `and` > `or`. An atom is a name made of ASCII
/// letters, digits and `: . _ - * /`, matched exactly and case-sensitively; the lowercase
/// keywords are not atoms. An expression is at most 1024 bytes long (also when written out
/// in canonical form by [`Display`](fmt::Display)) and nests `(` and `not` at most 32 deep.
///
/// `a or (b or c)` and `a or b or c` are the same expression; `a or b` and `b or a` are not.
///
/// ```
/// use tower_api_guard::authz::Expr;
///
/// let e: Expr = "items:write and (admin or support) and not suspended".parse().unwrap();
/// let held = ["items:write", "support"];
/// assert!(e.eval(&mut |atom: &str| held.contains(&atom)));
/// assert_eq!(e.atoms(), ["items:write", "admin", "support", "suspended"]);
/// assert_eq!(e.to_string(), "items:write and (admin or support) and not suspended");
/// assert!("admin and (".parse::<Expr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// The expression tree in prefix order: every node is followed by its operands.
    nodes: Box<[Node]>,
    /// The names of the atoms, concatenated in order of occurrence.
    names: Box<str>,
}

/// One node of an [`Expr`]. Indices fit in `u16` because an expression is at most
/// 1024 bytes long, so it has at most 1024 nodes and 1024 bytes of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// `names[start..end]`.
    Atom { start: u16, end: u16 },
    /// The negation of the node that follows; `end` is one past the operand's subtree.
    Not { end: u16 },
    /// All the operands that follow, up to the index `end` (exclusive); at least two.
    And { end: u16 },
    /// Any of the operands that follow, up to the index `end` (exclusive); at least two.
    Or { end: u16 },
}

impl Node {
    /// The index one past the subtree of the node at index `at`.
    #[inline]
    fn end(self, at: usize) -> usize {
        match self {
            Node::Atom { .. } => at + 1,
            Node::Not { end } | Node::And { end } | Node::Or { end } => usize::from(end),
        }
    }
}

impl Expr {
    /// Parse an expression.
    ///
    /// # Errors
    /// A [`ConfigError`] whose message names the byte position and what was expected, e.g.
    /// `expression error at 6: expected an atom or '(' after 'and'`, `unbalanced ')' at 5`,
    /// `unexpected end of expression at 5: expected an atom or '(' after 'and'` or
    /// `empty expression`; also for an expression longer than 1024 bytes (as written or in
    /// canonical form) or nesting `(` and `not` deeper than 32.
    pub fn parse(text: &str) -> Result<Expr, ConfigError> {
        if text.len() > MAX_LEN {
            return Err(ConfigError::parse(format!(
                "expression longer than {MAX_LEN} bytes ({} bytes)",
                text.len()
            )));
        }
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(ConfigError::parse("empty expression"));
        }
        let mut parser = Parser {
            text,
            tokens: &tokens,
            pos: 0,
            open: 0,
        };
        let tree = parser.or(0)?;
        if let Some(token) = parser.peek() {
            return Err(if token.kind == Kind::Close {
                unbalanced(token.start)
            } else {
                error(
                    token.start,
                    format_args!("expected 'and' or 'or' after '{}'", parser.previous()),
                )
            });
        }
        let mut expr = Lowering {
            nodes: Vec::new(),
            names: String::new(),
        };
        expr.lower(tree);
        let expr = Expr {
            nodes: expr.nodes.into_boxed_slice(),
            names: expr.names.into_boxed_str(),
        };
        // `&&`, `||` and `!` are shorter than their canonical spellings: keep every
        // expression's Display within the limit, so that it always parses back.
        let mut counter = Counter(0);
        // Counting never fails.
        let _ = expr.write_at(&mut counter, 0, 0);
        if counter.0 > MAX_LEN {
            return Err(ConfigError::parse(format!(
                "expression longer than {MAX_LEN} bytes in canonical form ({} bytes)",
                counter.0
            )));
        }
        Ok(expr)
    }

    /// Evaluate, with `has` deciding whether each atom is held. Short-circuits (`has` is
    /// not called for operands that cannot change the result) and allocates nothing.
    #[inline]
    #[must_use]
    pub fn eval<F: FnMut(&str) -> bool + ?Sized>(&self, has: &mut F) -> bool {
        self.eval_at(0, has)
    }

    fn eval_at<F: FnMut(&str) -> bool + ?Sized>(&self, at: usize, has: &mut F) -> bool {
        match self.nodes[at] {
            Node::Atom { start, end } => has(self.name(start, end)),
            Node::Not { .. } => !self.eval_at(at + 1, has),
            Node::And { end } => {
                let mut i = at + 1;
                while i < usize::from(end) {
                    if !self.eval_at(i, has) {
                        return false;
                    }
                    i = self.nodes[i].end(i);
                }
                true
            }
            Node::Or { end } => {
                let mut i = at + 1;
                while i < usize::from(end) {
                    if self.eval_at(i, has) {
                        return true;
                    }
                    i = self.nodes[i].end(i);
                }
                false
            }
        }
    }

    /// The atoms in order of first appearance, without repeats.
    #[must_use]
    pub fn atoms(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for node in &self.nodes {
            if let Node::Atom { start, end } = *node {
                let name = self.name(start, end);
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    #[inline]
    fn name(&self, start: u16, end: u16) -> &str {
        &self.names[usize::from(start)..usize::from(end)]
    }

    /// Write the subtree at `at`, parenthesized if it binds less tightly than `min`.
    fn write_at(&self, f: &mut impl fmt::Write, at: usize, min: u8) -> fmt::Result {
        let node = self.nodes[at];
        let (level, sep) = match node {
            Node::Or { .. } => (0, " or "),
            Node::And { .. } => (1, " and "),
            Node::Not { .. } | Node::Atom { .. } => (2, ""),
        };
        let paren = level < min;
        if paren {
            f.write_char('(')?;
        }
        match node {
            Node::Atom { start, end } => f.write_str(self.name(start, end))?,
            Node::Not { .. } => {
                f.write_str("not ")?;
                self.write_at(f, at + 1, 2)?;
            }
            Node::And { end } | Node::Or { end } => {
                let mut i = at + 1;
                while i < usize::from(end) {
                    if i > at + 1 {
                        f.write_str(sep)?;
                    }
                    // Operands of `or` are `and`s or tighter; of `and`, `not`s or atoms.
                    self.write_at(f, i, level + 1)?;
                    i = self.nodes[i].end(i);
                }
            }
        }
        if paren {
            f.write_char(')')?;
        }
        Ok(())
    }
}

/// The canonical form, with minimal parentheses and the keywords `and`, `or`, `not`:
/// `items:write and (admin or support) and not suspended`. It parses back to an equal
/// [`Expr`].
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_at(f, 0, 0)
    }
}

impl FromStr for Expr {
    type Err = ConfigError;

    /// Same as [`Expr::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expr::parse(s)
    }
}

/// Counts the bytes written.
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn error(at: usize, what: fmt::Arguments<'_>) -> ConfigError {
    ConfigError::parse(format!("expression error at {at}: {what}"))
}

fn unbalanced(at: usize) -> ConfigError {
    ConfigError::parse(format!("unbalanced ')' at {at}"))
}

fn unexpected_end(at: usize, what: fmt::Arguments<'_>) -> ConfigError {
    ConfigError::parse(format!("unexpected end of expression at {at}: {what}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Atom,
    And,
    Or,
    Not,
    Open,
    Close,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

fn is_atom_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-' | b'*' | b'/')
}

fn tokenize(text: &str) -> Result<Vec<Token>, ConfigError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let start = i;
        let kind = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Kind::Open,
            b')' => Kind::Close,
            b'!' => Kind::Not,
            b'&' | b'|' => {
                if bytes.get(i + 1) != Some(&b) {
                    let (pair, word) = if b == b'&' {
                        ("&&", "and")
                    } else {
                        ("||", "or")
                    };
                    return Err(error(
                        start,
                        format_args!(
                            "expected '{pair}' or '{word}', found a single '{}'",
                            char::from(b)
                        ),
                    ));
                }
                i += 1;
                if b == b'&' { Kind::And } else { Kind::Or }
            }
            _ if is_atom_byte(b) => {
                while bytes.get(i + 1).is_some_and(|&b| is_atom_byte(b)) {
                    i += 1;
                }
                match &text[start..=i] {
                    "and" => Kind::And,
                    "or" => Kind::Or,
                    "not" => Kind::Not,
                    _ => Kind::Atom,
                }
            }
            _ => {
                let c = text[start..].chars().next().unwrap_or_default();
                return Err(error(
                    start,
                    format_args!("unexpected character '{}'", c.escape_debug()),
                ));
            }
        };
        i += 1;
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Ok(tokens)
}

/// A parse tree, lowered into an [`Expr`] once complete.
enum Tree<'a> {
    Atom(&'a str),
    Not(Box<Tree<'a>>),
    And(Vec<Tree<'a>>),
    Or(Vec<Tree<'a>>),
}

struct Parser<'t, 'a> {
    text: &'a str,
    tokens: &'t [Token],
    /// The index of the next token.
    pos: usize,
    /// How many `(` are open.
    open: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.pos).copied()
    }

    /// The text of the token before the next one (there is one whenever this is called).
    fn previous(&self) -> &'a str {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or("", |t| &self.text[t.start..t.end])
    }

    fn or(&mut self, depth: usize) -> Result<Tree<'a>, ConfigError> {
        let mut items = Vec::new();
        loop {
            match self.and(depth)? {
                Tree::Or(inner) => items.extend(inner),
                other => items.push(other),
            }
            if self.peek().is_none_or(|t| t.kind != Kind::Or) {
                break;
            }
            self.pos += 1;
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Tree::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Tree<'a>, ConfigError> {
        let mut items = Vec::new();
        loop {
            match self.unary(depth)? {
                Tree::And(inner) => items.extend(inner),
                other => items.push(other),
            }
            if self.peek().is_none_or(|t| t.kind != Kind::And) {
                break;
            }
            self.pos += 1;
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Tree::And(items)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Tree<'a>, ConfigError> {
        let Some(token) = self.peek() else {
            return Err(unexpected_end(
                self.text.len(),
                format_args!("expected an atom or '(' after '{}'", self.previous()),
            ));
        };
        match token.kind {
            Kind::Not | Kind::Open if depth >= MAX_DEPTH => Err(error(
                token.start,
                format_args!("nested deeper than {MAX_DEPTH}"),
            )),
            Kind::Not => {
                self.pos += 1;
                Ok(Tree::Not(Box::new(self.unary(depth + 1)?)))
            }
            Kind::Open => {
                self.pos += 1;
                self.open += 1;
                let inner = self.or(depth + 1)?;
                match self.peek() {
                    Some(t) if t.kind == Kind::Close => {
                        self.pos += 1;
                        self.open -= 1;
                        Ok(inner)
                    }
                    Some(t) => Err(error(
                        t.start,
                        format_args!("expected 'and', 'or' or ')' after '{}'", self.previous()),
                    )),
                    None => Err(unexpected_end(
                        self.text.len(),
                        format_args!("expected ')' to close the '(' at {}", token.start),
                    )),
                }
            }
            Kind::Atom => {
                self.pos += 1;
                Ok(Tree::Atom(&self.text[token.start..token.end]))
            }
            Kind::Close if self.open == 0 => Err(unbalanced(token.start)),
            Kind::Close | Kind::And | Kind::Or if self.pos > 0 => Err(error(
                token.start,
                format_args!("expected an atom or '(' after '{}'", self.previous()),
            )),
            Kind::Close | Kind::And | Kind::Or => Err(error(
                token.start,
                format_args!(
                    "expected an atom or '(', found '{}'",
                    &self.text[token.start..token.end]
                ),
            )),
        }
    }
}

struct Lowering {
    nodes: Vec<Node>,
    names: String,
}

impl Lowering {
    /// Append `tree` in prefix order. Fits `u16`: at most one node per token and one name
    /// byte per input byte, and the input is at most [`MAX_LEN`] bytes.
    fn lower(&mut self, tree: Tree<'_>) {
        let index = |n: usize| u16::try_from(n).expect("at most MAX_LEN nodes and names");
        match tree {
            Tree::Atom(name) => {
                let start = index(self.names.len());
                self.names.push_str(name);
                let end = index(self.names.len());
                self.nodes.push(Node::Atom { start, end });
            }
            Tree::Not(inner) => {
                let at = self.nodes.len();
                self.nodes.push(Node::Not { end: 0 });
                self.lower(*inner);
                self.nodes[at] = Node::Not {
                    end: index(self.nodes.len()),
                };
            }
            Tree::And(items) => self.lower_list(items, true),
            Tree::Or(items) => self.lower_list(items, false),
        }
    }

    fn lower_list(&mut self, items: Vec<Tree<'_>>, and: bool) {
        let at = self.nodes.len();
        self.nodes.push(Node::And { end: 0 });
        for item in items {
            self.lower(item);
        }
        let end = u16::try_from(self.nodes.len()).expect("at most MAX_LEN nodes");
        self.nodes[at] = if and {
            Node::And { end }
        } else {
            Node::Or { end }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(e: &str) -> Expr {
        Expr::parse(e).unwrap_or_else(|err| panic!("{e:?}: {}", err.message()))
    }

    fn msg(e: &str) -> String {
        Expr::parse(e).unwrap_err().message().to_owned()
    }

    fn truth(e: &Expr, held: &[&str]) -> bool {
        e.eval(&mut |a: &str| held.contains(&a))
    }

    /// The truth table over `a`, `b`, `c` as a bit mask indexed by `a | b << 1 | c << 2`.
    fn table(e: &str) -> u8 {
        let e = parse(e);
        (0..8u8).fold(0, |acc, bits| {
            let held: Vec<&str> = ["a", "b", "c"]
                .into_iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, n)| n)
                .collect();
            acc | (u8::from(truth(&e, &held)) << bits)
        })
    }

    #[test]
    fn precedence() {
        assert_eq!(parse("a or b and c"), parse("a or (b and c)"));
        assert_ne!(parse("a or b and c"), parse("(a or b) and c"));
        assert_eq!(parse("not a and b"), parse("(not a) and b"));
        assert_ne!(parse("not a and b"), parse("not (a and b)"));
        assert_eq!(parse("a and b or c and d"), parse("(a and b) or (c and d)"));
        assert_eq!(
            parse("not a or not b and c"),
            parse("(not a) or ((not b) and c)")
        );
        assert_eq!(table("a or b and c"), table("a or (b and c)"));
        assert_ne!(table("a or b and c"), table("(a or b) and c"));
    }

    #[test]
    fn parentheses_and_flattening() {
        assert_eq!(parse("((a))"), parse("a"));
        assert_eq!(parse("(a or b) or c"), parse("a or b or c"));
        assert_eq!(parse("a and (b and c)"), parse("a and b and c"));
        assert_eq!(parse(" ( a\tand\n(b) ) "), parse("a and b"));
        assert_ne!(parse("a or b"), parse("b or a"));
        assert_ne!(parse("not not a"), parse("a"));
    }

    #[test]
    fn synonyms() {
        assert_eq!(parse("a && b || !c"), parse("(a and b) or not c"));
        assert_eq!(parse("a&&b||!c"), parse("a and b or not c"));
        assert_eq!(parse("!(a||b)"), parse("not (a or b)"));
        assert_eq!(parse("!!a"), parse("not not a"));
        assert_eq!(parse("a and b && c"), parse("a and b and c"));
    }

    #[test]
    fn truth_tables() {
        // Bit i is the result with a = i & 1, b = i & 2, c = i & 4.
        assert_eq!(table("a"), 0b1010_1010);
        assert_eq!(table("not a"), 0b0101_0101);
        assert_eq!(table("a and b"), 0b1000_1000);
        assert_eq!(table("a or b"), 0b1110_1110);
        assert_eq!(table("a or b and c"), 0b1110_1010);
        assert_eq!(table("(a or b) and c"), 0b1110_0000);
        assert_eq!(table("not a and b"), 0b0100_0100);
        assert_eq!(table("not (a and b)"), 0b0111_0111);
        assert_eq!(table("a and not b or c"), 0b1111_0010);
        assert_eq!(table("not not a"), table("a"));
        assert_eq!(table("a and b and c"), 0b1000_0000);
        assert_eq!(table("a or b or c"), 0b1111_1110);

        let e = parse("items:write and (admin or support) and not suspended");
        assert!(truth(&e, &["items:write", "admin"]));
        assert!(truth(&e, &["items:write", "support"]));
        assert!(!truth(&e, &["items:write", "admin", "suspended"]));
        assert!(!truth(&e, &["admin", "support"]));
        assert!(!truth(&e, &["Items:write", "admin"]));
        let e = parse("posts:* or x/y.z-w_1 or 42");
        assert!(truth(&e, &["x/y.z-w_1"]));
        assert!(truth(&e, &["posts:*"]));
        assert!(truth(&e, &["42"]));
        assert!(!truth(&e, &["posts:read"]));
    }

    #[test]
    fn keywords_are_lowercase_words() {
        let e = parse("android or order or nothing or and:x or AND");
        assert_eq!(e.atoms(), ["android", "order", "nothing", "and:x", "AND"]);
        assert_eq!(e.to_string(), "android or order or nothing or and:x or AND");
    }

    #[test]
    fn short_circuits() {
        let mut seen = Vec::new();
        let e = parse("a or b and c or not d");
        assert!(e.eval(&mut |x: &str| {
            seen.push(x.to_owned());
            x == "b" || x == "c"
        }));
        assert_eq!(seen, ["a", "b", "c"]);
        seen.clear();
        assert!(!parse("a and b and c").eval(&mut |x: &str| {
            seen.push(x.to_owned());
            false
        }));
        assert_eq!(seen, ["a"]);
        // Also through a trait object.
        let dynamic: &mut dyn FnMut(&str) -> bool = &mut |x: &str| x == "a";
        assert!(parse("a or b").eval(dynamic));
    }

    #[test]
    fn errors_name_positions() {
        assert_eq!(msg(""), "empty expression");
        assert_eq!(msg(" \t\n "), "empty expression");
        assert_eq!(
            msg("items:write and or x"),
            "expression error at 16: expected an atom or '(' after 'and'"
        );
        assert_eq!(
            msg("a && || b"),
            "expression error at 5: expected an atom or '(' after '&&'"
        );
        assert_eq!(
            msg("not or"),
            "expression error at 4: expected an atom or '(' after 'not'"
        );
        assert_eq!(
            msg("a and ()"),
            "expression error at 7: expected an atom or '(' after '('"
        );
        assert_eq!(
            msg("(a and )"),
            "expression error at 7: expected an atom or '(' after 'and'"
        );
        assert_eq!(
            msg("or a"),
            "expression error at 0: expected an atom or '(', found 'or'"
        );
        assert_eq!(msg("a or b)"), "unbalanced ')' at 6");
        assert_eq!(msg(")"), "unbalanced ')' at 0");
        assert_eq!(msg("(a) or b))"), "unbalanced ')' at 8");
        assert_eq!(
            msg("a and"),
            "unexpected end of expression at 5: expected an atom or '(' after 'and'"
        );
        assert_eq!(
            msg("a or not  "),
            "unexpected end of expression at 10: expected an atom or '(' after 'not'"
        );
        assert_eq!(
            msg("x and (a or b"),
            "unexpected end of expression at 13: expected ')' to close the '(' at 6"
        );
        assert_eq!(
            msg("(a or b c)"),
            "expression error at 8: expected 'and', 'or' or ')' after 'b'"
        );
        assert_eq!(
            msg("a b"),
            "expression error at 2: expected 'and' or 'or' after 'a'"
        );
        assert_eq!(
            msg("(a) (b)"),
            "expression error at 4: expected 'and' or 'or' after ')'"
        );
        assert_eq!(
            msg("a not b"),
            "expression error at 2: expected 'and' or 'or' after 'a'"
        );
        assert_eq!(
            msg("Admin AND b"),
            "expression error at 6: expected 'and' or 'or' after 'Admin'"
        );
        assert_eq!(
            msg("a & b"),
            "expression error at 2: expected '&&' or 'and', found a single '&'"
        );
        assert_eq!(
            msg("a |"),
            "expression error at 2: expected '||' or 'or', found a single '|'"
        );
        assert_eq!(
            msg("a and $b"),
            "expression error at 6: unexpected character '$'"
        );
        assert_eq!(
            msg("a or é"),
            "expression error at 5: unexpected character 'é'"
        );
        assert_eq!(
            msg("a or\u{0}"),
            "expression error at 4: unexpected character '\\0'"
        );
    }

    #[test]
    fn length_cap() {
        let longest = "a".repeat(MAX_LEN);
        assert_eq!(parse(&longest).atoms(), [longest.as_str()]);
        assert_eq!(
            msg(&"a".repeat(MAX_LEN + 1)),
            "expression longer than 1024 bytes (1025 bytes)"
        );
        let spaced = format!("{}a{}", " ".repeat(600), " ".repeat(423));
        assert_eq!(parse(&spaced), parse("a"));
        assert!(Expr::parse(&format!("{spaced} ")).is_err());
        // 1024 bytes as written, but longer in canonical form.
        let terse = format!("{}a", "a&&".repeat(341));
        assert_eq!(terse.len(), MAX_LEN);
        assert!(msg(&terse).starts_with("expression longer than 1024 bytes in canonical form"));
        let terse = format!("{}a", "a&&".repeat(170));
        assert_eq!(parse(&parse(&terse).to_string()), parse(&terse));
    }

    #[test]
    fn depth_cap() {
        // Far beyond the cap: an error, not a stack overflow.
        assert!(Expr::parse(&"(".repeat(10_000)).is_err());
        assert_eq!(
            msg(&"(".repeat(1000)),
            "expression error at 32: nested deeper than 32"
        );
        assert_eq!(
            msg(&"!".repeat(1000)),
            "expression error at 32: nested deeper than 32"
        );
        let nested = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(parse(&nested(MAX_DEPTH)), parse("a"));
        assert_eq!(
            msg(&nested(MAX_DEPTH + 1)),
            "expression error at 32: nested deeper than 32"
        );
        let nots = |n: usize| format!("{}a", "not ".repeat(n));
        assert!(Expr::parse(&nots(MAX_DEPTH)).is_ok());
        assert_eq!(
            msg(&nots(MAX_DEPTH + 1)),
            "expression error at 128: nested deeper than 32"
        );
        // `not` and `(` count together.
        let mixed = |n: usize| format!("{}a{}", "not (".repeat(n), ")".repeat(n));
        assert!(Expr::parse(&mixed(MAX_DEPTH / 2)).is_ok());
        assert!(Expr::parse(&mixed(MAX_DEPTH / 2 + 1)).is_err());
        // Long flat chains are not nesting.
        let chain = format!("{}a", "a or b and ".repeat(90));
        assert_eq!(parse(&chain).atoms(), ["a", "b"]);
        // The deepest canonical form still parses back and evaluates.
        let deep = |n: usize| format!("{}a{}", "not (b or ".repeat(n), ")".repeat(n));
        assert!(Expr::parse(&deep(MAX_DEPTH / 2)).is_ok());
        assert!(Expr::parse(&deep(MAX_DEPTH / 2 + 1)).is_err());
        let deep = format!("{}a{}", "(b and (c or ".repeat(16), "))".repeat(16));
        let e = parse(&deep);
        assert_eq!(parse(&e.to_string()), e);
        assert!(truth(&e, &["a", "b"]));
        assert!(!truth(&e, &["a", "c"]));
        assert!(Expr::parse(&format!("(x or {deep})")).is_err());
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (input, canonical) in [
            ("a", "a"),
            ("((a))", "a"),
            ("a && b || c", "a and b or c"),
            ("(a and b) or c", "a and b or c"),
            ("a and (b or c)", "a and (b or c)"),
            ("(a or b) and (c or !d)", "(a or b) and (c or not d)"),
            ("not (a or b) and c", "not (a or b) and c"),
            ("!(a && b)", "not (a and b)"),
            ("not (not a)", "not not a"),
            ("(not a)", "not a"),
            ("a or (b or (c and d))", "a or b or c and d"),
            (
                "items:write && (admin || support) && !suspended",
                "items:write and (admin or support) and not suspended",
            ),
        ] {
            let e = parse(input);
            assert_eq!(e.to_string(), canonical, "{input}");
            assert_eq!(parse(canonical), e, "{input}");
            assert_eq!(canonical.parse::<Expr>().unwrap(), e);
        }
    }

    #[test]
    fn atoms_in_order_without_repeats() {
        assert_eq!(parse("b or a and b").atoms(), ["b", "a"]);
        assert_eq!(
            parse("items:write and (admin or support) and not suspended or admin").atoms(),
            ["items:write", "admin", "support", "suspended"]
        );
        assert_eq!(parse("not x").atoms(), ["x"]);
    }

    /// A reference tree, rendered with every operation parenthesized.
    #[derive(Debug, Clone)]
    enum Ref {
        Atom(&'static str),
        Not(Box<Ref>),
        And(Box<Ref>, Box<Ref>),
        Or(Box<Ref>, Box<Ref>),
    }

    impl Ref {
        fn render(&self) -> String {
            match self {
                Ref::Atom(a) => (*a).to_owned(),
                Ref::Not(x) => format!("!({})", x.render()),
                Ref::And(x, y) => format!("({}) && ({})", x.render(), y.render()),
                Ref::Or(x, y) => format!("({}) or ({})", x.render(), y.render()),
            }
        }

        fn eval(&self, held: &[&str]) -> bool {
            match self {
                Ref::Atom(a) => held.contains(a),
                Ref::Not(x) => !x.eval(held),
                Ref::And(x, y) => x.eval(held) && y.eval(held),
                Ref::Or(x, y) => x.eval(held) || y.eval(held),
            }
        }
    }

    fn reference() -> impl Strategy<Value = Ref> {
        let leaf = prop_oneof![Just("a"), Just("b"), Just("c"), Just("d:*")].prop_map(Ref::Atom);
        leaf.prop_recursive(5, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|x| Ref::Not(Box::new(x))),
                (inner.clone(), inner.clone())
                    .prop_map(|(x, y)| Ref::And(Box::new(x), Box::new(y))),
                (inner.clone(), inner).prop_map(|(x, y)| Ref::Or(Box::new(x), Box::new(y))),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn token_soup_round_trips(
            s in "([()!]|&&|\\|\\||&|and|or|not|a|b|c:\\*| |\\t){0,80}"
        ) {
            if let Ok(e) = Expr::parse(&s) {
                let shown = e.to_string();
                prop_assert!(shown.len() <= MAX_LEN);
                prop_assert_eq!(Expr::parse(&shown).unwrap(), e.clone());
                prop_assert!(!e.atoms().is_empty());
            }
        }

        #[test]
        fn agrees_with_a_reference_evaluator(r in reference()) {
            let text = r.render();
            prop_assume!(text.len() <= MAX_LEN);
            // Deep references may exceed the nesting cap; those must fail cleanly.
            let Ok(e) = Expr::parse(&text) else { return Ok(()) };
            prop_assert_eq!(Expr::parse(&e.to_string()).unwrap(), e.clone());
            for bits in 0..16u8 {
                let held: Vec<&str> = ["a", "b", "c", "d:*"]
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, n)| n)
                    .collect();
                prop_assert_eq!(truth(&e, &held), r.eval(&held), "{} held {:?}", text, held);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            if let Ok(e) = Expr::parse(&s) {
                prop_assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
            }
        }

        #[test]
        fn long_token_soup_never_panics(s in "([()!]|&&|\\|\\||and |or |not |a |b ){0,600}") {
            if let Ok(e) = Expr::parse(&s) {
                prop_assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
            }
        }
    }
}
