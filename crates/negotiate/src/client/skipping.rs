//! git's skipping negotiator (`negotiator/skipping.c`): newest first like the default one,
//! but along each line of history it sends a commit, skips 1, sends, skips 2, then 4, 7, 11…
//! (each gap half again the last, plus one), so a long history costs few haves. Once a commit
//! is acknowledged, only commits that are not its ancestors are sent.
//!
//! Like git, a commit enters the queue with the date it had when met: a commit not read yet
//! (a parent of the commit just taken) is queued as if dated 0, and is read when taken.

use std::{cmp::Reverse, collections::BinaryHeap};

use gix_hash::ObjectId;
use packgate_object::{flag, CommitGraph};
use std::collections::HashMap;

use super::{Error, COMMON, COMMON_REF as ADVERTISED, POPPED, SEEN};

/// How many commits to skip before the next have on a line of history.
#[derive(Debug, Clone, Copy, Default)]
struct Ttl {
    original: u16,
    left: u16,
}

#[derive(Debug, Default)]
pub(super) struct Skipping {
    pub(super) graph: CommitGraph,
    queue: BinaryHeap<(u64, Reverse<u64>, u32)>,
    counter: u64,
    /// The skip counts of the queued commits.
    ttl: HashMap<u32, Ttl>,
    /// Queued commits not known to be common.
    non_common: usize,
}

impl Skipping {
    fn flags(&self, node: u32) -> u16 {
        self.graph.flags(node)
    }

    fn set(&mut self, node: u32, flags: u16) {
        self.graph.nodes[node as usize].flags |= flags;
    }

    fn push(&mut self, node: u32, mark: u16) {
        self.set(node, mark | SEEN);
        let date = if self.flags(node) & flag::PARSED != 0 {
            self.graph.get(node).date
        } else {
            0
        };
        self.counter += 1;
        self.queue.push((date, Reverse(self.counter), node));
        self.ttl.insert(node, Ttl::default());
        if mark & COMMON == 0 {
            self.non_common += 1;
        }
    }

    fn parse(&mut self, db: &impl gix_object::Find, node: u32) -> Result<bool, Error> {
        Ok(self
            .graph
            .parse_gently(db, node)
            .map_err(crate::Error::from)?)
    }

    /// Mark `node` and its ancestors met so far common.
    fn mark_common(&mut self, node: u32) {
        if self.flags(node) & COMMON != 0 {
            return;
        }
        self.set(node, COMMON);
        // Each commit is stacked once, when it becomes common.
        let mut stack = vec![node];
        while let Some(commit) = stack.pop() {
            if self.flags(commit) & POPPED == 0 {
                self.non_common = self.non_common.saturating_sub(1);
            }
            if self.flags(commit) & flag::PARSED == 0 {
                continue;
            }
            for position in self.graph.get(commit).parents.clone() {
                let parent = self.graph.parent(position);
                let flags = self.flags(parent);
                if flags & SEEN == 0 || flags & COMMON != 0 {
                    continue;
                }
                self.set(parent, COMMON);
                stack.push(parent);
            }
        }
    }

    /// Queue `parent` of the commit just taken (`child`, with `ttl`) unless it was taken
    /// already (clock skew); whether it is queued.
    fn push_parent(&mut self, child: u32, ttl: Ttl, parent: u32) -> bool {
        if self.flags(parent) & SEEN != 0 {
            if self.flags(parent) & POPPED != 0 || !self.ttl.contains_key(&parent) {
                return false;
            }
        } else {
            self.push(parent, 0);
        }
        if self.flags(child) & (COMMON | ADVERTISED) != 0 {
            self.mark_common(parent);
        } else {
            let original = if ttl.left != 0 {
                ttl.original
            } else {
                // git computes this in 16 bits.
                (u32::from(ttl.original) * 3 / 2 + 1) as u16
            };
            let left = if ttl.left != 0 {
                ttl.left - 1
            } else {
                original
            };
            if let Some(entry) = self.ttl.get_mut(&parent) {
                if entry.original < original {
                    *entry = Ttl { original, left };
                }
            }
        }
        true
    }

    pub(super) fn next(&mut self, db: &impl gix_object::Find) -> Result<Option<ObjectId>, Error> {
        // Every commit is queued at most once, so this ends.
        loop {
            if self.non_common == 0 {
                return Ok(None);
            }
            let Some((_, _, node)) = self.queue.pop() else {
                return Ok(None);
            };
            let ttl = self.ttl.remove(&node).unwrap_or_default();
            self.set(node, POPPED);
            let common = self.flags(node) & COMMON != 0;
            if !common {
                self.non_common = self.non_common.saturating_sub(1);
            }
            let mut send = !common && ttl.left == 0;
            self.parse(db, node)?;
            let mut parent_pushed = false;
            for position in self.graph.get(node).parents.clone() {
                let parent = self.graph.parent(position);
                parent_pushed |= self.push_parent(node, ttl, parent);
            }
            // No parent left to stand for it (a root, or clock skew): send it anyway.
            if !common && !parent_pushed {
                send = true;
            }
            if send {
                return Ok(Some(self.graph.get(node).id));
            }
        }
    }

    pub(super) fn known_common(
        &mut self,
        db: &impl gix_object::Find,
        node: u32,
    ) -> Result<(), Error> {
        if self.flags(node) & SEEN == 0 {
            self.parse(db, node)?;
            self.push(node, ADVERTISED);
        }
        Ok(())
    }

    pub(super) fn add_tip(&mut self, db: &impl gix_object::Find, node: u32) -> Result<(), Error> {
        if self.flags(node) & SEEN == 0 {
            self.parse(db, node)?;
            self.push(node, 0);
        }
        Ok(())
    }

    /// Whether `node` was known to be common; it and its ancestors are now. Only commits
    /// sent can be acknowledged (git dies otherwise).
    pub(super) fn ack(&mut self, node: u32) -> Result<bool, Error> {
        if self.flags(node) & SEEN == 0 {
            return Err(Error::UnexpectedAnswer(format!(
                "ACK {} for a commit not sent as a have",
                self.graph.get(node).id
            )));
        }
        let was_common = self.flags(node) & COMMON != 0;
        self.mark_common(node);
        Ok(was_common)
    }
}
