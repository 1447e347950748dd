//! The rooms stay small enough to hold in one's head (issue 19): no file under `src/` over
//! [`MAX_FILE_LINES`] lines and no function there over [`MAX_FN_LINES`], counted from its
//! `fn` line to its closing brace. A file or function may be longer only with its reason
//! written down: a `//! layout: <reason>` line in the file's header, or a
//! `// layout: <reason>` line among the lines just above the function. Tests under `tests/`
//! are scenario scripts and are not held to this.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;
/// How far above a function's `fn` line its reason may stand (doc comments, attributes).
const REASON_WINDOW: usize = 12;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every function with a body: (name, first line, last line), 1-based.
#[derive(Default)]
struct Functions(Vec<(String, usize, usize)>);

impl Functions {
    fn add(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
        let first = sig.fn_token.span.start().line;
        let last = block.brace_token.span.close().end().line;
        self.0.push((name.to_string(), first, last));
    }
}

impl<'ast> Visit<'ast> for Functions {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.add(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.add(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.add(&f.sig.ident, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// What is over the limits in one file's text (`name` for messages).
fn violations(name: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let header_reason = lines
        .iter()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .any(|l| l.starts_with("//! layout:"));
    if lines.len() > MAX_FILE_LINES && !header_reason {
        out.push(format!(
            "{name}: {} lines (limit {MAX_FILE_LINES})",
            lines.len()
        ));
    }
    let file = match syn::parse_file(text) {
        Ok(f) => f,
        Err(e) => return vec![format!("{name}: does not parse: {e}")],
    };
    let mut fns = Functions::default();
    fns.visit_file(&file);
    for (fn_name, first, last) in fns.0 {
        let length = last + 1 - first;
        let above = &lines[first.saturating_sub(1 + REASON_WINDOW)..first - 1];
        let reason = above
            .iter()
            .any(|l| l.trim_start().starts_with("// layout:"));
        if length > MAX_FN_LINES && !reason {
            out.push(format!(
                "{name}:{first}: fn {fn_name} is {length} lines (limit {MAX_FN_LINES})"
            ));
        }
    }
    out
}

#[test]
fn no_file_or_function_in_src_is_over_its_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut all = Vec::new();
    for path in &files {
        let name = path.strip_prefix(&src).unwrap().display().to_string();
        all.extend(violations(&name, &std::fs::read_to_string(path).unwrap()));
    }
    assert!(all.is_empty(), "over the limits:\n{}", all.join("\n"));
}

/// The checker itself finds what it must, and honours a stated reason.
#[test]
fn the_checker_finds_long_functions_and_files() {
    let body = |n: usize| "    let _x = 1;\n".repeat(n);
    let long = format!("fn long() {{\n{}}}\n", body(MAX_FN_LINES - 1));
    let short = format!("fn short() {{\n{}}}\n", body(MAX_FN_LINES - 2));
    let in_impl = format!(
        "struct S;\nimpl S {{\n    fn m(&self) {{\n{}    }}\n}}\n",
        body(90)
    );
    let excused = format!("// layout: a table of cases reads best in one place\n{long}");
    assert_eq!(
        violations("a.rs", &long),
        ["a.rs:1: fn long is 81 lines (limit 80)"]
    );
    assert!(violations("b.rs", &short).is_empty());
    assert_eq!(
        violations("c.rs", &in_impl),
        ["c.rs:3: fn m is 92 lines (limit 80)"]
    );
    assert!(violations("d.rs", &excused).is_empty());
    let big = format!("//! docs\n{}", "const A: u8 = 1;\n".repeat(MAX_FILE_LINES));
    assert_eq!(violations("e.rs", &big), ["e.rs: 601 lines (limit 600)"]);
    let big_excused = format!(
        "//! docs\n//! layout: generated table\n{}",
        "const A: u8 = 1;\n".repeat(600)
    );
    assert!(violations("f.rs", &big_excused).is_empty());
}
