//! `receive.procReceiveRefs`: which commands of a push go to the `proc-receive` hook instead
//! of being carried out by receive-pack (see [`packgate_hooks::proc_receive`] for the hook's
//! side).

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;

/// One `receive.procReceiveRefs` value: `[<modifiers>:]<prefix>`.
///
/// The modifiers are `a` (commands that create a ref), `d` (that delete one), `m` (that
/// modify one) and `!` (the rule matches the refs *not* below the prefix); without a `:` the
/// rule takes every kind of command. As in git, other characters before the `:` are ignored,
/// and a rule with modifiers but none of `a`, `d`, `m` takes no command at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcReceiveRef {
    /// Whether it takes commands that create a ref (null old value).
    pub add: bool,
    /// Whether it takes commands that delete a ref (null new value).
    pub delete: bool,
    /// Whether it takes commands that change a ref.
    pub modify: bool,
    /// `!`: whether it takes refs outside the prefix instead of below it.
    pub negative: bool,
    /// The prefix, without trailing slashes: a ref matches if it is the prefix or below it.
    pub prefix: BString,
}

impl ProcReceiveRef {
    /// Parse one configured value, as git's `proc_receive_ref_append()` does.
    pub fn parse(value: &BStr) -> Self {
        let value: &[u8] = value.as_ref();
        let (modifiers, prefix) = match value.find_byte(b':') {
            Some(colon) => (Some(&value[..colon]), &value[colon + 1..]),
            None => (None, value),
        };
        let mut rule = ProcReceiveRef {
            add: modifiers.is_none(),
            delete: modifiers.is_none(),
            modify: modifiers.is_none(),
            negative: false,
            prefix: BString::default(),
        };
        for modifier in modifiers.unwrap_or_default().iter() {
            match modifier {
                b'a' => rule.add = true,
                b'd' => rule.delete = true,
                b'm' => rule.modify = true,
                b'!' => rule.negative = true,
                _ => {}
            }
        }
        let mut prefix = prefix;
        while let Some(shorter) = prefix.strip_suffix(b"/") {
            prefix = shorter;
        }
        rule.prefix = prefix.into();
        rule
    }

    /// Whether this rule takes the command `old` → `new` on `name`.
    fn takes(&self, old: &ObjectId, new: &ObjectId, name: &BStr) -> bool {
        let kind_wanted = if old.is_null() {
            self.add
        } else if new.is_null() {
            self.delete
        } else {
            self.modify
        };
        // A deletion of a ref that never existed (both null) must pass both tests, as in git.
        if !kind_wanted || (old.is_null() && new.is_null() && !self.delete) {
            return false;
        }
        let below = name
            .strip_prefix(self.prefix.as_slice())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"));
        below != self.negative
    }
}

/// All `receive.procReceiveRefs` values, in the configuration's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcReceiveRefs {
    rules: Vec<ProcReceiveRef>,
}

impl ProcReceiveRefs {
    /// The rules from `config` (every `receive.procReceiveRefs` value).
    pub fn from_config(config: &gix_config::File) -> Self {
        let rules = config
            .strings("receive.procReceiveRefs")
            .unwrap_or_default()
            .iter()
            .map(|value| ProcReceiveRef::parse(value.as_ref()))
            .collect();
        ProcReceiveRefs { rules }
    }

    /// Rules from values as configured.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        ProcReceiveRefs {
            rules: values
                .into_iter()
                .map(|value| ProcReceiveRef::parse(value.into()))
                .collect(),
        }
    }

    /// Whether no rule is configured (no command goes to the hook).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules.
    pub fn rules(&self) -> &[ProcReceiveRef] {
        &self.rules
    }

    /// Whether the command `old` → `new` on `name` (as the client names it) goes to the
    /// `proc-receive` hook: some rule takes it.
    pub fn matches(&self, old: &ObjectId, new: &ObjectId, name: &BStr) -> bool {
        self.rules.iter().any(|rule| rule.takes(old, new, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(digit: char) -> ObjectId {
        ObjectId::from_hex(digit.to_string().repeat(40).as_bytes()).unwrap()
    }

    #[test]
    fn parse_values() {
        assert_eq!(
            ProcReceiveRef::parse("refs/for/".into()),
            ProcReceiveRef {
                add: true,
                delete: true,
                modify: true,
                negative: false,
                prefix: "refs/for".into()
            }
        );
        assert_eq!(
            ProcReceiveRef::parse("a!:refs/heads//".into()),
            ProcReceiveRef {
                add: true,
                delete: false,
                modify: false,
                negative: true,
                prefix: "refs/heads".into()
            }
        );
        let rule = ProcReceiveRef::parse("xm:refs/heads/main".into());
        assert!(rule.modify && !rule.add && !rule.delete && !rule.negative);
    }

    #[test]
    fn matching() {
        let (zero, a, b) = (id('0'), id('a'), id('b'));
        let check = |values: &[&str], old: &ObjectId, new: &ObjectId, name: &str, expected| {
            let refs = ProcReceiveRefs::new(values.iter().copied());
            assert_eq!(
                refs.matches(old, new, name.into()),
                expected,
                "{values:?} {name}"
            );
        };
        check(&["refs/for"], &zero, &a, "refs/for/main/topic", true);
        check(&["refs/for/"], &zero, &a, "refs/for", true);
        check(&["refs/for"], &zero, &a, "refs/form/x", false);
        check(&["refs/for"], &a, &zero, "refs/for/x", true);
        check(&[], &zero, &a, "refs/for/x", false);
        // Modifiers: the kind of command.
        let rules = ["m:refs/heads/main", "ad:refs/heads", "a!:refs/heads"];
        check(&rules, &a, &b, "refs/heads/main", true);
        check(&rules, &a, &b, "refs/heads/next", false);
        check(&rules, &zero, &a, "refs/heads/next", true);
        check(&rules, &a, &zero, "refs/heads/next", true);
        check(&rules, &zero, &a, "refs/tags/v1", true);
        check(&rules, &a, &b, "refs/tags/v1", false);
        check(&rules, &a, &zero, "refs/tags/v1", false);
        check(&["!:refs/heads"], &zero, &a, "refs/tags/v1", false);
    }
}
