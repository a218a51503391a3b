//! `cargo xtask modules`: the daemon's module graph, and a check that it has no cycles
//! (STYLE.md, "Dependencies point one way"). `cargo xtask test` runs the check.
//!
//! Every `crate::…` and `super::…` path in `boot-user/src` (outside `main.rs`, a crate of its
//! own, and outside test modules) is resolved to the module it names. A reference between two
//! modules is lifted to their lowest common ancestor: `crate::http::files` using
//! `crate::http::stream` is an edge `files → stream` among `http`'s children, and
//! `crate::config` using `crate::http::overlay` is an edge `config → http` among the crate's.
//! A child using its parent (or a parent its child) is how modules nest, not a dependency
//! between peers. Among each module's children the edges must form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::workspace_root;

#[derive(clap::Args)]
pub struct Args {
    /// Print every edge, not only the cycles.
    #[arg(long)]
    graph: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let src = workspace_root().join("boot-user/src");
    let graph = Graph::read(&src)?;
    if args.graph {
        print!("{}", graph.describe());
    }
    check(&graph)
}

/// Fails with every cycle found, each with one place that makes each of its edges.
pub fn check(graph: &Graph) -> anyhow::Result<()> {
    let cycles = graph.cycles();
    if cycles.is_empty() {
        println!(
            "[modules] {} modules, {} edges between peers, no cycle",
            graph.modules.len(),
            graph.edges.values().map(BTreeMap::len).sum::<usize>()
        );
        return Ok(());
    }
    let mut text = String::new();
    for cycle in &cycles {
        let _ = writeln!(text, "{}", cycle);
    }
    bail!("module cycles in boot-user/src:\n{text}");
}

/// A module path: `["net", "xdp", "backend"]`; the crate root is empty.
type ModPath = Vec<String>;

/// The modules and the edges between peers, keyed by their common parent.
#[derive(Debug, Default)]
pub struct Graph {
    modules: BTreeSet<ModPath>,
    /// parent → (from child, to child) → where (file:line).
    edges: BTreeMap<ModPath, BTreeMap<(String, String), String>>,
}

/// A cycle among the children of one module.
#[derive(Debug, PartialEq, Eq)]
pub struct Cycle {
    pub parent: ModPath,
    pub members: Vec<String>,
    /// (from, to, where) for each edge inside the cycle.
    pub edges: Vec<(String, String, String)>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parent = if self.parent.is_empty() {
            "crate".to_owned()
        } else {
            format!("crate::{}", self.parent.join("::"))
        };
        writeln!(f, "  among {parent}'s modules: {}", self.members.join(", "))?;
        for (from, to, at) in &self.edges {
            writeln!(f, "    {from} -> {to}  ({at})")?;
        }
        Ok(())
    }
}

impl Graph {
    /// Reads every module file under `src` (a crate's `src/`, with `lib.rs` its root).
    pub fn read(src: &Path) -> anyhow::Result<Graph> {
        let mut files = Vec::new();
        collect(src, &mut files)?;
        let mut sources = Vec::new();
        for file in files {
            let relative = file.strip_prefix(src).expect("under src").to_path_buf();
            let Some(module) = module_of(&relative) else {
                continue;
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            sources.push((relative, module, text));
        }
        Ok(Graph::from_sources(sources.iter().map(
            |(path, module, text)| (path.as_path(), module.clone(), text.as_str()),
        )))
    }

    /// The graph of `(file, module, text)` sources.
    pub fn from_sources<'a>(sources: impl Iterator<Item = (&'a Path, ModPath, &'a str)>) -> Graph {
        let sources: Vec<_> = sources.collect();
        let mut graph = Graph {
            modules: sources.iter().map(|(_, m, _)| m.clone()).collect(),
            ..Graph::default()
        };
        for (file, module, text) in &sources {
            for (line, target) in references(module, text) {
                let target = graph.resolve(&target);
                if let Some((parent, from, to)) = lift(module, &target) {
                    graph
                        .edges
                        .entry(parent)
                        .or_default()
                        .entry((from, to))
                        .or_insert_with(|| format!("{}:{line}", file.display()));
                }
            }
        }
        graph
    }

    /// The longest prefix of `path` that is a module.
    fn resolve(&self, path: &[String]) -> ModPath {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|prefix| self.modules.contains(prefix))
            .unwrap_or_default()
    }

    /// Every edge, by parent.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for (parent, edges) in &self.edges {
            let _ = writeln!(text, "crate::{}", parent.join("::"));
            for ((from, to), at) in edges {
                let _ = writeln!(text, "  {from} -> {to}  ({at})");
            }
        }
        text
    }

    /// The strongly connected components of more than one module, per parent (Tarjan).
    pub fn cycles(&self) -> Vec<Cycle> {
        let mut cycles = Vec::new();
        for (parent, edges) in &self.edges {
            let mut successors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (from, to) in edges.keys() {
                successors.entry(from).or_default().push(to);
                successors.entry(to).or_default();
            }
            for component in strongly_connected(&successors) {
                if component.len() < 2 {
                    continue;
                }
                let members: BTreeSet<&str> = component.iter().copied().collect();
                cycles.push(Cycle {
                    parent: parent.clone(),
                    members: members.iter().map(|m| m.to_string()).collect(),
                    edges: edges
                        .iter()
                        .filter(|((f, t), _)| {
                            members.contains(f.as_str()) && members.contains(t.as_str())
                        })
                        .map(|((f, t), at)| (f.clone(), t.clone(), at.clone()))
                        .collect(),
                });
            }
        }
        cycles
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The module a file under `src/` defines: `lib.rs` is the root, `a/mod.rs` and `a.rs` are
/// `a`. `main.rs` (the binary, a crate of its own) and test modules (`tests.rs`) are left out.
fn module_of(relative: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    match file.as_str() {
        "main.rs" if parts.is_empty() => return None,
        "lib.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        "tests.rs" => return None,
        other => parts.push(other.strip_suffix(".rs")?.to_owned()),
    }
    Some(parts)
}

/// The absolute module paths a file refers to (`crate::…`, `super::…`), with their lines.
/// Code after a `#[cfg(test)]` line is test code and does not count.
fn references(module: &[String], text: &str) -> Vec<(usize, ModPath)> {
    let mut found = Vec::new();
    let mut statement = String::new();
    let mut statement_line = 0;
    for (index, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        if code.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        // `use` statements may span lines and group paths in braces: read them whole.
        if statement.is_empty() && code.trim_start().starts_with("use ")
            || code.trim_start().starts_with("pub use ")
            || code.trim_start().starts_with("pub(crate) use ")
        {
            statement_line = index + 1;
        }
        if statement_line != 0 {
            statement.push_str(code);
            if code.contains(';') {
                for path in expand_use(&statement) {
                    if let Some(absolute) = absolute(module, &path) {
                        found.push((statement_line, absolute));
                    }
                }
                statement.clear();
                statement_line = 0;
            }
            continue;
        }
        for path in inline_paths(code) {
            if let Some(absolute) = absolute(module, &path) {
                found.push((index + 1, absolute));
            }
        }
    }
    found
}

/// The paths a `use` statement names, braces expanded: `use crate::{a::b, c::{d, e}};` gives
/// `crate::a::b`, `crate::c::d`, `crate::c::e`.
fn expand_use(statement: &str) -> Vec<Vec<String>> {
    let body = statement
        .trim()
        .trim_start_matches("pub(crate) ")
        .trim_start_matches("pub ")
        .trim_start_matches("use ")
        .trim_end_matches(';');
    // `x as y` renames x: keep x. Then the tree without whitespace.
    let mut words = body.split_whitespace().peekable();
    let mut tree = String::new();
    while let Some(word) = words.next() {
        if word == "as" {
            // The alias, with whatever punctuation follows it (`y,` or `y}`).
            let alias = words.next().unwrap_or_default();
            tree.extend(
                alias
                    .chars()
                    .skip_while(|c| c.is_alphanumeric() || *c == '_'),
            );
        } else {
            tree.push_str(word);
        }
    }
    let mut out = Vec::new();
    expand(&tree, &mut Vec::new(), &mut out);
    out
}

fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for item in split_top(tree) {
        match item.find('{') {
            Some(open) if item.ends_with('}') => {
                let head: Vec<String> = item[..open]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let depth = prefix.len();
                prefix.extend(head);
                expand(&item[open + 1..item.len() - 1], prefix, out);
                prefix.truncate(depth);
            }
            _ => {
                let mut path = prefix.clone();
                path.extend(
                    item.split("::")
                        .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
                        .map(str::to_owned),
                );
                if !path.is_empty() {
                    out.push(path);
                }
            }
        }
    }
}

/// `a, b::{c, d}, e` split at the commas outside braces.
fn split_top(tree: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&tree[start..]);
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

/// `crate::a::b` and `super::x` paths written inline in code.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            // Not the tail of a longer identifier (`xcrate::`).
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                paths.push(
                    tail[..end]
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            rest = &tail[end.max(1)..];
        }
    }
    paths
}

/// A path as written in `module`, made absolute: `crate::a` → `[a]`, `super::b` → parent's
/// `b`. Other paths (std, other crates, `self::`) are not references between our modules.
fn absolute(module: &[String], path: &[String]) -> Option<ModPath> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "super" => {
            let mut base = module.to_vec();
            base.pop()?;
            let mut rest = rest;
            while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
                base.pop()?;
                rest = tail;
            }
            base.extend(rest.iter().cloned());
            Some(base)
        }
        _ => None,
    }
}

/// An edge `from → to` lifted to their lowest common ancestor: (ancestor, from's child of it,
/// to's child of it), or `None` when one contains the other.
fn lift(from: &[String], to: &[String]) -> Option<(ModPath, String, String)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    let (a, b) = (from.get(common)?, to.get(common)?);
    Some((from[..common].to_vec(), a.clone(), b.clone()))
}

/// Tarjan's strongly connected components.
fn strongly_connected<'a>(successors: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(node: &'a str, graph: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(node, n);
        s.low.insert(node, n);
        s.stack.push(node);
        s.on_stack.insert(node);
        for &next in graph.get(node).into_iter().flatten() {
            if !s.index.contains_key(next) {
                visit(next, graph, s);
                let low = s.low[node].min(s.low[next]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.low[node].min(s.index[next]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut component = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                component.push(top);
                if top == node {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in successors.keys() {
        if !state.index.contains_key(node) {
            visit(node, successors, &mut state);
        }
    }
    state.components
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        let sources: Vec<(PathBuf, ModPath, &str)> = files
            .iter()
            .map(|(path, text)| {
                let path = PathBuf::from(path);
                let module = module_of(&path).expect("a module file");
                (path, module, *text)
            })
            .collect();
        Graph::from_sources(sources.iter().map(|(p, m, t)| (p.as_path(), m.clone(), *t)))
    }

    #[test]
    fn a_cycle_between_top_level_modules_is_found_with_its_places() {
        let g = graph(&[
            ("lib.rs", "pub mod config;\npub mod http;\npub mod dhcp;\n"),
            (
                "config.rs",
                "use crate::http::overlay::OverlayFile;\nuse crate::dhcp::Policy;\n",
            ),
            (
                "http/mod.rs",
                "pub mod overlay;\nfn f(c: &crate::config::Config) {}\n",
            ),
            ("http/overlay.rs", "use super::Body;\n"),
            (
                "dhcp/mod.rs",
                "pub struct Policy;\n#[cfg(test)]\nmod tests { use crate::config::Config; }\n",
            ),
        ]);
        let cycles = graph_cycles(&g);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert_eq!(cycles[0].members, ["config", "http"]);
        assert_eq!(
            cycles[0].edges,
            [
                ("config".into(), "http".into(), "config.rs:1".into()),
                ("http".into(), "config".into(), "http/mod.rs:2".into())
            ]
        );
        assert!(check(&g).is_err());
    }

    fn graph_cycles(g: &Graph) -> Vec<Cycle> {
        g.cycles()
    }

    #[test]
    fn siblings_inside_a_module_and_grouped_uses_count_and_nesting_does_not() {
        let g = graph(&[
            ("lib.rs", "pub mod http;\n"),
            (
                "http/mod.rs",
                "pub mod files;\npub mod stream;\nuse self::files::X;\n",
            ),
            (
                "http/files.rs",
                "use super::{\n    stream::{MapRegistry, Other},\n    Body,\n};\n",
            ),
            ("http/stream.rs", "fn f() { super::files::open(); }\n"),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert_eq!(cycles[0].parent, ["http"]);
        assert_eq!(cycles[0].members, ["files", "stream"]);
        let acyclic = graph(&[
            ("lib.rs", "pub mod http;\npub mod net;\n"),
            ("http/mod.rs", "use crate::net::frame::x;\n"),
            ("net/mod.rs", "pub mod frame;\n"),
            ("net/frame.rs", "use super::helper; // crate::http::never\n"),
        ]);
        assert!(acyclic.cycles().is_empty(), "{}", acyclic.describe());
        assert!(check(&acyclic).is_ok());
    }
}
