//! What send-pack decides about each command before anything is sent: git's
//! `set_ref_status_for_push()` (up to date, stale lease, fast-forward rules) and the
//! remote's missing `delete-refs`, then `reject_atomic_push()`.

use gix_hash::ObjectId;

use super::{Expected, PushCommand};

/// What the local history can say about objects (the client's object database).
pub trait History {
    /// Whether `id` is present.
    fn has(&self, id: &ObjectId) -> bool;
    /// The commit `id` is or peels to (through annotated tags), `None` for anything else.
    fn commit_of(&self, id: &ObjectId) -> Option<ObjectId>;
    /// Whether commit `ancestor` is `descendant` or one of its ancestors.
    fn is_ancestor(&self, ancestor: &ObjectId, descendant: &ObjectId) -> bool;
}

/// The decision about one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: the remote has it already.
    UpToDate,
    /// Sent, with the advertised old value; `forced` when a rule was overridden.
    Send {
        /// The update overrides the fast-forward rules (`--force`, `+`, or a matching lease).
        forced: bool,
    },
    /// Not sent, for git's reason (`non-fast-forward`, `fetch first`, …).
    Reject(&'static str),
}

/// git's wording of the reasons a command is not sent.
pub mod reason {
    /// The remote's value is not in the local repository.
    pub const FETCH_FIRST: &str = "fetch first";
    /// The new value does not descend from the remote's.
    pub const NON_FAST_FORWARD: &str = "non-fast-forward";
    /// A tag that exists on the remote.
    pub const ALREADY_EXISTS: &str = "already exists";
    /// Old or new value is not a commit.
    pub const NEEDS_FORCE: &str = "needs force";
    /// `--force-with-lease` expected another value.
    pub const STALE_INFO: &str = "stale info";
    /// A deletion, and the remote lacks `delete-refs`.
    pub const NO_DELETE: &str = "remote does not support deleting refs";
    /// A deletion of a ref the remote does not have.
    pub const NO_SUCH_REF: &str = "remote ref does not exist";
    /// Another command of an atomic push was rejected.
    pub const ATOMIC: &str = "atomic push failed";
}

/// Decides one command against the remote's value `old` (`None`: the remote lacks the ref).
pub fn decide(
    command: &PushCommand,
    old: Option<ObjectId>,
    delete_refs: bool,
    history: &dyn History,
) -> Decision {
    let deletion = command.new.is_null();
    let old_id = old.unwrap_or_else(|| ObjectId::null(command.new.kind()));
    if deletion {
        if !delete_refs {
            return Decision::Reject(reason::NO_DELETE);
        }
        if let Expected::Exactly(expected) = command.expected {
            if expected != old_id {
                return Decision::Reject(reason::STALE_INFO);
            }
        }
        if old.is_none() {
            return Decision::Reject(reason::NO_SUCH_REF);
        }
        return Decision::Send { forced: false };
    }
    if old_id == command.new {
        return Decision::UpToDate;
    }
    let mut force = command.force;
    if let Expected::Exactly(expected) = command.expected {
        if expected != old_id {
            return Decision::Reject(reason::STALE_INFO);
        }
        force = true;
    }
    let rule = match old {
        None => None,
        Some(_) if command.name.as_bstr().starts_with(b"refs/tags/") => {
            Some(reason::ALREADY_EXISTS)
        }
        Some(old) if !history.has(&old) => Some(reason::FETCH_FIRST),
        Some(old) => match (history.commit_of(&old), history.commit_of(&command.new)) {
            (Some(old), Some(new)) if history.is_ancestor(&old, &new) => None,
            (Some(_), Some(_)) => Some(reason::NON_FAST_FORWARD),
            _ => Some(reason::NEEDS_FORCE),
        },
    };
    match rule {
        None => Decision::Send { forced: false },
        Some(_) if force => Decision::Send { forced: true },
        Some(reason) => Decision::Reject(reason),
    }
}

/// Every command's decision; with `atomic`, one rejection turns every command that would
/// have been sent into [`reason::ATOMIC`] (git's `reject_atomic_push()`: the rejected keep
/// their own reason, the up-to-date stay so).
pub fn decide_all(
    commands: &[PushCommand],
    old: impl Fn(&PushCommand) -> Option<ObjectId>,
    delete_refs: bool,
    atomic: bool,
    history: &dyn History,
) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = commands
        .iter()
        .map(|command| decide(command, old(command), delete_refs, history))
        .collect();
    if atomic && decisions.iter().any(|d| matches!(d, Decision::Reject(_))) {
        for decision in &mut decisions {
            if matches!(decision, Decision::Send { .. }) {
                *decision = Decision::Reject(reason::ATOMIC);
            }
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A line of history: ids 1 ← 2 ← 3, and 4 on another line; 9 is a tree; 8 a tag of 3.
    struct Fake {
        parents: HashMap<ObjectId, ObjectId>,
    }

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    impl History for Fake {
        fn has(&self, id: &ObjectId) -> bool {
            id.as_bytes()[0] != 7
        }
        fn commit_of(&self, i: &ObjectId) -> Option<ObjectId> {
            match i.as_bytes()[0] {
                9 => None,
                8 => Some(id(3)),
                _ => Some(*i),
            }
        }
        fn is_ancestor(&self, ancestor: &ObjectId, descendant: &ObjectId) -> bool {
            let mut current = *descendant;
            for _ in 0..10 {
                if current == *ancestor {
                    return true;
                }
                match self.parents.get(&current) {
                    Some(parent) => current = *parent,
                    None => return false,
                }
            }
            false
        }
    }

    fn fake() -> Fake {
        Fake {
            parents: [(id(2), id(1)), (id(3), id(2))].into_iter().collect(),
        }
    }

    fn command(name: &str, new: ObjectId) -> PushCommand {
        PushCommand {
            name: name.try_into().unwrap(),
            new,
            expected: Expected::Advertised,
            force: false,
        }
    }

    #[test]
    fn fast_forward_rules() {
        let h = fake();
        let main = |new| command("refs/heads/main", new);
        assert_eq!(
            decide(&main(id(3)), None, true, &h),
            Decision::Send { forced: false }
        );
        assert_eq!(
            decide(&main(id(3)), Some(id(1)), true, &h),
            Decision::Send { forced: false }
        );
        assert_eq!(
            decide(&main(id(3)), Some(id(3)), true, &h),
            Decision::UpToDate
        );
        assert_eq!(
            decide(&main(id(4)), Some(id(3)), true, &h),
            Decision::Reject(reason::NON_FAST_FORWARD)
        );
        assert_eq!(
            decide(&main(id(3)), Some(id(7)), true, &h),
            Decision::Reject(reason::FETCH_FIRST)
        );
        assert_eq!(
            decide(&main(id(9)), Some(id(3)), true, &h),
            Decision::Reject(reason::NEEDS_FORCE)
        );
        // A tag peels to its commit for the rule.
        assert_eq!(
            decide(&main(id(8)), Some(id(2)), true, &h),
            Decision::Send { forced: false }
        );
        let forced = PushCommand {
            force: true,
            ..main(id(4))
        };
        assert_eq!(
            decide(&forced, Some(id(3)), true, &h),
            Decision::Send { forced: true }
        );
        assert_eq!(
            decide(&command("refs/tags/v1", id(3)), Some(id(1)), true, &h),
            Decision::Reject(reason::ALREADY_EXISTS)
        );
    }

    #[test]
    fn leases_and_deletions() {
        let h = fake();
        let lease = |expected| PushCommand {
            expected: Expected::Exactly(expected),
            ..command("refs/heads/main", id(4))
        };
        assert_eq!(
            decide(&lease(id(2)), Some(id(3)), true, &h),
            Decision::Reject(reason::STALE_INFO)
        );
        assert_eq!(
            decide(&lease(id(3)), Some(id(3)), true, &h),
            Decision::Send { forced: true }
        );
        assert_eq!(
            decide(&lease(ObjectId::null(gix_hash::Kind::Sha1)), None, true, &h),
            Decision::Send { forced: false }
        );
        assert_eq!(
            decide(
                &lease(ObjectId::null(gix_hash::Kind::Sha1)),
                Some(id(3)),
                true,
                &h
            ),
            Decision::Reject(reason::STALE_INFO)
        );
        let delete = command("refs/heads/main", ObjectId::null(gix_hash::Kind::Sha1));
        assert_eq!(
            decide(&delete, Some(id(3)), true, &h),
            Decision::Send { forced: false }
        );
        assert_eq!(
            decide(&delete, Some(id(3)), false, &h),
            Decision::Reject(reason::NO_DELETE)
        );
        assert_eq!(
            decide(&delete, None, true, &h),
            Decision::Reject(reason::NO_SUCH_REF)
        );
    }

    #[test]
    fn atomic_rejects_the_rest() {
        let h = fake();
        let commands = [
            command("refs/heads/a", id(3)),
            command("refs/heads/b", id(4)),
            command("refs/heads/c", id(3)),
        ];
        let old = |c: &PushCommand| match c.name.as_bstr().to_string().as_str() {
            "refs/heads/a" => Some(id(1)),
            "refs/heads/b" => Some(id(3)),
            _ => Some(id(3)),
        };
        let decisions = decide_all(&commands, old, true, true, &h);
        assert_eq!(
            decisions,
            vec![
                Decision::Reject(reason::ATOMIC),
                Decision::Reject(reason::NON_FAST_FORWARD),
                Decision::UpToDate
            ]
        );
        let decisions = decide_all(&commands, old, true, false, &h);
        assert_eq!(decisions[0], Decision::Send { forced: false });
    }
}
