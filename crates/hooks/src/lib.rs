//! Push hooks: what may veto or follow the ref updates of a push (receive-pack).
//!
//! A push runs four phases, in git's order, and this crate gives each one a place:
//!
//! 1. **pre-receive** sees every command of the push at once, while the pushed objects are
//!    still in quarantine (readable through [`HookContext::objects`], not yet part of the
//!    repository). Refusing here refuses every ref: receive-pack answers each with
//!    `ng <ref> <reason>` (git's reason for a failing script is `pre-receive hook declined`),
//!    and the quarantine is thrown away.
//! 2. **update** sees one ref at a time, still with the quarantine; refusing refuses that ref
//!    only (`hook declined` for a script).
//! 3. **post-receive** sees the commands that succeeded, after the refs moved. It cannot
//!    refuse anything.
//! 4. **post-update** sees the names of the refs that moved. It cannot refuse anything.
//!
//! Between `update` and the ref updates, once the objects are in the repository, the
//! commands that `receive.procReceiveRefs` reserves (review refs such as
//! `refs/for/main/topic`) go to **proc-receive** ([`Hook::proc_receive`]), which carries them
//! out itself and reports per command ([`ProcReceive`]); a [`ScriptHooks`] runs the
//! `proc-receive` script with git's pkt-line protocol ([`proc_receive`]). `post-receive` then
//! sees the refs the hook reported it updated.
//! Between `update` and the ref update, a push that moves the branch checked out in a work
//! tree under `receive.denyCurrentBranch=updateInstead` asks **push-to-checkout**
//! ([`Hook::push_to_checkout`]) whether a hook updates that work tree itself.
//!
//! [`Hook`] is the trait for hooks written in Rust; every method has a default that accepts,
//! so a hook implements only the phases it cares about. [`Hooks`] is an ordered chain of
//! hooks (the first refusal wins) and is itself a [`Hook`]. [`ScriptHooks`] runs a
//! repository's own hook scripts (`hooks/pre-receive`, …) with git's conventions: the
//! `<old> <new> <ref>` lines on stdin, the `update` arguments, the quarantine and push-option
//! environment, the repository as the working directory, the script's output streamed to the
//! caller (which sends it to the client on sideband 2, where it shows as `remote: …`), and a
//! time limit. [`SecretScanner`] is a small in-process example: it refuses pushes that
//! introduce a blob containing a given byte pattern.
//!
//! # What this crate does not do
//!
//! It knows nothing about the wire: hooks write plain bytes into a [`std::io::Write`], and
//! the caller frames them (sideband 2). It does not update refs, move the quarantine into the
//! repository, or decide which commands reach which phase: receive-pack calls the phases in
//! order, with the right updates, and acts on the [`Verdict`]s. It does not read the
//! repository's configuration (`core.hooksPath` is the caller's to resolve into
//! [`ScriptHooks::new()`]). It has no async runtime: scripts run as child processes, watched
//! by plain threads.
//!
//! The crate has no feature flags. Scripts are supported on unix; elsewhere a timeout kills
//! only the script itself, not what it started.
//!
//! # Example
//!
//! ```
//! use packgate_hooks::{Hook, HookContext, Hooks, RefUpdate, ScriptHooks, SecretScanner, Verdict};
//! use std::time::Duration;
//!
//! /// Refuses deleting `main`.
//! struct ProtectMain;
//!
//! impl Hook for ProtectMain {
//!     fn update(
//!         &self,
//!         _ctx: &HookContext<'_>,
//!         update: &RefUpdate,
//!         output: &mut dyn std::io::Write,
//!     ) -> Verdict {
//!         if update.is_delete() && update.name == "refs/heads/main" {
//!             let _ = writeln!(output, "main cannot be deleted");
//!             return Verdict::refuse("main is protected");
//!         }
//!         Verdict::Accept
//!     }
//! }
//!
//! let git_dir = std::path::Path::new("repo.git");
//! let hooks = Hooks::new()
//!     .with(ProtectMain)
//!     .with(SecretScanner::new("-----BEGIN RSA PRIVATE KEY-----"))
//!     .with(ScriptHooks::for_repository(git_dir).with_timeout(Duration::from_secs(60)));
//!
//! let ctx = HookContext {
//!     git_dir,
//!     quarantine: None,
//!     objects: &gix_object::find::Never,
//!     push_options: None,
//!     remote_user: None,
//!     push_certificate: None,
//! };
//! let null = gix_hash::ObjectId::null(gix_hash::Kind::Sha1);
//! let delete_main = RefUpdate::new(
//!     gix_hash::ObjectId::from_hex(b"8b5d6aa0c5f4b0c8e5c1a2b3c4d5e6f708192a3b").unwrap(),
//!     null,
//!     "refs/heads/main",
//! );
//! let mut output = Vec::new();
//! let verdict = hooks.update(&ctx, &delete_main, &mut output);
//! assert_eq!(verdict, Verdict::refuse("main is protected"));
//! assert_eq!(output, b"main cannot be deleted\n");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use bstr::BString;
use gix_hash::ObjectId;

pub mod proc_receive;
mod script;
mod secret;
pub mod signature;

pub use proc_receive::{CommandResult, ProcReceive, ProcReceiveRequest, RefReport};
pub use script::ScriptHooks;
pub use secret::{Finding, ScanError, SecretScanner};

/// One command of a push: move `name` from `old` to `new`.
///
/// A null `old` creates the ref, a null `new` deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefUpdate {
    /// The value the client saw, and expects the ref to have; null when creating.
    pub old: ObjectId,
    /// The value the client asks for; null when deleting.
    pub new: ObjectId,
    /// The full ref name, e.g. `refs/heads/main`.
    pub name: BString,
}

impl RefUpdate {
    /// A command moving `name` from `old` to `new`.
    pub fn new(old: ObjectId, new: ObjectId, name: impl Into<BString>) -> Self {
        RefUpdate {
            old,
            new,
            name: name.into(),
        }
    }

    /// Whether this command creates the ref (`old` is null).
    pub fn is_create(&self) -> bool {
        self.old.is_null()
    }

    /// Whether this command deletes the ref (`new` is null).
    pub fn is_delete(&self) -> bool {
        self.new.is_null()
    }
}

/// A push to a branch checked out in a work tree under `receive.denyCurrentBranch=updateInstead`:
/// what a `push-to-checkout` hook is told (git's hook of that name).
#[derive(Debug, Clone, Copy)]
pub struct Checkout<'a> {
    /// The ref being updated, as the client named it.
    pub name: &'a bstr::BStr,
    /// The commit the branch is about to point at (null for a deletion).
    pub new: ObjectId,
    /// The work tree's own git directory: the repository's for its main work tree,
    /// `$GIT_DIR/worktrees/<id>` for a linked one. Scripts get it as `GIT_DIR`.
    pub git_dir: &'a Path,
    /// The work tree. Scripts get it as `GIT_WORK_TREE` (and run in the repository's git
    /// directory, as every hook, and as git runs this one).
    pub work_tree: &'a Path,
}

/// Where a push's objects wait until `pre-receive` accepts them.
///
/// Relative paths are taken relative to the current directory of the process (not the
/// repository); [`ScriptHooks`] hands absolute paths to scripts, as git does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinePaths {
    /// The quarantine directory holding the pushed objects, inside the repository's object
    /// directory (git's `objects/tmp_objdir-incoming-XXXXXX`). Scripts get it as
    /// `GIT_QUARANTINE_PATH` and `GIT_OBJECT_DIRECTORY`.
    pub quarantine: PathBuf,
    /// The repository's own object directory. Scripts get it appended to
    /// `GIT_ALTERNATE_OBJECT_DIRECTORIES`, so they see old and new objects together.
    pub objects_dir: PathBuf,
    /// For a push from a shallow clone that brings new shallow roots: a shallow file listing
    /// the repository's shallow commits and those roots, so that the history the hooks walk
    /// ends where the pushed history does. Scripts get it as `GIT_SHALLOW_FILE`, as from
    /// git's receive-pack; `None` otherwise.
    pub shallow_file: Option<PathBuf>,
}

/// What a hook may know about the push it is judging.
#[derive(Clone, Copy)]
pub struct HookContext<'a> {
    /// The repository's git directory. Scripts run in it.
    pub git_dir: &'a Path,
    /// The quarantine holding the pushed objects: `Some` for `pre-receive` and `update`,
    /// `None` once the objects are in the repository (`post-receive`, `post-update`).
    pub quarantine: Option<&'a QuarantinePaths>,
    /// The objects a hook may read: the quarantine and the repository together during
    /// `pre-receive` and `update`, the repository afterwards.
    pub objects: &'a dyn gix_object::Find,
    /// The push options the client sent (`git push -o …`), or `None` if it did not use the
    /// `push-options` capability. Scripts see the difference, as in git:
    /// `GIT_PUSH_OPTION_COUNT=0` versus no such variable.
    pub push_options: Option<&'a [BString]>,
    /// The user the front-end authenticated (HTTP Basic, or the web server's `REMOTE_USER`
    /// behind `packgate http-backend`), if any. Scripts see it as `REMOTE_USER`, as behind
    /// git http-backend.
    pub remote_user: Option<&'a str>,
    /// The push certificate of a signed push (`git push --signed`), if the client sent one.
    /// The receive hooks' scripts see it as git's `GIT_PUSH_CERT*` variables.
    pub push_certificate: Option<&'a PushCertificate>,
}

/// What the hooks learn of a signed push, as git's receive-pack tells its hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCertificate {
    /// The certificate, stored as a blob (`GIT_PUSH_CERT`).
    pub blob: gix_hash::ObjectId,
    /// Who signed it (`GIT_PUSH_CERT_SIGNER`); empty when the signature was not verified.
    pub signer: String,
    /// The signing key (`GIT_PUSH_CERT_KEY`); empty when the signature was not verified.
    pub key: String,
    /// The signature check's result letter (`GIT_PUSH_CERT_STATUS`): git's `G`, `B`, `U`,
    /// `X`, `Y`, `R`, `E`, or `N` when there is no verified signature.
    pub status: char,
    /// The nonce the server issued, if it asked for one (`GIT_PUSH_CERT_NONCE`).
    pub nonce: Option<String>,
    /// The nonce's verdict (`GIT_PUSH_CERT_NONCE_STATUS`): `OK`, `SLOP`, `BAD`, `MISSING` or
    /// `UNSOLICITED`; set whenever `nonce` is.
    pub nonce_status: Option<String>,
    /// With `SLOP`: how many seconds the certificate's nonce is off
    /// (`GIT_PUSH_CERT_NONCE_SLOP`).
    pub nonce_slop: Option<i64>,
}

impl std::fmt::Debug for HookContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookContext")
            .field("git_dir", &self.git_dir)
            .field("quarantine", &self.quarantine)
            .field("push_options", &self.push_options)
            .field("remote_user", &self.remote_user)
            .finish_non_exhaustive()
    }
}

/// A hook's decision about a push (`pre-receive`) or one ref (`update`).
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Accept,
    /// Refuse it. The reason becomes the `ng <ref> <reason>` status the client prints as
    /// `! [remote rejected] … (<reason>)`, so it should be one short line.
    Refuse {
        /// Why, in a few words.
        reason: String,
    },
}

impl Verdict {
    /// A refusal for `reason`.
    pub fn refuse(reason: impl Into<String>) -> Self {
        Verdict::Refuse {
            reason: reason.into(),
        }
    }

    /// Whether this is [`Verdict::Accept`].
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
}

/// A push hook: called by receive-pack at each phase of a push.
///
/// Every method defaults to accepting and doing nothing. Whatever a hook writes into `output`
/// reaches the client as `remote: …` lines; a hook should end what it writes with a newline.
/// Hooks run on the push's own thread and should not take long: the push waits for them.
pub trait Hook: Send + Sync {
    /// Judge the whole push before any ref moves. `updates` are all the commands that passed
    /// receive-pack's own checks, in the client's order; the pushed objects are readable
    /// through `ctx.objects` but not yet part of the repository. A refusal refuses every ref.
    fn pre_receive(
        &self,
        ctx: &HookContext<'_>,
        updates: &[RefUpdate],
        output: &mut dyn Write,
    ) -> Verdict {
        let _ = (ctx, updates, output);
        Verdict::Accept
    }

    /// Judge one ref, after `pre-receive` accepted the push. A refusal refuses this ref only.
    fn update(&self, ctx: &HookContext<'_>, update: &RefUpdate, output: &mut dyn Write) -> Verdict {
        let _ = (ctx, update, output);
        Verdict::Accept
    }

    /// Carry out the commands that `receive.procReceiveRefs` reserves for a `proc-receive`
    /// hook (e.g. pushes to `refs/for/<branch>` that become review refs), after `pre-receive`
    /// accepted the push and its objects joined the repository, and report on each
    /// ([`ProcReceive::Reported`], one [`CommandResult`] per command, in order). receive-pack
    /// leaves the refs of the commands reported `ok` alone: updating whatever refs the hook
    /// wants to is the hook's job, and what it reports ([`RefReport`]) is what the client and
    /// `post-receive` see. The default declines, and the next hook of a chain is asked.
    fn proc_receive(
        &self,
        ctx: &HookContext<'_>,
        request: &ProcReceiveRequest<'_>,
        output: &mut dyn Write,
    ) -> ProcReceive {
        let _ = (ctx, request, output);
        ProcReceive::Declined
    }

    /// Take over updating a work tree whose checked-out branch the push moves
    /// (`receive.denyCurrentBranch=updateInstead`), after the `update` phase and before the
    /// ref moves, as git's `push-to-checkout` hook. `None` (the default) leaves it to
    /// receive-pack, which refuses a work tree or index that differs from the branch and
    /// otherwise checks out the new commit. `Some(Accept)` means the hook brought the work
    /// tree and index to the state it wants; `Some(Refuse)` refuses this ref (and must leave
    /// the work tree and index alone).
    fn push_to_checkout(
        &self,
        ctx: &HookContext<'_>,
        checkout: &Checkout<'_>,
        output: &mut dyn Write,
    ) -> Option<Verdict> {
        let _ = (ctx, checkout, output);
        None
    }

    /// Follow the push once the refs moved: `updates` are the commands that succeeded.
    fn post_receive(&self, ctx: &HookContext<'_>, updates: &[RefUpdate], output: &mut dyn Write) {
        let _ = (ctx, updates, output);
    }

    /// Follow the push once the refs moved: `refnames` are the refs that were updated.
    fn post_update(&self, ctx: &HookContext<'_>, refnames: &[BString], output: &mut dyn Write) {
        let _ = (ctx, refnames, output);
    }
}

impl<H: Hook + ?Sized> Hook for Box<H> {
    fn pre_receive(
        &self,
        ctx: &HookContext<'_>,
        updates: &[RefUpdate],
        output: &mut dyn Write,
    ) -> Verdict {
        (**self).pre_receive(ctx, updates, output)
    }

    fn update(&self, ctx: &HookContext<'_>, update: &RefUpdate, output: &mut dyn Write) -> Verdict {
        (**self).update(ctx, update, output)
    }

    fn proc_receive(
        &self,
        ctx: &HookContext<'_>,
        request: &ProcReceiveRequest<'_>,
        output: &mut dyn Write,
    ) -> ProcReceive {
        (**self).proc_receive(ctx, request, output)
    }

    fn push_to_checkout(
        &self,
        ctx: &HookContext<'_>,
        checkout: &Checkout<'_>,
        output: &mut dyn Write,
    ) -> Option<Verdict> {
        (**self).push_to_checkout(ctx, checkout, output)
    }

    fn post_receive(&self, ctx: &HookContext<'_>, updates: &[RefUpdate], output: &mut dyn Write) {
        (**self).post_receive(ctx, updates, output)
    }

    fn post_update(&self, ctx: &HookContext<'_>, refnames: &[BString], output: &mut dyn Write) {
        (**self).post_update(ctx, refnames, output)
    }
}

impl<H: Hook + ?Sized> Hook for Arc<H> {
    fn pre_receive(
        &self,
        ctx: &HookContext<'_>,
        updates: &[RefUpdate],
        output: &mut dyn Write,
    ) -> Verdict {
        (**self).pre_receive(ctx, updates, output)
    }

    fn update(&self, ctx: &HookContext<'_>, update: &RefUpdate, output: &mut dyn Write) -> Verdict {
        (**self).update(ctx, update, output)
    }

    fn proc_receive(
        &self,
        ctx: &HookContext<'_>,
        request: &ProcReceiveRequest<'_>,
        output: &mut dyn Write,
    ) -> ProcReceive {
        (**self).proc_receive(ctx, request, output)
    }

    fn push_to_checkout(
        &self,
        ctx: &HookContext<'_>,
        checkout: &Checkout<'_>,
        output: &mut dyn Write,
    ) -> Option<Verdict> {
        (**self).push_to_checkout(ctx, checkout, output)
    }

    fn post_receive(&self, ctx: &HookContext<'_>, updates: &[RefUpdate], output: &mut dyn Write) {
        (**self).post_receive(ctx, updates, output)
    }

    fn post_update(&self, ctx: &HookContext<'_>, refnames: &[BString], output: &mut dyn Write) {
        (**self).post_update(ctx, refnames, output)
    }
}

/// An ordered chain of hooks, itself a [`Hook`].
///
/// `pre_receive` and `update` ask each hook in order and stop at the first refusal, which is
/// the chain's verdict; `post_receive` and `post_update` call every hook in order.
#[derive(Default)]
pub struct Hooks {
    hooks: Vec<Box<dyn Hook>>,
}

impl Hooks {
    /// An empty chain, which accepts everything.
    pub fn new() -> Self {
        Hooks::default()
    }

    /// Add `hook` at the end of the chain.
    pub fn push(&mut self, hook: impl Hook + 'static) {
        self.hooks.push(Box::new(hook));
    }

    /// The chain with `hook` added at its end.
    pub fn with(mut self, hook: impl Hook + 'static) -> Self {
        self.push(hook);
        self
    }

    /// The number of hooks in the chain.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Whether the chain has no hooks.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("len", &self.hooks.len())
            .finish()
    }
}

impl Hook for Hooks {
    fn pre_receive(
        &self,
        ctx: &HookContext<'_>,
        updates: &[RefUpdate],
        output: &mut dyn Write,
    ) -> Verdict {
        self.hooks
            .iter()
            .map(|hook| hook.pre_receive(ctx, updates, output))
            .find(|verdict| !verdict.is_accept())
            .unwrap_or(Verdict::Accept)
    }

    fn update(&self, ctx: &HookContext<'_>, update: &RefUpdate, output: &mut dyn Write) -> Verdict {
        self.hooks
            .iter()
            .map(|hook| hook.update(ctx, update, output))
            .find(|verdict| !verdict.is_accept())
            .unwrap_or(Verdict::Accept)
    }

    /// The first hook that does not decline answers.
    fn proc_receive(
        &self,
        ctx: &HookContext<'_>,
        request: &ProcReceiveRequest<'_>,
        output: &mut dyn Write,
    ) -> ProcReceive {
        self.hooks
            .iter()
            .map(|hook| hook.proc_receive(ctx, request, output))
            .find(|answer| *answer != ProcReceive::Declined)
            .unwrap_or(ProcReceive::Declined)
    }

    /// The first hook that takes the work tree over decides.
    fn push_to_checkout(
        &self,
        ctx: &HookContext<'_>,
        checkout: &Checkout<'_>,
        output: &mut dyn Write,
    ) -> Option<Verdict> {
        self.hooks
            .iter()
            .find_map(|hook| hook.push_to_checkout(ctx, checkout, output))
    }

    fn post_receive(&self, ctx: &HookContext<'_>, updates: &[RefUpdate], output: &mut dyn Write) {
        for hook in &self.hooks {
            hook.post_receive(ctx, updates, output);
        }
    }

    fn post_update(&self, ctx: &HookContext<'_>, refnames: &[BString], output: &mut dyn Write) {
        for hook in &self.hooks {
            hook.post_update(ctx, refnames, output);
        }
    }
}

#[cfg(test)]
mod tests;
