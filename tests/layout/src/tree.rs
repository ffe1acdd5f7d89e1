//! Reading a crate's sources into its module tree and the module paths each module
//! refers to. The tree comes from the file layout and the `mod` declarations, the
//! references from `crate::…`, `self::…` and `super::…` paths, `use` trees (each leaf of
//! a `use crate::{a, b}` group is one reference) and paths to a module's own children.
//! Paths inside macro calls (`tokio::select!`, `format!`) are found by a token scan,
//! since syn leaves macro bodies unparsed. Test code is left out: `#[cfg(test)]` items
//! and module bodies, and `*_tests.rs` files, because tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// A module's path below the crate root (`[]` is the root, `["grpc", "service"]` is
/// `crate::grpc::service`).
pub type ModPath = Vec<String>;

/// Why a crate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A source file is missing or unreadable.
    #[error("cannot read {0}")]
    Read(PathBuf),
    /// A source file does not parse as Rust.
    #[error("cannot parse {file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// syn's message.
        message: String,
    },
    /// `mod x;` names no file.
    #[error("{file}: module `{module}` has neither {module}.rs nor {module}/mod.rs")]
    MissingModule {
        /// The declaring file.
        file: PathBuf,
        /// The declared module.
        module: String,
    },
}

/// Where the sources come from: the file system, or a map in the unit tests.
pub trait Source {
    /// The text of `path`, if there is such a file.
    fn read(&self, path: &Path) -> Option<String>;
}

/// Sources on disk.
pub struct Disk;

impl Source for Disk {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}

impl Source for BTreeMap<PathBuf, String> {
    fn read(&self, path: &Path) -> Option<String> {
        self.get(path).cloned()
    }
}

/// One place a module refers to a path of its crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The referring module.
    pub from: ModPath,
    /// The path made absolute (below the crate root); its longest prefix that is a
    /// module is the module referred to.
    pub target: Vec<String>,
    /// The file it was found in, relative to the crate's source folder.
    pub file: PathBuf,
    /// The path as written, e.g. `crate::grpc::scope`.
    pub text: String,
}

/// A crate's modules and the references between them.
#[derive(Debug, Default)]
pub struct Crate {
    /// Every (non-test) module, the root included.
    pub modules: BTreeSet<ModPath>,
    /// Every reference found, in file order.
    pub refs: Vec<Reference>,
}

impl Crate {
    /// Reads the crate whose root file is `src_dir/lib.rs`.
    pub fn load(src_dir: &Path, source: &impl Source) -> Result<Self, LayoutError> {
        let mut loader = Loader {
            source,
            src_dir,
            krate: Crate::default(),
        };
        loader.file(&src_dir.join("lib.rs"), Vec::new(), src_dir.to_path_buf())?;
        Ok(loader.krate)
    }

    /// The module `target` refers to: its longest prefix that is a module.
    pub fn resolve(&self, target: &[String]) -> ModPath {
        (0..=target.len())
            .rev()
            .map(|n| target[..n].to_vec())
            .find(|p| self.modules.contains(p))
            .unwrap_or_default()
    }
}

struct Loader<'a, S> {
    source: &'a S,
    src_dir: &'a Path,
    krate: Crate,
}

impl<S: Source> Loader<'_, S> {
    /// Reads `file`, the body of `module`, whose `mod x;` children live in `child_dir`.
    fn file(
        &mut self,
        file: &Path,
        module: ModPath,
        child_dir: PathBuf,
    ) -> Result<(), LayoutError> {
        let text = self
            .source
            .read(file)
            .ok_or_else(|| LayoutError::Read(file.to_path_buf()))?;
        let parsed = syn::parse_file(&text).map_err(|e| LayoutError::Parse {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        self.items(&parsed.items, module, &child_dir, file)
    }

    fn items(
        &mut self,
        items: &[syn::Item],
        module: ModPath,
        child_dir: &Path,
        file: &Path,
    ) -> Result<(), LayoutError> {
        self.krate.modules.insert(module.clone());
        let children: BTreeSet<String> = items
            .iter()
            .filter_map(|i| match i {
                syn::Item::Mod(m) if !is_test(&m.attrs) => Some(ident(&m.ident)),
                _ => None,
            })
            .collect();
        let shown = file
            .strip_prefix(self.src_dir)
            .unwrap_or(file)
            .to_path_buf();
        let mut collector = Collector {
            module: &module,
            children: &children,
            file: &shown,
            out: &mut self.krate.refs,
        };
        for item in items {
            if !matches!(item, syn::Item::Mod(_)) {
                collector.visit_item(item);
            }
        }
        for item in items {
            let syn::Item::Mod(m) = item else { continue };
            if is_test(&m.attrs) {
                continue;
            }
            let name = ident(&m.ident);
            let mut child = module.clone();
            child.push(name.clone());
            match &m.content {
                Some((_, inner)) => self.items(inner, child, &child_dir.join(&name), file)?,
                None => {
                    let path = match path_attr(&m.attrs) {
                        Some(p) => file.parent().unwrap_or(Path::new("")).join(p),
                        None => {
                            let flat = child_dir.join(format!("{name}.rs"));
                            let nested = child_dir.join(&name).join("mod.rs");
                            if self.source.read(&flat).is_some() {
                                flat
                            } else if self.source.read(&nested).is_some() {
                                nested
                            } else {
                                return Err(LayoutError::MissingModule {
                                    file: file.to_path_buf(),
                                    module: name,
                                });
                            }
                        }
                    };
                    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if file_name.ends_with("_tests.rs") {
                        continue;
                    }
                    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
                    let grandchildren = if file_name == "mod.rs" {
                        dir
                    } else {
                        dir.join(path.file_stem().and_then(|s| s.to_str()).unwrap_or(""))
                    };
                    self.file(&path, child, grandchildren)?;
                }
            }
        }
        Ok(())
    }
}

/// Collects the references of one module's items (not of its child modules).
struct Collector<'a> {
    module: &'a ModPath,
    children: &'a BTreeSet<String>,
    file: &'a Path,
    out: &'a mut Vec<Reference>,
}

impl Collector<'_> {
    fn push(&mut self, segments: &[String]) {
        if let Some(target) = absolute(self.module, self.children, segments) {
            self.out.push(Reference {
                from: self.module.clone(),
                target,
                file: self.file.to_path_buf(),
                text: segments.join("::"),
            });
        }
    }

    /// Finds `crate::a::b` / `super::a` / `self::a` sequences in unparsed macro tokens.
    fn scan(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            if let TokenTree::Group(g) = &tokens[i] {
                self.scan(g.stream());
                i += 1;
                continue;
            }
            let mut segments = Vec::new();
            let mut j = i;
            while let Some(TokenTree::Ident(id)) = tokens.get(j) {
                segments.push(id.to_string());
                if is_sep(&tokens, j + 1) {
                    j += 3;
                } else {
                    j += 1;
                    break;
                }
            }
            let first = segments.first().map(String::as_str);
            if segments.len() > 1 && matches!(first, Some("crate" | "super" | "self")) {
                self.push(&segments);
                i = j;
            } else {
                i += 1;
            }
        }
    }
}

/// Whether `tokens[at..]` starts with `::`.
fn is_sep(tokens: &[TokenTree], at: usize) -> bool {
    matches!(
        (tokens.get(at), tokens.get(at + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && b.as_char() == ':'
    )
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !item_attrs(item).is_some_and(is_test) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Fn(f) => &f.attrs,
            syn::ImplItem::Const(c) => &c.attrs,
            syn::ImplItem::Type(t) => &t.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !is_test(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    // An inline module inside a function body is rare; its paths count for the module.
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test(&m.attrs) {
            visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_some() {
            return;
        }
        let mut leaves = Vec::new();
        flatten(&u.tree, Vec::new(), &mut leaves);
        for leaf in leaves {
            self.push(&leaf);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            let segments: Vec<String> = p.segments.iter().map(|s| ident(&s.ident)).collect();
            self.push(&segments);
        }
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit::visit_macro(self, m);
        self.scan(m.tokens.clone());
    }

    // `pub(crate)` / `pub(super)` say who may look, not what this module uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    // Attribute paths (`#[tokio::test]`, `#[error(..)]`) are not module references.
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}
}

/// The leaves of a `use` tree as paths: `a::{b, c::{self, d}}` is `a::b`, `a::c`, `a::c::d`.
fn flatten(tree: &syn::UseTree, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let with = |name: &syn::Ident| {
        let mut p = prefix.clone();
        if name != "self" || p.is_empty() {
            p.push(ident(name));
        }
        p
    };
    match tree {
        syn::UseTree::Path(p) => flatten(&p.tree, with(&p.ident), out),
        syn::UseTree::Name(n) => out.push(with(&n.ident)),
        syn::UseTree::Rename(r) => out.push(with(&r.ident)),
        syn::UseTree::Glob(_) => out.push(prefix),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten(t, prefix.clone(), out);
            }
        }
    }
}

/// `segments` as seen from `module` made absolute, or `None` when it does not start in
/// this crate (an extern crate, a local name, a prelude item).
fn absolute(
    module: &ModPath,
    children: &BTreeSet<String>,
    segments: &[String],
) -> Option<Vec<String>> {
    let (first, rest) = segments.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some(module.iter().chain(rest).cloned().collect()),
        "super" => {
            let ups = segments.iter().take_while(|s| *s == "super").count();
            let base = module.len().checked_sub(ups)?;
            Some(
                module[..base]
                    .iter()
                    .chain(&segments[ups..])
                    .cloned()
                    .collect(),
            )
        }
        name if children.contains(name) => Some(module.iter().chain(segments).cloned().collect()),
        _ => None,
    }
}

fn ident(i: &syn::Ident) -> String {
    let s = i.to_string();
    s.strip_prefix("r#").map(str::to_string).unwrap_or(s)
}

/// Whether the attributes hold `#[cfg(test)]` (or a `cfg(all(test, …))`).
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let syn::Meta::List(list) = &a.meta else {
            return false;
        };
        if !list.path.is_ident("cfg") {
            return false;
        }
        let text: String = list.tokens.to_string().split_whitespace().collect();
        text == "test"
            || text.starts_with("all(test,")
            || text.contains(",test,")
            || text.ends_with(",test)")
    })
}

/// The file named by `#[path = "…"]`.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        let syn::Meta::NameValue(nv) = &a.meta else {
            return None;
        };
        if !nv.path.is_ident("path") {
            return None;
        }
        match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    })
}

fn item_attrs(item: &syn::Item) -> Option<&[syn::Attribute]> {
    use syn::Item::*;
    Some(match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => return None,
    })
}
