//! The dependency graph among the children of one module (the crate root's children
//! are the top-level modules; `grpc`'s children are its files), built from a crate's
//! references, and the checks on it: a cycle, and "module `a` must not use module `b`".
//! A reference counts for the child of the folder that contains each end, so
//! `crate::grpc::service` using `crate::state::Hub` is the edge `grpc → state` at the
//! top level; references from the folder's own file (`mod.rs`) are the folder wiring
//! its children and do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::tree::{Crate, ModPath, Reference};

/// One module's children and which of them use which.
#[derive(Debug)]
pub struct Graph {
    /// The folder (`[]` for the crate root).
    pub parent: ModPath,
    /// Its child modules.
    pub nodes: BTreeSet<String>,
    /// `(from, to)` with the references that make the edge, in file order.
    pub edges: BTreeMap<(String, String), Vec<Reference>>,
}

impl Crate {
    /// Every module that has child modules, the root first.
    pub fn folders(&self) -> Vec<ModPath> {
        let mut out: Vec<ModPath> = self
            .modules
            .iter()
            .filter(|m| !m.is_empty())
            .map(|m| m[..m.len() - 1].to_vec())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        out.sort_by_key(|m| m.len());
        out
    }

    /// The graph among the children of `parent`.
    pub fn graph(&self, parent: &[String]) -> Graph {
        let depth = parent.len();
        let child = |m: &[String]| -> Option<String> {
            (m.len() > depth && m.starts_with(parent)).then(|| m[depth].clone())
        };
        let nodes = self.modules.iter().filter_map(|m| child(m)).collect();
        let mut edges: BTreeMap<(String, String), Vec<Reference>> = BTreeMap::new();
        for r in &self.refs {
            let to = self.resolve(&r.target);
            if let (Some(a), Some(b)) = (child(&r.from), child(&to))
                && a != b
            {
                edges.entry((a, b)).or_default().push(r.clone());
            }
        }
        Graph {
            parent: parent.to_vec(),
            nodes,
            edges,
        }
    }
}

impl Graph {
    /// The modules `from` uses directly.
    pub fn uses(&self, from: &str) -> BTreeSet<&str> {
        self.edges
            .keys()
            .filter(|(a, _)| a == from)
            .map(|(_, b)| b.as_str())
            .collect()
    }

    /// One cycle per group of modules that reach each other (strongly connected
    /// component), so every tangle shows at once rather than one per run.
    /// Each is `(members, cycle)`: the modules of the group, and one cycle through them.
    pub fn cycles(&self) -> Vec<(Vec<String>, Vec<String>)> {
        let nodes: BTreeSet<&str> = self
            .nodes
            .iter()
            .map(String::as_str)
            .chain(
                self.edges
                    .keys()
                    .flat_map(|(a, b)| [a.as_str(), b.as_str()]),
            )
            .collect();
        let reach: BTreeMap<&str, BTreeSet<&str>> =
            nodes.iter().map(|n| (*n, self.reachable(n))).collect();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::new();
        for n in &nodes {
            if seen.contains(n) || !reach[n].contains(n) {
                continue;
            }
            let group: BTreeSet<&str> = reach[n]
                .iter()
                .copied()
                .filter(|m| reach[m].contains(n))
                .collect();
            seen.extend(group.iter().copied());
            let sub = Graph {
                parent: self.parent.clone(),
                nodes: group.iter().map(|m| m.to_string()).collect(),
                edges: self
                    .edges
                    .iter()
                    .filter(|((a, b), _)| group.contains(a.as_str()) && group.contains(b.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            if let Some(c) = sub.cycle() {
                out.push((sub.nodes.into_iter().collect(), c));
            }
        }
        out
    }

    /// The modules reachable from `from` by one or more edges.
    fn reachable(&self, from: &str) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for next in self.uses(n) {
                if out.insert(next) {
                    todo.push(next);
                }
            }
        }
        out
    }

    /// A cycle, as the modules along it with the first repeated at the end
    /// (`["a", "b", "a"]`), or `None`.
    pub fn cycle(&self) -> Option<Vec<String>> {
        // Depth-first search; a back edge to a module on the stack closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnStack,
            Done,
        }
        fn visit(
            g: &Graph,
            n: &str,
            marks: &mut BTreeMap<String, Mark>,
            stack: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            marks.insert(n.to_string(), Mark::OnStack);
            stack.push(n.to_string());
            for next in g.uses(n) {
                match marks.get(next).copied().unwrap_or(Mark::New) {
                    Mark::OnStack => {
                        let start = stack.iter().position(|s| s == next).unwrap_or(0);
                        let mut cycle = stack[start..].to_vec();
                        cycle.push(next.to_string());
                        return Some(cycle);
                    }
                    Mark::New => {
                        if let Some(c) = visit(g, next, marks, stack) {
                            return Some(c);
                        }
                    }
                    Mark::Done => {}
                }
            }
            stack.pop();
            marks.insert(n.to_string(), Mark::Done);
            None
        }
        let mut marks = BTreeMap::new();
        let starts: BTreeSet<&str> = self
            .nodes
            .iter()
            .map(String::as_str)
            .chain(self.edges.keys().map(|(a, _)| a.as_str()))
            .collect();
        for n in starts {
            if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New
                && let Some(c) = visit(self, n, &mut marks, &mut Vec::new())
            {
                return Some(c);
            }
        }
        None
    }

    /// `cycle` spelled out for a failure message: each step with the first reference
    /// that makes it.
    pub fn explain(&self, path: &[String]) -> String {
        let mut out = path.join(" -> ");
        for step in path.windows(2) {
            let key = (step[0].clone(), step[1].clone());
            for r in self.edges.get(&key).into_iter().flatten().take(3) {
                let _ = write!(
                    out,
                    "\n    {} -> {}: {} uses `{}`",
                    step[0],
                    step[1],
                    r.file.display(),
                    r.text
                );
            }
        }
        out
    }

    /// The folder as a module path for messages (`crate` for the root).
    pub fn name(&self) -> String {
        std::iter::once("crate".to_string())
            .chain(self.parent.iter().cloned())
            .collect::<Vec<_>>()
            .join("::")
    }
}
