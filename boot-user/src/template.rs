//! The template language of iPXE scripts (`ipxe/*.ipxe`) and overlay files: small on purpose,
//! so an operator reads a template in one pass and a bad one is refused at start, not mid-boot.
//!
//! - `{{name}}` inserts a variable. Names are letters, digits, `_` and `-`.
//! - `{{#each name}}…{{/each}}` repeats its body for every item of a list variable; inside,
//!   `{{.}}` is the item and `{{@index}}` its position from 0.
//! - `{{#if name}}…{{/if}}` keeps its body when the variable is set and not empty (a list: has
//!   items).
//! - `{{! comment }}` is dropped (with its newline, when it stands on lines of its own).
//!
//! iPXE's own `${var}` syntax passes through untouched, so templates can use iPXE settings.
//! Blocks may nest (bounded by [`MAX_DEPTH`]). A block tag that stands alone on its line takes
//! the line's newline with it, so block tags can stand on lines of their own (mustache's
//! "standalone" tags); one inside a line leaves the line as it is.

use std::collections::BTreeMap;
use std::fmt;

/// Deepest block nesting a template may use.
pub const MAX_DEPTH: usize = 8;
/// Largest template accepted, and largest output rendered: templates are scripts and small
/// files, and the bound keeps a list variable from blowing a render up.
pub const MAX_LEN: usize = 256 * 1024;

/// A variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    List(Vec<String>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Value {
        Value::List(v)
    }
}

/// Variables for one rendering.
pub type Vars = BTreeMap<String, Value>;

/// A template that cannot be used, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct TemplateError {
    pub line: usize,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("unclosed {{{{")]
    Unclosed,
    #[error("bad tag {{{{{0}}}}}")]
    BadTag(String),
    #[error("{{{{/{0}}}}} without a matching {{{{#{0} …}}}}")]
    UnexpectedClose(String),
    #[error("{{{{#{0} …}}}} is never closed")]
    UnclosedBlock(String),
    #[error("blocks nest deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("unknown variable {0:?}; known: {1}")]
    UnknownVariable(String, String),
    #[error("{{{{.}}}} or {{{{@index}}}} outside {{{{#each}}}}")]
    ItemOutsideEach,
    #[error("template is larger than {MAX_LEN} bytes")]
    TooLarge,
    #[error("a comment may not contain {{{{: it would end at the first }}}}")]
    TagInComment,
}

/// Why a rendering failed (only limits: templates are checked when parsed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("rendered output would exceed {MAX_LEN} bytes")]
    TooLarge,
    #[error("{{{{#each {0}}}}} needs a list, got text")]
    NotAList(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Text(String),
    Var(String),
    Item,
    Index,
    Each(String, Vec<Node>),
    If(String, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `source`; every variable it uses must be in `known` (so a typo is found when the
    /// config loads, not when a node boots).
    pub fn parse(source: &str, known: &[&str]) -> Result<Template, TemplateError> {
        if source.len() > MAX_LEN {
            return Err(TemplateError {
                line: 1,
                problem: Problem::TooLarge,
            });
        }
        let mut parser = Parser {
            rest: source,
            line: 1,
            known,
            line_start: true,
        };
        let nodes = parser.block(None, 0)?;
        Ok(Template { nodes })
    }

    pub fn render(&self, vars: &Vars) -> Result<String, RenderError> {
        let mut out = String::new();
        render_nodes(&self.nodes, vars, None, &mut out)?;
        Ok(out)
    }
}

struct Parser<'a> {
    rest: &'a str,
    line: usize,
    known: &'a [&'a str],
    /// Nothing but tags that took their newline since the last newline: a tag here starts
    /// its line.
    line_start: bool,
}

impl Parser<'_> {
    fn error(&self, problem: Problem) -> TemplateError {
        TemplateError {
            line: self.line,
            problem,
        }
    }

    fn advance(&mut self, n: usize) -> &str {
        let (taken, rest) = self.rest.split_at(n);
        self.line += taken.matches('\n').count();
        self.line_start = taken.ends_with('\n');
        self.rest = rest;
        taken
    }

    /// Parses until `{{/closing}}` (or the end, at the top level).
    fn block(&mut self, closing: Option<&str>, depth: usize) -> Result<Vec<Node>, TemplateError> {
        if depth > MAX_DEPTH {
            return Err(self.error(Problem::TooDeep));
        }
        let mut nodes = Vec::new();
        loop {
            let Some(open) = self.rest.find("{{") else {
                if !self.rest.is_empty() {
                    let text = self.advance(self.rest.len()).to_owned();
                    nodes.push(Node::Text(text));
                }
                return match closing {
                    Some(name) => Err(self.error(Problem::UnclosedBlock(name.to_owned()))),
                    None => Ok(nodes),
                };
            };
            if open > 0 {
                let text = self.advance(open).to_owned();
                nodes.push(Node::Text(text));
            }
            let close = self
                .rest
                .find("}}")
                .ok_or_else(|| self.error(Problem::Unclosed))?;
            let standalone = self.line_start;
            let tag = self.advance(close + 2);
            let tag = tag[2..tag.len() - 2].trim().to_owned();
            if let Some(name) = tag.strip_prefix('/') {
                if closing == Some(name) {
                    if standalone {
                        self.eat_newline();
                    }
                    return Ok(nodes);
                }
                return Err(self.error(Problem::UnexpectedClose(name.to_owned())));
            }
            if tag.starts_with('!') {
                // A comment ends at the first "}}": one that mentions a tag would end there
                // and leak the rest of itself into the output.
                if tag.contains("{{") {
                    return Err(self.error(Problem::TagInComment));
                }
                // A comment on a line of its own leaves no empty line behind.
                if standalone {
                    self.eat_newline();
                }
                continue;
            }
            if let Some(rest) = tag.strip_prefix('#') {
                let (kind, name) = rest
                    .split_once(char::is_whitespace)
                    .map(|(k, n)| (k, n.trim()))
                    .ok_or_else(|| self.error(Problem::BadTag(tag.clone())))?;
                if kind != "each" && kind != "if" {
                    return Err(self.error(Problem::BadTag(tag.clone())));
                }
                self.check_variable(name)?;
                let name = name.to_owned();
                if standalone {
                    self.eat_newline();
                }
                let body = self.block(Some(kind), depth + 1)?;
                nodes.push(if kind == "each" {
                    Node::Each(name, body)
                } else {
                    Node::If(name, body)
                });
                continue;
            }
            match tag.as_str() {
                "." | "@index" if !self.inside_each(closing) => {
                    return Err(self.error(Problem::ItemOutsideEach));
                }
                "." => nodes.push(Node::Item),
                "@index" => nodes.push(Node::Index),
                name => {
                    self.check_variable(name)?;
                    nodes.push(Node::Var(name.to_owned()));
                }
            }
        }
    }

    /// `{{.}}` is allowed anywhere under an `each`; the parser only knows the innermost block,
    /// so an `if` inside an `each` is treated as inside (rendering then has the item).
    fn inside_each(&self, closing: Option<&str>) -> bool {
        closing.is_some()
    }

    fn check_variable(&self, name: &str) -> Result<(), TemplateError> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(self.error(Problem::BadTag(name.to_owned())));
        }
        if !self.known.contains(&name) {
            return Err(self.error(Problem::UnknownVariable(
                name.to_owned(),
                self.known.join(", "),
            )));
        }
        Ok(())
    }

    /// A standalone tag takes its line's newline with it; the next tag then starts a line.
    fn eat_newline(&mut self) {
        if self.rest.starts_with("\r\n") {
            self.advance(2);
        } else if self.rest.starts_with('\n') {
            self.advance(1);
        }
    }
}

fn render_nodes(
    nodes: &[Node],
    vars: &Vars,
    item: Option<(usize, &str)>,
    out: &mut String,
) -> Result<(), RenderError> {
    for node in nodes {
        match node {
            Node::Text(t) => push(out, t)?,
            Node::Var(name) => match vars.get(name) {
                Some(Value::Text(t)) => push(out, t)?,
                Some(Value::List(items)) => push(out, &items.join(" "))?,
                None => {}
            },
            Node::Item => {
                if let Some((_, value)) = item {
                    push(out, value)?;
                }
            }
            Node::Index => {
                if let Some((index, _)) = item {
                    push(out, &index.to_string())?;
                }
            }
            Node::Each(name, body) => match vars.get(name) {
                Some(Value::List(items)) => {
                    for (i, value) in items.iter().enumerate() {
                        render_nodes(body, vars, Some((i, value)), out)?;
                    }
                }
                Some(Value::Text(_)) => return Err(RenderError::NotAList(name.clone())),
                None => {}
            },
            Node::If(name, body) => {
                let set = match vars.get(name) {
                    Some(Value::Text(t)) => !t.is_empty(),
                    Some(Value::List(items)) => !items.is_empty(),
                    None => false,
                };
                if set {
                    render_nodes(body, vars, item, out)?;
                }
            }
        }
    }
    Ok(())
}

fn push(out: &mut String, text: &str) -> Result<(), RenderError> {
    if out.len() + text.len() > MAX_LEN {
        return Err(RenderError::TooLarge);
    }
    out.push_str(text);
    Ok(())
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => f.write_str(t),
            Value::List(items) => f.write_str(&items.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["mac", "hostname", "initrds", "cmdline", "empty"];

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("mac".into(), "52:54:00:12:34:56".into());
        v.insert("hostname".into(), "n01".into());
        v.insert(
            "initrds".into(),
            vec!["http://x/a.img".to_owned(), "http://x/b.cpio".to_owned()].into(),
        );
        v.insert("empty".into(), "".into());
        v
    }

    #[test]
    fn variables_lists_and_conditions_render() {
        let t = Template::parse(
            "#!ipxe\n{{! a comment }}echo {{hostname}} ${net0/mac}\n{{#each initrds}}\ninitrd --name i{{@index}} {{.}}\n{{/each}}\n{{#if empty}}\nnever\n{{/if}}\n{{#if hostname}}\nset hostname {{hostname}}\n{{/if}}\n",
            KNOWN,
        )
        .unwrap();
        assert_eq!(
            t.render(&vars()).unwrap(),
            "#!ipxe\necho n01 ${net0/mac}\ninitrd --name i0 http://x/a.img\ninitrd --name i1 http://x/b.cpio\nset hostname n01\n"
        );
    }

    #[test]
    fn a_block_inside_a_line_keeps_the_line_s_newline() {
        let t = Template::parse(
            "initrd{{#each initrds}} '{{.}}'{{/each}}\nboot\n{{#if mac}}\nmac\n{{/if}}\nend\n",
            KNOWN,
        )
        .unwrap();
        assert_eq!(
            t.render(&vars()).unwrap(),
            "initrd 'http://x/a.img' 'http://x/b.cpio'\nboot\nmac\nend\n"
        );
    }

    #[test]
    fn unset_variables_render_empty() {
        let t = Template::parse("[{{cmdline}}]", KNOWN).unwrap();
        assert_eq!(t.render(&vars()).unwrap(), "[]");
    }

    #[test]
    fn bad_templates_are_refused_with_their_line() {
        let e = |s: &str| Template::parse(s, KNOWN).unwrap_err();
        assert_eq!(
            e("a\nb {{hostnme}}\n").line,
            2,
            "unknown variables are found at parse time"
        );
        assert!(matches!(e("{{hostname").problem, Problem::Unclosed));
        assert!(matches!(
            e("{{#each initrds}}x").problem,
            Problem::UnclosedBlock(_)
        ));
        assert!(matches!(
            e("x{{/each}}").problem,
            Problem::UnexpectedClose(_)
        ));
        assert!(matches!(e("{{.}}").problem, Problem::ItemOutsideEach));
        assert!(matches!(
            e("{{#while mac}}{{/while}}").problem,
            Problem::BadTag(_)
        ));
        assert!(matches!(e("{{a b}}").problem, Problem::BadTag(_)));
        assert!(matches!(
            e("{{! names {{mac}} }}").problem,
            Problem::TagInComment
        ));
        let deep = "{{#if mac}}".repeat(MAX_DEPTH + 2);
        assert!(matches!(e(&deep).problem, Problem::TooDeep));
    }

    #[test]
    fn each_over_text_is_a_render_error_and_output_is_bounded() {
        let t = Template::parse("{{#each mac}}{{.}}{{/each}}", KNOWN).unwrap();
        assert_eq!(t.render(&vars()), Err(RenderError::NotAList("mac".into())));
        let t = Template::parse("{{#each initrds}}{{hostname}}{{/each}}", KNOWN).unwrap();
        let mut v = vars();
        v.insert("hostname".into(), "x".repeat(1024).into());
        v.insert("initrds".into(), vec![String::new(); 1024].into());
        assert_eq!(t.render(&v), Err(RenderError::TooLarge));
    }
}
