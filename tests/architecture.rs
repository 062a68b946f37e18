//! The module graph has no cycles at the level of the crate's top-level
//! modules (`crate::X`, X a file or directory directly under `src/`).
//!
//! The test reads every `src/**/*.rs` as text (comments and string literals
//! blanked out), collects each path that leaves its own top-level module
//! (`crate::x::...`, `use crate::{x, y::...}`, and `super::` chains that climb
//! to the crate root), builds the graph and fails naming a cycle and the lines
//! that make it. `docs/ARCHITECTURE.md` lists the layers this graph allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file: its module path below the crate root and its text.
struct Source {
    /// Module path of the file: `src/a.rs` and `src/a/mod.rs` are `[a]`,
    /// `src/a/b.rs` is `[a, b]`.
    module: Vec<String>,
    /// Shown in failures.
    file: String,
    text: String,
}

/// Where one edge of the graph comes from.
#[derive(Clone, Debug)]
struct Site {
    file: String,
    line: usize,
}

/// from -> to -> first place that makes the edge.
type Graph = BTreeMap<String, BTreeMap<String, Site>>;

#[test]
fn top_level_modules_have_no_cycles() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_sources(&root);
    let tops = top_level_modules(&root);
    assert!(
        tops.len() > 10,
        "found only {tops:?} under {}",
        root.display()
    );
    let graph = build_graph(&sources, &tops);
    // Shown with `--nocapture`: the graph the module map describes.
    for (from, to) in &graph {
        println!(
            "{from} -> {}",
            to.keys().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "module cycle between top-level modules of src/:\n{}\n\
             fix: move the code one of these edges needs into a module below both, \
             and keep docs/ARCHITECTURE.md's module map in step",
            describe(&cycle, &graph)
        );
    }
}

/// The checker must see a cycle planted in sources it is given, through
/// each kind of path it claims to follow; a checker that finds nothing
/// would let every cycle through.
#[test]
fn a_planted_cycle_is_found() {
    let tops: BTreeSet<String> = ["alpha", "beta", "gamma", "delta"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let src = |module: &[&str], text: &str| Source {
        module: module.iter().map(|s| s.to_string()).collect(),
        file: module.join("/"),
        text: text.to_string(),
    };
    // alpha -> beta always; `beta_text` may lead back.
    let cycle_with = |beta_text: &str| {
        let sources = [
            src(&["alpha"], "use crate::beta::Thing;"),
            src(&["beta", "inner"], beta_text),
        ];
        find_cycle(&build_graph(&sources, &tops))
    };
    // Each case: beta reaches alpha one way.
    let cases = [
        "fn f() { crate::alpha::go() }",
        "use crate::{gamma::X, alpha::{self, Y}};",
        "use crate::{\n    delta,\n    alpha,\n};",
        "fn f() { super::super::alpha::go() }",
    ];
    for case in cases {
        let cycle = cycle_with(case).unwrap_or_else(|| panic!("no cycle found in {case:?}"));
        assert_eq!(cycle.len(), 2, "{cycle:?} in {case:?}");
    }
    // And none where the only mentions are comments, strings, `$crate`, or a
    // `super::` that stays inside the module.
    let quiet = [
        "// crate::alpha::go()\n/* crate::alpha */ fn f() {}",
        "const S: &str = \"crate::alpha::go\"; const R: &str = r#\"crate::alpha\"#;",
        "macro_rules! m { () => { $crate::alpha::go() } }",
        "fn f() { super::sibling::go() } mod tests { use super::super::other; }",
        "fn f<'a>(x: &'a str) -> char { let _ = x; 'c' } // crate::alpha",
    ];
    for case in quiet {
        assert!(cycle_with(case).is_none(), "false cycle in {case:?}");
    }
    // An inline module adds a level that `super::` must climb.
    let sources = [
        src(&["alpha"], "use crate::beta::Thing;"),
        src(
            &["beta"],
            "mod tests { fn f() { super::super::alpha::go() } }",
        ),
    ];
    assert!(find_cycle(&build_graph(&sources, &tops)).is_some());
}

/// The top-level modules declared in `src/lib.rs`.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let code = blank_comments_and_strings(&lib);
    let tokens = tokenize(&code);
    let mut tops = BTreeSet::new();
    for (i, (t, _)) in tokens.iter().enumerate() {
        if t == "mod"
            && let Some((name, _)) = tokens.get(i + 1)
        {
            tops.insert(name.clone());
        }
    }
    tops
}

fn read_sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap();
        let mut module: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        // The crate root and the binary (a separate crate) have no top level.
        if module.len() == 1 && (module[0] == "lib" || module[0] == "main") {
            continue;
        }
        out.push(Source {
            module,
            file: format!("src/{}", rel.display()),
            text: std::fs::read_to_string(&path).unwrap(),
        });
    }
    out
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn build_graph(sources: &[Source], tops: &BTreeSet<String>) -> Graph {
    let mut graph = Graph::new();
    for source in sources {
        let own = source.module[0].clone();
        graph.entry(own.clone()).or_default();
        let code = blank_comments_and_strings(&source.text);
        for (target, line) in outgoing(&code, &source.module) {
            if target != own && tops.contains(&target) {
                graph
                    .entry(own.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| Site {
                        file: source.file.clone(),
                        line,
                    });
            }
        }
    }
    graph
}

/// The top-level modules a file's paths start from, with their lines.
fn outgoing(code: &str, module: &[String]) -> Vec<(String, usize)> {
    let tokens = tokenize(code);
    let mut found = Vec::new();
    // Inline `mod name { ... }` blocks: the brace depth each one closes at.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (t, line) = (&tokens[i].0, tokens[i].1);
        match t.as_str() {
            "{" => depth += 1,
            "}" => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if is_ident(tok(&tokens, i + 1)) && tok(&tokens, i + 2) == "{" => {
                inline.push(depth + 1);
            }
            "crate" if tok(&tokens, i + 1) == "::" && !(i > 0 && tokens[i - 1].0 == "$") => {
                i = first_segments(&tokens, i + 2, line, &mut found);
                continue;
            }
            "super" if tok(&tokens, i + 1) == "::" && !(i > 0 && tokens[i - 1].0 == "::") => {
                let mut climbs = 0;
                let mut j = i;
                while tok(&tokens, j) == "super" && tok(&tokens, j + 1) == "::" {
                    climbs += 1;
                    j += 2;
                }
                if climbs >= module.len() + inline.len() {
                    i = first_segments(&tokens, j, line, &mut found);
                    continue;
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// After `crate::`: a name, or a `{...}` group of paths whose first names
/// are top-level modules. Returns the index after what was read.
fn first_segments(
    tokens: &[(String, usize)],
    start: usize,
    line: usize,
    found: &mut Vec<(String, usize)>,
) -> usize {
    let t = tok(tokens, start);
    if is_ident(t) {
        found.push((t.to_string(), line));
        return start + 1;
    }
    if t != "{" {
        return start;
    }
    // A group: at nesting level 1, each name that starts an item is a top.
    let mut level = 0usize;
    let mut item_start = true;
    let mut i = start;
    while i < tokens.len() {
        let (t, l) = (&tokens[i].0, tokens[i].1);
        match t.as_str() {
            "{" => {
                level += 1;
                item_start = level == 1;
            }
            "}" => {
                level -= 1;
                if level == 0 {
                    return i + 1;
                }
            }
            "," if level == 1 => item_start = true,
            _ if level == 1 && item_start => {
                if is_ident(t) && t != "self" {
                    found.push((t.clone(), l));
                }
                item_start = false;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn tok(tokens: &[(String, usize)], i: usize) -> &str {
    tokens.get(i).map_or("", |(t, _)| t.as_str())
}

fn is_ident(t: &str) -> bool {
    let t = t.strip_prefix("r#").unwrap_or(t);
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Identifiers, `::`, and every other character alone; with line numbers.
fn tokenize(code: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            // Raw identifier `r#name`.
            if i - start == 1 && c == 'r' && chars.get(i) == Some(&'#') {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            out.push((chars[start..i].iter().collect(), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(("::".to_string(), line));
            i += 2;
        } else {
            out.push((c.to_string(), line));
            i += 1;
        }
    }
    out
}

/// The code with comments and the contents of string and character literals
/// replaced by spaces (newlines kept, so line numbers still hold).
fn blank_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        if c[i] == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(i + 1) == '*' {
            let mut nest = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    nest += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    nest -= 1;
                    out.push_str("  ");
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if (c[i] == 'r' || (c[i] == 'b' && at(i + 1) == 'r'))
            && !prev_is_ident(&c, i)
            && raw_string_start(&c, i + usize::from(c[i] == 'b') + 1).is_some()
        {
            let open = i + usize::from(c[i] == 'b') + 1;
            let hashes = raw_string_start(&c, open).unwrap_or(0);
            // Skip prefix, hashes and the quote.
            i = open + hashes + 1;
            out.push('"');
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"' && (0..hashes).all(|h| at(i + 1 + h) == '#') {
                    i += 1 + hashes;
                    out.push('"');
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
            } else if at(i + 2) == '\'' {
                out.push_str("' '");
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// At `open`: `#`* then `"` -> the number of hashes.
fn raw_string_start(c: &[char], open: usize) -> Option<usize> {
    let mut h = 0;
    while c.get(open + h) == Some(&'#') {
        h += 1;
    }
    (c.get(open + h) == Some(&'"')).then_some(h)
}

/// A cycle as a list of modules (the edge from the last back to the first
/// closes it), or none.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    // Depth-first search with colours; the stack holds the current path.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        colour: &mut BTreeMap<String, Colour>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        colour.insert(node.to_string(), Colour::Grey);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            match colour.get(next).copied().unwrap_or(Colour::White) {
                Colour::Grey => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    return Some(stack[from..].to_vec());
                }
                Colour::White => {
                    if let Some(c) = visit(next, graph, colour, stack) {
                        return Some(c);
                    }
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour.insert(node.to_string(), Colour::Black);
        None
    }
    let mut colour = BTreeMap::new();
    for node in graph.keys() {
        if colour.get(node).copied().unwrap_or(Colour::White) == Colour::White {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut colour, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn describe(cycle: &[String], graph: &Graph) -> String {
    let mut lines = vec![format!("  {} -> {}", cycle.join(" -> "), cycle[0])];
    for (k, from) in cycle.iter().enumerate() {
        let to = &cycle[(k + 1) % cycle.len()];
        let site = &graph[from][to];
        lines.push(format!("  {from} -> {to}: {}:{}", site.file, site.line));
    }
    lines.join("\n")
}
