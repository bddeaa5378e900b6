//! One push from the pack to the ref updates: quarantine, checks, hooks, migration, the ref
//! transaction(s), and the hooks that follow.
//!
//! # Why one file
//!
//! It is over 800 lines, and stays whole: it is one sequence — ingest, per-ref checks, hooks,
//! migration, ref transaction, post-hooks — as methods of one `Push` over one list of
//! `Pending` commands, in the order git's receive-pack runs them. The steps share that
//! state and each one's refusals depend on the ones before; split across files, the order
//! would be harder to read, not easier. Its siblings hold what is separate already (commands,
//! configuration, report, messages).

use crate::error_chain;
use std::io::{BufRead, Write};

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use gix_ref::{
    transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog},
    FullName, Target,
};
use packgate_hooks::{
    CommandResult, Hook, HookContext, ProcReceive, ProcReceiveRequest, QuarantinePaths, RefReport,
    RefUpdate, Verdict,
};
use packgate_pack::ingest::{self, FsckObjects, IngestOptions, Quarantine};
use packgate_pack::reader::CachingReader;

use super::{
    commands::{Command, CommandList},
    config::Deny,
    report::{Channel, PushReport, RefStatus},
    shallow,
    worktree::{self, Worktree, Worktrees},
    ReceivePack, ReceivePackOptions,
};
use crate::repository::Head;

/// The reflog message of a pushed update, as git writes it.
const REFLOG_MESSAGE: &str = "push";

/// A push in progress.
pub(super) struct Push<'a, 'repo> {
    pub(super) receive_pack: &'a ReceivePack<'repo>,
    pub(super) list: &'a CommandList,
    pub(super) push_options: Option<&'a [BString]>,
    pub(super) options: &'a ReceivePackOptions,
    /// What the hooks learn of a signed push.
    pub(super) certificate: Option<&'a packgate_hooks::PushCertificate>,
    /// A reason every command fails with before anything is checked (git's
    /// "inconsistent push options"); the pack is still read.
    pub(super) refuse_all: Option<&'static str>,
}

/// A command and what became of it so far.
struct Pending<'a> {
    command: &'a Command,
    /// Set once the command is refused or failed: the `ng` reason.
    error: Option<String>,
    /// A command on a symbolic ref whose target another command of the push updates the
    /// same way: reported as done, but only the other one runs (git's aliased update).
    skip: bool,
    /// A deletion of a ref that did not exist: reported `ok`, but nothing changed, so the
    /// `post-receive` and `post-update` hooks do not hear of it (git's `did_not_exist`).
    did_not_exist: bool,
    /// The client's shallow commits this command's new history stops at and the repository
    /// lacks complete history for: with `receive.shallowUpdate` they join `$GIT_DIR/shallow`
    /// when the command is carried out (git's `update_shallow_ref()`).
    shallow_roots: Vec<ObjectId>,
    /// Whether the `proc-receive` hook is to carry it out, and what it made of it.
    proc: Proc,
    /// Under `receive.denyCurrentBranch=updateInstead`, the work tree that has this branch
    /// checked out: updated (or its `push-to-checkout` hook asked) before the ref moves.
    worktree: Option<Worktree>,
}

/// Where the `proc-receive` hook stands with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Proc {
    /// An ordinary command.
    No,
    /// `receive.procReceiveRefs` takes it: the hook is to carry it out.
    Scheduled,
    /// The hook carried it out (`ok`), with what it reported.
    Done(Vec<RefReport>),
    /// The hook left it to receive-pack (`option fall-through`), with any reports.
    FallThrough(Vec<RefReport>),
}

/// The commands that succeeded, as the hooks that follow a push see them.
#[derive(Debug, Default)]
pub(super) struct Accepted {
    /// For `post-receive`: each command, or the refs a `proc-receive` hook reported it
    /// updated instead (git's `feed_receive_hook()`).
    updates: Vec<RefUpdate>,
    /// For `post-update`: the names of the commands.
    names: Vec<BString>,
}

impl Pending<'_> {
    /// Whether the command has not failed (so far).
    fn is_pending(&self) -> bool {
        self.error.is_none()
    }

    /// Whether receive-pack is still to carry the command out: not failed, not skipped, not
    /// the `proc-receive` hook's.
    fn is_to_run(&self) -> bool {
        self.error.is_none() && !self.skip && matches!(self.proc, Proc::No | Proc::FallThrough(_))
    }

    /// Whether the command is still to go to the `proc-receive` hook.
    fn is_for_hook(&self) -> bool {
        self.error.is_none() && !self.skip && self.proc == Proc::Scheduled
    }

    /// What a `proc-receive` hook reported it updated for this command.
    fn reports(&self) -> &[RefReport] {
        match &self.proc {
            Proc::Done(reports) | Proc::FallThrough(reports) => reports,
            Proc::No | Proc::Scheduled => &[],
        }
    }

    /// The lines `post-receive` gets for this command: the refs a `proc-receive` hook
    /// reported, each value it did not report taken from the command; else the command.
    fn post_receive_updates(&self) -> Vec<RefUpdate> {
        let reports = self.reports();
        if reports.is_empty() {
            return vec![self.as_update()];
        }
        reports
            .iter()
            .map(|report| {
                RefUpdate::new(
                    report.old.unwrap_or(self.command.old),
                    report.new.unwrap_or(self.command.new),
                    report
                        .refname
                        .clone()
                        .unwrap_or_else(|| self.command.name.clone()),
                )
            })
            .collect()
    }

    fn refuse(&mut self, reason: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(reason.into());
        }
    }

    fn as_update(&self) -> RefUpdate {
        RefUpdate::new(
            self.command.old,
            self.command.new,
            self.command.name.clone(),
        )
    }
}

impl Push<'_, '_> {
    /// The hooks' context once the objects are in the repository (no quarantine).
    fn settled_context(&self) -> HookContext<'_> {
        let repo = self.receive_pack.repo;
        HookContext {
            git_dir: repo.git_dir(),
            quarantine: None,
            objects: repo.objects(),
            push_options: self.push_options,
            remote_user: self.receive_pack.remote_user.as_deref(),
            push_certificate: self.certificate,
        }
    }

    /// Every work tree, and the branch each has checked out (git's `get_worktrees()`).
    fn worktrees(&self) -> Worktrees {
        let repo = self.receive_pack.repo;
        Worktrees::read(
            repo.git_dir(),
            self.receive_pack.config.bare,
            repo.config()
                .string("core.worktree")
                .and_then(|path| gix_path::from_bstring(path).ok()),
        )
    }

    /// Receive the pack, check, run hooks and update refs. Returns the report and the
    /// commands that succeeded (for the hooks that follow).
    pub(super) fn execute<R: BufRead, W: Write>(
        &mut self,
        input: &mut R,
        channel: &mut Channel<'_, W>,
    ) -> (PushReport, Accepted) {
        let mut pending: Vec<Pending<'_>> = self
            .list
            .commands
            .iter()
            .map(|command| Pending {
                command,
                error: None,
                skip: false,
                did_not_exist: false,
                shallow_roots: Vec::new(),
                proc: Proc::No,
                worktree: None,
            })
            .collect();
        if let Some(reason) = self.refuse_all {
            for p in &mut pending {
                p.refuse(reason);
            }
        }
        let unpack = self.process(input, channel, &mut pending);
        let mut accepted = Accepted::default();
        for p in pending
            .iter()
            .filter(|p| p.is_pending() && !p.did_not_exist)
        {
            accepted.updates.extend(p.post_receive_updates());
            accepted.names.push(p.command.name.clone());
        }
        let report = PushReport {
            unpack,
            refs: pending
                .into_iter()
                .map(|p| RefStatus {
                    name: p.command.name.clone(),
                    reports: p.reports().to_vec(),
                    result: match p.error {
                        None => Ok(()),
                        Some(reason) => Err(reason),
                    },
                })
                .collect(),
        };
        (report, accepted)
    }

    /// Everything up to and including the ref updates; returns the unpack status.
    fn process<R: BufRead, W: Write>(
        &mut self,
        input: &mut R,
        channel: &mut Channel<'_, W>,
        pending: &mut [Pending<'_>],
    ) -> Result<(), String> {
        let repo = self.receive_pack.repo;
        let config = &self.receive_pack.config;
        // 0. What killed pushes left behind goes first (no lock stays behind: see step 2).
        let objects_dir = repo.git_dir().join("objects");
        if let Err(err) = ingest::remove_stale_quarantines(&objects_dir, config.quarantine_expiry) {
            tracing::warn!(%err, dir = %objects_dir.display(), "could not look for stale quarantines");
        }
        // 1. The pack, into a quarantine that is deleted on drop unless migrated.
        let quarantine = if self.list.expects_pack() {
            match self.ingest(input, channel) {
                Ok(quarantine) => Some(quarantine),
                Err(reason) => {
                    channel.error(format!("unpack failed: {reason}"));
                    for p in pending.iter_mut() {
                        p.refuse("unpacker error");
                    }
                    return Err(reason);
                }
            }
        } else {
            None
        };
        let quarantine_paths = quarantine.as_ref().map(|q| QuarantinePaths {
            quarantine: q.path().to_owned(),
            objects_dir: q.objects_dir().to_owned(),
            shallow_file: None,
        });
        // The connectivity walk and hooks read many trees along delta chains: go through the
        // delta-base cache, as fetches do.
        let cached =
            |handle| CachingReader::new(handle, packgate_pack::reader::DEFAULT_CACHE_BYTES);
        let objects: Box<dyn ObjectsAccess + Send> = match &quarantine {
            Some(q) => match q.objects() {
                Ok(objects) => Box::new(cached(objects)),
                Err(err) => {
                    let reason = format!("could not open the quarantine: {err}");
                    channel.error(&reason);
                    for p in pending.iter_mut() {
                        p.refuse("unpacker error");
                    }
                    return Err(reason);
                }
            },
            None => Box::new(cached(repo.objects().clone())),
        };

        // The pack is in: what follows may be silent for long (connectivity, hooks), so with
        // sideband it runs on a thread of its own while this one sends keepalives.
        let keepalive = config
            .keepalive
            .filter(|_| self.list.capabilities.side_band_64k);
        let Some(interval) = keepalive else {
            self.decide_and_update(channel, pending, quarantine, quarantine_paths, objects);
            return Ok(());
        };
        let detached = Detached::from(self.receive_pack);
        let (list, push_options, options) = (self.list, self.push_options, self.options);
        let (certificate, refuse_all) = (self.certificate, self.refuse_all);
        channel.with_keepalive(interval, move |channel| {
            let receive_pack = detached.attach();
            Push {
                receive_pack: &receive_pack,
                list,
                push_options,
                options,
                certificate,
                refuse_all,
            }
            .decide_and_update(channel, pending, quarantine, quarantine_paths, objects)
        });
        Ok(())
    }

    /// Everything after the pack is in: the checks, the hooks, migration and the ref updates.
    fn decide_and_update<W: Write>(
        &self,
        channel: &mut Channel<'_, W>,
        pending: &mut [Pending<'_>],
        quarantine: Option<Quarantine>,
        mut quarantine_paths: Option<QuarantinePaths>,
        objects: Box<dyn ObjectsAccess + Send>,
    ) {
        let repo = self.receive_pack.repo;
        // The repository's own shallow boundary: history ends there for every walk below.
        let server_shallow = match repo.shallow_commits() {
            Ok(commits) => commits,
            Err(err) => {
                channel.error(error_chain(&err));
                for p in pending.iter_mut() {
                    p.refuse("shallow error");
                }
                return;
            }
        };
        let grafts: HashSet<ObjectId> = server_shallow.iter().copied().collect();

        // A push from a shallow clone: which refs would make this repository shallow, and
        // (without receive.shallowUpdate) their refusal, before anything else judges them.
        if quarantine.is_some() {
            self.assign_shallow_roots(objects.as_ref(), pending, &grafts, channel);
        }

        // 2. No repository-wide lock: pushes run side by side, as git's do. Each ref update
        //    is a compare-and-swap under that ref's own lock, migration only adds files whose
        //    names are content hashes, and a process killed at any point leaves nothing
        //    that stops the next push (a stale quarantine is removed once it is old).

        // 3. receive-pack's own checks, per ref.
        // The repository's own HEAD, compared with the refs' full names, as git's `update()`.
        let head = match repo.repository_head() {
            Ok(Head::Born(record)) => record.symref_target,
            Ok(Head::Unborn { target }) => Some(target),
            Ok(Head::Missing) => None,
            Err(err) => {
                tracing::warn!(%err, "could not read HEAD");
                None
            }
        };
        // The commands `receive.procReceiveRefs` reserves for the proc-receive hook: git
        // runs none of its own update checks on them (they are not its to carry out), only
        // the ref name and hidden-ref checks.
        let proc_receive_refs = &self.receive_pack.config.proc_receive_refs;
        if !proc_receive_refs.is_empty() {
            for p in pending.iter_mut().filter(|p| p.is_to_run()) {
                let command = p.command;
                if proc_receive_refs.matches(&command.old, &command.new, command.name.as_bstr()) {
                    p.proc = Proc::Scheduled;
                }
            }
        }
        // Every work tree, and the branch each has checked out (git's `get_worktrees()`).
        let worktrees = self.worktrees();
        for p in pending.iter_mut() {
            let checked = if p.proc == Proc::Scheduled {
                self.check_for_hook(p.command, channel).map(|()| None)
            } else {
                self.check(
                    p.command,
                    head.as_ref(),
                    &worktrees,
                    objects.as_ref(),
                    channel,
                )
            };
            match checked {
                Ok(worktree) => p.worktree = worktree,
                Err(reason) => p.refuse(reason),
            }
        }

        // Refs that moved since the client looked fail now, before hooks run and objects
        // migrate (the transaction's compare-and-swap would refuse them anyway).
        self.check_current_values(pending, channel);

        // 4. Every new tip must be complete: its history reaches what the repository has,
        //    or the repository's shallow commits, or the new shallow roots it brings.
        self.check_connectivity(objects.as_ref(), pending, &grafts, channel);
        let new_roots = accepted_roots(pending, |p| p.is_pending());
        if let (false, Some(paths)) = (new_roots.is_empty(), quarantine_paths.as_mut()) {
            // The hooks see the history as it will be (git's GIT_SHALLOW_FILE for them).
            let path = paths.quarantine.join("shallow");
            match shallow::write_hook_shallow_file(&path, &server_shallow, &new_roots) {
                Ok(()) => paths.shallow_file = Some(path),
                Err(err) => {
                    tracing::warn!(%err, path = %path.display(), "could not write the hooks' shallow file")
                }
            }
        }

        if self.list.capabilities.atomic && refuse_rest_if_any_failed(pending) {
            return;
        }

        // 5. Hooks, with the objects still in quarantine.
        let hooks = self.receive_pack.hook_chain();
        let context = HookContext {
            git_dir: repo.git_dir(),
            quarantine: quarantine_paths.as_ref(),
            objects: objects.as_find(),
            push_options: self.push_options,
            remote_user: self.receive_pack.remote_user.as_deref(),
            push_certificate: self.certificate,
        };
        let updates: Vec<RefUpdate> = pending
            .iter()
            .filter(|p| p.is_pending())
            .map(Pending::as_update)
            .collect();
        if !updates.is_empty() {
            let verdict = hooks.pre_receive(&context, &updates, &mut channel.messages());
            if let Verdict::Refuse { reason } = verdict {
                for p in pending.iter_mut() {
                    p.refuse(reason.clone());
                }
                return;
            }
        }
        // As git, after pre-receive: a symbolic ref and its target in one push.
        self.check_aliased_updates(pending, channel);
        for p in pending.iter_mut().filter(|p| p.is_to_run()) {
            let verdict = hooks.update(&context, &p.as_update(), &mut channel.messages());
            if let Verdict::Refuse { reason } = verdict {
                channel.error(format!("hook declined to update {}", p.command.name));
                p.refuse(reason);
            }
        }
        if self.list.capabilities.atomic && refuse_rest_if_any_failed(pending) {
            return;
        }
        if !pending.iter().any(|p| p.is_to_run() || p.is_for_hook()) {
            return;
        }

        // 5b. A gate forwards what is left upstream, from the quarantine, before anything
        //     migrates or moves here; only what upstream accepted goes on.
        if self.receive_pack.config.upstream.is_some() {
            let objects = match &quarantine {
                Some(q) => q.objects(),
                None => Ok(repo.objects().clone()),
            };
            match objects {
                Ok(handle) => self.forward_upstream(pending, handle, channel),
                Err(err) => {
                    channel.error(format!("could not open the quarantine: {err}"));
                    for p in pending.iter_mut() {
                        p.refuse("unpacker error");
                    }
                }
            }
            if !pending.iter().any(Pending::is_to_run) {
                return;
            }
        }

        // 6. Accepted: the objects join the repository, then the refs move.
        drop(objects);
        if let Some(quarantine) = quarantine {
            if let Err(err) = quarantine.migrate() {
                channel.error(format!(
                    "unable to migrate objects to permanent storage: {err}"
                ));
                for p in pending.iter_mut() {
                    p.refuse("unable to migrate objects to permanent storage");
                }
                return;
            }
        }
        pause_for_tests(PAUSE_AFTER_MIGRATION);
        // The proc-receive hook, with the objects in place (as git runs it), then receive-pack's
        // checks and the update hook for the commands it left to receive-pack.
        if pending.iter().any(Pending::is_for_hook) {
            self.run_proc_receive(pending, channel);
            self.check_fall_through(pending, head.as_ref(), channel);
        }
        // The new shallow roots of the refs about to move, before they move: a ref never
        // points at history the shallow file does not cut where it ends.
        let new_roots = accepted_roots(pending, Pending::is_to_run);
        if !new_roots.is_empty() {
            let config = &self.receive_pack.config;
            if let Err(err) =
                shallow::add_shallow_roots(repo.git_dir(), &new_roots, config.ref_lock_timeout)
            {
                channel.error(error_chain(&err));
                for p in pending
                    .iter_mut()
                    .filter(|p| p.is_to_run() && !p.shallow_roots.is_empty())
                {
                    p.refuse("shallow error");
                }
                if self.list.capabilities.atomic && refuse_rest_if_any_failed(pending) {
                    return;
                }
            }
        }
        self.update_refs(pending, channel);
        // Waiters on this repository (`wait-refs`, HTTP watches) learn of it now.
        crate::refs_watch::changed(self.receive_pack.repo.git_dir());
    }

    /// The gate's step (see [`super::gate`]): refuse what cannot be forwarded, forward the
    /// rest and refuse what upstream did not accept.
    fn forward_upstream<W: Write>(
        &self,
        pending: &mut [Pending<'_>],
        objects: gix_odb::Handle,
        channel: &mut Channel<'_, W>,
    ) {
        let config = &self.receive_pack.config;
        let Some(upstream) = config.upstream.clone() else {
            return;
        };
        let atomic = self.list.capabilities.atomic;
        let Some(forward) = self.receive_pack.forward.clone() else {
            channel.error("gate has no upstream client");
            for p in pending.iter_mut() {
                p.refuse("gate has no upstream client");
            }
            return;
        };
        for p in pending.iter_mut().filter(|p| p.is_for_hook()) {
            p.refuse("proc-receive refs cannot pass a gate");
        }
        if atomic && refuse_rest_if_any_failed(pending) {
            return;
        }
        let indices: Vec<usize> = (0..pending.len())
            .filter(|&index| pending[index].is_to_run())
            .collect();
        if indices.is_empty() {
            return;
        }
        let job = super::gate::Job {
            upstream,
            updates: indices.iter().map(|&i| pending[i].as_update()).collect(),
            atomic,
            push_options: self
                .push_options
                .unwrap_or_default()
                .iter()
                .map(|option| option.to_str_lossy().into_owned())
                .collect(),
            objects,
            timeout: config.upstream_timeout,
        };
        tracing::debug!(refs = indices.len(), upstream = %job.upstream, "forwarding upstream");
        let results = super::gate::run(&forward, job, &mut channel.messages());
        for (index, result) in indices.into_iter().zip(results) {
            if let Some(reason) = super::gate::reason(&result) {
                pending[index].refuse(reason);
            }
        }
        if atomic {
            refuse_rest_if_any_failed(pending);
        }
    }

    /// git's `update_shallow_info()`: for each ref set to a commit, the client's shallow
    /// commits (`shallow` lines) its new history stops at that this repository has no
    /// complete history for. Without `receive.shallowUpdate` such a ref is refused ("shallow
    /// update not allowed"); with it, the ref keeps them as its new shallow roots.
    fn assign_shallow_roots<W: Write>(
        &self,
        objects: &dyn ObjectsAccess,
        pending: &mut [Pending<'_>],
        grafts: &HashSet<ObjectId>,
        channel: &mut Channel<'_, W>,
    ) {
        // The client's boundary commits that are here now (sent in the pack, or here
        // before), less those that are this repository's own boundary already.
        let candidates: Vec<ObjectId> = self
            .list
            .shallow
            .iter()
            .filter(|id| !grafts.contains(*id) && objects.kind(id).is_some())
            .copied()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let repo = self.receive_pack.repo;
        let mut existing: Vec<ObjectId> = match repo.all_refs(None) {
            Ok(refs) => refs.into_iter().map(|record| record.id).collect(),
            Err(err) => {
                tracing::warn!(%err, "could not list refs for the shallow check");
                Vec::new()
            }
        };
        if let Ok(Head::Born(head)) = repo.repository_head() {
            existing.push(head.id);
        }
        let indices: Vec<usize> = (0..pending.len())
            .filter(|&index| !pending[index].command.is_delete())
            .collect();
        let tips: Vec<ObjectId> = indices
            .iter()
            .map(|&index| pending[index].command.new)
            .collect();
        let roots = match objects.shallow_roots(&tips, &existing, &candidates, grafts) {
            Ok(roots) => roots,
            Err(err) => {
                channel.error(error_chain(&err));
                for &index in &indices {
                    pending[index].refuse("shallow error");
                }
                return;
            }
        };
        let allowed = self.receive_pack.config.shallow_update;
        for (index, roots) in indices.into_iter().zip(roots) {
            if roots.is_empty() {
                continue;
            }
            tracing::debug!(
                name = %pending[index].command.name,
                roots = roots.len(),
                allowed,
                "the update needs new shallow roots"
            );
            if allowed {
                pending[index].shallow_roots = roots;
            } else {
                pending[index].refuse("shallow update not allowed");
            }
        }
    }

    /// Read the pack into a new quarantine.
    fn ingest<R: BufRead, W: Write>(
        &self,
        input: &mut R,
        channel: &mut Channel<'_, W>,
    ) -> Result<Quarantine, String> {
        let repo = self.receive_pack.repo;
        let config = &self.receive_pack.config;
        let quarantine = Quarantine::create(&repo.git_dir().join("objects"))
            .map_err(|err| format!("could not create the quarantine: {err}"))?;
        // As git's receive-pack when it reads its configuration.
        for id in &config.fsck_unknown_ids {
            channel.warning(format!("skipping unknown msg id '{id}'"));
        }
        let mut fsck_options = config.fsck_options.clone();
        let mut shallow = Default::default();
        if config.fsck_objects {
            // As git's index-pack, which reads them when it starts.
            for path in &config.fsck_skip_lists {
                let text = std::fs::read(repo.git_dir().join(path)).map_err(|err| {
                    tracing::debug!(%err, path = %path.display(), "skip list not read");
                    format!("could not open object name list: {}", path.display())
                })?;
                fsck_options.read_skip_list(&text)?;
            }
            // The history a shallow push brings ends at the client's shallow commits and
            // the repository's; the strict check does not ask for their parents.
            shallow = self
                .list
                .shallow
                .iter()
                .copied()
                .collect::<HashSet<ObjectId>>();
            shallow.extend(repo.shallow_commits().unwrap_or_default());
        }
        // Indexing takes CPU slots and memory from the process's budget: wait for a turn
        // (the client is sending; nothing can go back to it meanwhile).
        let demand = crate::budget::Demand {
            threads: config
                .threads
                .unwrap_or(self.receive_pack.budget.config().cpu_slots),
            memory: INGEST_MEMORY,
        };
        let grant = self
            .receive_pack
            .budget
            .acquire(&self.receive_pack.client, demand, &|| false)
            .map_err(|err| err.to_string())?;
        let options = IngestOptions {
            max_input_bytes: config.max_input_size,
            max_objects: config.max_objects,
            fsck: if config.fsck_objects {
                FsckObjects::On
            } else {
                FsckObjects::Off
            },
            fsck_options,
            shallow,
            thread_limit: Some(grant.threads()),
            max_object_bytes: Some(config.max_object_size),
            big_file_threshold: Some(config.big_file_threshold),
        };
        let outcome = ingest::ingest_pack(
            input,
            repo.objects(),
            &quarantine,
            &options,
            &self.options.interrupt,
        )
        .map_err(|err| error_chain(&err))?;
        drop(grant);
        // git's index-pack: `warning: object <id>: <msg-id>: <message>`.
        for warning in &outcome.fsck_warnings {
            channel.warning(warning);
        }
        tracing::debug!(
            objects = outcome.objects,
            completed_bases = outcome.completed_bases,
            bytes = outcome.bytes_read,
            "pack received"
        );
        // As git: a push of fewer objects than receive.unpackLimit becomes loose objects.
        let received = outcome.objects - outcome.completed_bases;
        if received < config.unpack_limit {
            let loose = packgate_pack::explode::explode(&quarantine, &outcome)
                .map_err(|err| error_chain(&err))?;
            tracing::debug!(loose, "pack exploded into loose objects");
        }
        if !self.list.capabilities.quiet && outcome.objects > 0 {
            channel.message(
                format!(
                    "Received {} objects ({} bytes), {} bases added.\n",
                    outcome.objects, outcome.bytes_read, outcome.completed_bases
                )
                .as_bytes(),
            );
        }
        Ok(quarantine)
    }

    /// git's checks in `update()` before the hook: ref name, hidden refs, checked-out branch,
    /// missing objects, deletions, fast-forwards. Returns the work tree to update with the
    /// ref under `receive.denyCurrentBranch=updateInstead`.
    fn check<W: Write>(
        &self,
        command: &Command,
        head: Option<&BString>,
        worktrees: &Worktrees,
        objects: &dyn ObjectsAccess,
        channel: &mut Channel<'_, W>,
    ) -> Result<Option<Worktree>, String> {
        let config = &self.receive_pack.config;
        if let Err(funny) = &command.ref_name {
            channel.error(funny.to_string());
            return Err("funny refname".into());
        }
        let name = command.name.as_bstr();
        if config.is_hidden(name, self.receive_pack.repo.namespace()) {
            return Err("deny updating a hidden ref".into());
        }
        // As git's `update()`: the branch is checked out if a work tree's HEAD names it as
        // the client names it (in a namespace, without the prefix; the main work tree unless
        // the repository is bare, and every linked one); for a deletion, also the ref HEAD
        // names by its full name.
        let checked_out = worktrees.find(name);
        let is_head = checked_out.is_some()
            || match (head, &command.ref_name) {
                (Some(head), Ok(full)) => head == full.as_bstr(),
                _ => false,
            };
        let mut update_worktree = None;
        if let Some(worktree) = checked_out {
            match config.deny_current_branch {
                Deny::Ignore => {}
                Deny::Warn => channel.warning("updating the current branch"),
                Deny::Refuse | Deny::Unconfigured => {
                    channel.error(format!("refusing to update checked out branch: {name}"));
                    if config.deny_current_branch == Deny::Unconfigured {
                        channel.error(REFUSE_UNCONFIGURED_DENY);
                    }
                    return Err("branch is currently checked out".into());
                }
                // The other checks come first; the work tree is updated before the ref moves.
                Deny::UpdateInstead => update_worktree = Some(worktree.clone()),
            }
        }
        if !command.is_delete() {
            match objects.kind(&command.new) {
                None => {
                    channel.error(format!(
                        "unpack should have generated {}, but I can't find it!",
                        command.new
                    ));
                    return Err("bad pack".into());
                }
                Some(kind)
                    if kind != gix_object::Kind::Commit && name.starts_with(b"refs/heads/") =>
                {
                    channel.error(format!(
                        "trying to write non-commit object {} to branch '{name}'",
                        command.new
                    ));
                    return Err("failed to update ref".into());
                }
                Some(_) => {}
            }
        }
        if command.is_delete() && !command.is_create() {
            if config.deny_deletes && name.starts_with(b"refs/heads/") {
                channel.error(format!("denying ref deletion for {name}"));
                return Err("deletion prohibited".into());
            }
            if is_head {
                match config.deny_delete_current {
                    Deny::Ignore => {}
                    Deny::Warn => channel.warning("deleting the current branch"),
                    Deny::Refuse | Deny::Unconfigured | Deny::UpdateInstead => {
                        if config.deny_delete_current == Deny::Unconfigured {
                            channel.error(REFUSE_UNCONFIGURED_DENY_DELETE_CURRENT);
                        }
                        channel.error(format!("refusing to delete the current branch: {name}"));
                        return Err("deletion of the current branch prohibited".into());
                    }
                }
            }
        }
        if config.deny_non_fast_forwards
            && !command.is_delete()
            && !command.is_create()
            && name.starts_with(b"refs/heads/")
            && !objects.is_ancestor(&command.old, &command.new)
        {
            channel.error(format!(
                "denying non-fast-forward {name} (you should pull first)"
            ));
            return Err("non-fast-forward".into());
        }
        Ok(update_worktree)
    }

    /// The checks git makes of a command the proc-receive hook is to carry out: its name
    /// (a command packgate could not name a ref for cannot go anywhere) and hidden refs.
    fn check_for_hook<W: Write>(
        &self,
        command: &Command,
        channel: &mut Channel<'_, W>,
    ) -> Result<(), String> {
        if let Err(funny) = &command.ref_name {
            channel.error(funny.to_string());
            return Err("funny refname".into());
        }
        let config = &self.receive_pack.config;
        if config.is_hidden(command.name.as_bstr(), self.receive_pack.repo.namespace()) {
            return Err("deny updating a hidden ref".into());
        }
        Ok(())
    }

    /// git's `run_proc_receive_hook()`: the commands `receive.procReceiveRefs` reserved go to
    /// the hooks' `proc_receive` (in-process hooks first, then the `proc-receive` script),
    /// and each gets the hook's answer. If the hook failed, every command it did not accept
    /// fails with "fail to run proc-receive hook", and with an atomic push every other too.
    fn run_proc_receive<W: Write>(
        &self,
        pending: &mut [Pending<'_>],
        channel: &mut Channel<'_, W>,
    ) {
        let atomic = self.list.capabilities.atomic;
        let for_hook: Vec<usize> = (0..pending.len())
            .filter(|&index| pending[index].is_for_hook())
            .collect();
        let commands: Vec<RefUpdate> = for_hook
            .iter()
            .map(|&index| pending[index].as_update())
            .collect();
        let other_refs: Vec<BString> = pending
            .iter()
            .filter(|p| p.proc == Proc::No)
            .map(|p| p.command.name.clone())
            .collect();
        let request = ProcReceiveRequest {
            commands: &commands,
            other_refs: &other_refs,
            atomic,
        };
        let context = self.settled_context();
        let hooks = self.receive_pack.hook_chain();
        let answer = hooks.proc_receive(&context, &request, &mut channel.messages());
        let failed = match answer {
            ProcReceive::Declined => {
                channel.error("cannot find hook 'proc-receive'");
                true
            }
            ProcReceive::Failed => true,
            ProcReceive::Reported { results, .. } if results.len() != commands.len() => {
                tracing::warn!(
                    commands = commands.len(),
                    results = results.len(),
                    "the proc-receive hook answered with the wrong number of results"
                );
                true
            }
            ProcReceive::Reported {
                results,
                mut failed,
            } => {
                for (&index, result) in for_hook.iter().zip(results) {
                    let p = &mut pending[index];
                    match result {
                        CommandResult::Unreported => {
                            p.refuse("proc-receive failed to report status");
                            failed = true;
                        }
                        CommandResult::Ok(reports) => p.proc = Proc::Done(reports),
                        CommandResult::Rejected(reason) => {
                            p.refuse(reason);
                            failed = true;
                        }
                        CommandResult::FallThrough(reports) => p.proc = Proc::FallThrough(reports),
                    }
                }
                failed
            }
        };
        if failed {
            for p in pending.iter_mut().filter(|p| p.is_pending()) {
                let scheduled = p.proc == Proc::Scheduled;
                let done = matches!(p.proc, Proc::Done(_));
                if !done && (scheduled || atomic) {
                    p.refuse("fail to run proc-receive hook");
                }
            }
        }
    }

    /// The commands a proc-receive hook left to receive-pack (`option fall-through`): the
    /// checks and the update hook they skipped, now, with the objects in place (where git
    /// runs both for every command). With an atomic push, one refused fails all.
    fn check_fall_through<W: Write>(
        &self,
        pending: &mut [Pending<'_>],
        head: Option<&BString>,
        channel: &mut Channel<'_, W>,
    ) {
        let repo = self.receive_pack.repo;
        if !pending
            .iter()
            .any(|p| p.is_pending() && matches!(p.proc, Proc::FallThrough(_)))
        {
            return;
        }
        let objects = CachingReader::new(
            repo.objects().clone(),
            packgate_pack::reader::DEFAULT_CACHE_BYTES,
        );
        // A fall-through ref may be a work tree's branch (updateInstead), as any other.
        let worktrees = self.worktrees();
        let hooks = self.receive_pack.hook_chain();
        let context = self.settled_context();
        let mut refused = false;
        for p in pending
            .iter_mut()
            .filter(|p| p.is_to_run() && matches!(p.proc, Proc::FallThrough(_)))
        {
            match self.check(p.command, head, &worktrees, &objects, channel) {
                Ok(worktree) => p.worktree = worktree,
                Err(reason) => {
                    p.refuse(reason);
                    refused = true;
                    continue;
                }
            }
            let verdict = hooks.update(&context, &p.as_update(), &mut channel.messages());
            if let Verdict::Refuse { reason } = verdict {
                channel.error(format!("hook declined to update {}", p.command.name));
                p.refuse(reason);
                refused = true;
            }
        }
        if refused && self.list.capabilities.atomic {
            for p in pending.iter_mut() {
                p.refuse("atomic push failure");
            }
        }
    }

    /// Refuse the commands whose ref no longer has the value the client saw, before hooks
    /// run. Only an early answer: a concurrent push may still move the ref before this one's
    /// transaction, whose compare-and-swap then fails the ref, as in git.
    fn check_current_values<W: Write>(
        &self,
        pending: &mut [Pending<'_>],
        channel: &mut Channel<'_, W>,
    ) {
        let store = self.receive_pack.repo.ref_store();
        // A ref named by several commands may move between them (git carries them out in
        // turn): the transactions judge those.
        let repeated = self.list.repeated_names();
        for p in pending
            .iter_mut()
            .filter(|p| p.is_pending() && p.proc == Proc::No)
        {
            // Deleting with a null old value deletes whatever is there, as in git.
            if p.command.is_delete() && p.command.is_create() {
                continue;
            }
            if repeated.contains(p.command.name.as_bstr()) {
                continue;
            }
            let Ok(name) = &p.command.ref_name else {
                continue;
            };
            let current = match store.try_find(name.as_ref()) {
                Ok(Some(reference)) => match reference.target {
                    Target::Object(id) => Some(id),
                    // A symbolic ref: leave it to the transaction.
                    Target::Symbolic(_) => continue,
                },
                Ok(None) => None,
                Err(err) => {
                    tracing::debug!(%err, name = %p.command.name, "could not read ref");
                    continue;
                }
            };
            let expected = (!p.command.is_create()).then_some(p.command.old);
            if current != expected {
                let show = |id: Option<ObjectId>| {
                    id.map_or_else(|| "missing".to_owned(), |id| id.to_string())
                };
                channel.error(format!(
                    "cannot lock ref '{}': is at {} but expected {}",
                    p.command.name,
                    show(current),
                    show(expected)
                ));
                p.refuse("failed to update ref");
            }
        }
    }

    /// git's `check_aliased_updates()`: a command on a symbolic ref whose target another
    /// command of the push names is not carried out itself. If both would set the same old
    /// and new values it is reported as done; otherwise both fail. A symbolic ref that leads
    /// nowhere (a loop, too deep) fails.
    fn check_aliased_updates<W: Write>(
        &self,
        pending: &mut [Pending<'_>],
        channel: &mut Channel<'_, W>,
    ) {
        let store = self.receive_pack.repo.ref_store();
        let by_name = self.list.first_by_name();
        for index in 0..pending.len() {
            if !pending[index].is_pending() {
                continue;
            }
            let command = pending[index].command;
            let Ok(name) = &command.ref_name else {
                continue;
            };
            let destination = match symref_destination(&store, name) {
                Ok(Some(destination)) => destination,
                Ok(None) => continue,
                Err(()) => {
                    channel.error(format!(
                        "refusing update to broken symref '{}'",
                        command.name
                    ));
                    pending[index].skip = true;
                    pending[index].refuse("broken symref");
                    continue;
                }
            };
            // The commands name refs without the namespace's prefix.
            let destination = match self.receive_pack.repo.namespace() {
                Some(namespace) => match namespace.strip(destination.as_bstr()) {
                    Some(stripped) => stripped.as_bstr().to_owned(),
                    None => continue,
                },
                None => destination.as_bstr().to_owned(),
            };
            let Some(&target) = by_name.get(destination.as_bstr()) else {
                continue;
            };
            pending[index].skip = true;
            let other = pending[target].command;
            if command.old == other.old && command.new == other.new {
                continue;
            }
            pending[target].skip = true;
            let short = |id: &ObjectId| id.to_hex_with_len(7).to_string();
            channel.error(format!(
                "refusing inconsistent update between symref '{}' ({}..{}) and its target \
                 '{}' ({}..{})",
                command.name,
                short(&command.old),
                short(&command.new),
                other.name,
                short(&other.old),
                short(&other.new)
            ));
            pending[index].refuse("inconsistent aliased update");
            pending[target].refuse("inconsistent aliased update");
        }
    }

    /// Refuse the commands whose new tip does not connect to what the repository has.
    fn check_connectivity<W: Write>(
        &self,
        objects: &dyn ObjectsAccess,
        pending: &mut [Pending<'_>],
        grafts: &HashSet<ObjectId>,
        channel: &mut Channel<'_, W>,
    ) {
        let existing: Vec<ObjectId> = match self.receive_pack.repo.all_refs(None) {
            Ok(refs) => refs.into_iter().map(|record| record.id).collect(),
            Err(err) => {
                tracing::warn!(%err, "could not list refs for the connectivity check");
                Vec::new()
            }
        };
        let tips: Vec<ObjectId> = pending
            .iter()
            .filter(|p| p.is_pending() && !p.command.is_delete())
            .map(|p| p.command.new)
            .collect();
        // Each ref's history ends at its own new roots; all of them together for the check
        // of the whole push (a ref's walk never reaches another's roots without reaching
        // them itself: it would have been assigned them).
        let mut all_grafts = grafts.clone();
        all_grafts.extend(accepted_roots(pending, |p| p.is_pending()));
        if tips.is_empty()
            || objects
                .check_connectivity(&tips, &existing, &all_grafts)
                .is_ok()
        {
            return;
        }
        // Find out which ones, as git does.
        for p in pending
            .iter_mut()
            .filter(|p| p.is_pending() && !p.command.is_delete())
        {
            let mut own_grafts = grafts.clone();
            own_grafts.extend(p.shallow_roots.iter().copied());
            if let Err(err) = objects.check_connectivity(&[p.command.new], &existing, &own_grafts) {
                channel.error(format!(
                    "{}: missing necessary objects: {err}",
                    p.command.name
                ));
                // git's word for a ref checked with its new shallow roots.
                p.refuse(if p.shallow_roots.is_empty() {
                    "missing necessary objects"
                } else {
                    "shallow error"
                });
            }
        }
    }

    /// Apply the accepted commands: one transaction for an atomic push, else one per ref.
    fn update_refs<W: Write>(&self, pending: &mut [Pending<'_>], channel: &mut Channel<'_, W>) {
        let config = &self.receive_pack.config;
        let mut store = self.receive_pack.repo.ref_store();
        store.write_reflog = config.write_reflog();
        // Read once per push: which branch an update also logs in HEAD's reflog.
        let head = head_branch(&store);
        // Behind an HTTP front-end, reflog entries name the pusher (`with_reflog_identity`).
        let (name, email) = match &self.receive_pack.reflog_identity {
            Some(identity) => identity.clone(),
            None => (
                config.committer_name.clone(),
                config.committer_email.clone(),
            ),
        };
        let committer = gix_actor::Signature {
            name,
            email,
            time: gix_date::Time::now_local_or_utc(),
        };
        let mut time = gix_date::parse::TimeBuf::default();
        let committer = committer.to_ref(&mut time);
        if self.list.capabilities.atomic {
            let mut edits = Vec::new();
            let mut failed = false;
            for p in pending.iter_mut().filter(|p| p.is_to_run()) {
                match self.edit(&store, head.as_ref(), p.command, channel) {
                    Ok(Some(edit)) => edits.push(edit),
                    Ok(None) => p.did_not_exist = true,
                    Err(reason) => {
                        p.refuse(reason);
                        failed = true;
                    }
                }
            }
            // Commands that failed earlier (a proc-receive hook's `ng`) are left out, as in
            // git; a ref that cannot be updated now fails every other.
            if failed {
                for p in pending.iter_mut() {
                    p.refuse("atomic push failure");
                }
                return;
            }
            // git finds a ref in the way while it commits: the whole transaction fails.
            let blocked = pending
                .iter()
                .filter(|p| p.is_to_run() && p.command.is_create())
                .find_map(|p| self.name_in_the_way(p.command).err());
            if let Some(message) = blocked {
                channel.error(message);
                for p in pending.iter_mut() {
                    p.refuse("atomic transaction failed");
                }
                return;
            }
            // As git's `update()`, each work tree before the transaction; the first failure
            // ends the push, leaving the rest of the work trees as they are.
            for p in pending.iter_mut().filter(|p| p.is_to_run()) {
                if let Some(worktree) = p.worktree.clone() {
                    if let Err(reason) = self.update_worktree(p.command, &worktree, channel) {
                        p.refuse(reason);
                        break;
                    }
                }
            }
            if refuse_rest_if_any_failed(pending) {
                return;
            }
            if let Err(err) = self.commit(&store, edits, committer) {
                channel.error(error_chain(&err));
                for p in pending.iter_mut() {
                    p.refuse("atomic transaction failed");
                }
            }
            return;
        }
        for p in pending.iter_mut().filter(|p| p.is_to_run()) {
            let edit = match self.edit(&store, head.as_ref(), p.command, channel) {
                Ok(Some(edit)) => edit,
                Ok(None) => {
                    p.did_not_exist = true;
                    continue;
                }
                Err(reason) => {
                    p.refuse(reason);
                    continue;
                }
            };
            if let Err(message) = self.name_in_the_way(p.command) {
                channel.error(message);
                p.refuse("failed to update ref");
                continue;
            }
            if let Some(worktree) = &p.worktree {
                if let Err(reason) = self.update_worktree(p.command, worktree, channel) {
                    p.refuse(reason);
                    continue;
                }
            }
            if let Err(err) = self.commit(&store, vec![edit], committer) {
                channel.error(format!(
                    "failed to update ref {}: {}",
                    p.command.name,
                    error_chain(&err)
                ));
                p.refuse("failed to update ref");
            }
        }
    }

    /// git's `update_worktree()` for a command on the branch `worktree` has checked out:
    /// the `push-to-checkout` hook decides if there is one; otherwise the work tree must be
    /// clean and is checked out at the new commit. Returns the `ng` reason on failure.
    fn update_worktree<W: Write>(
        &self,
        command: &Command,
        worktree: &Worktree,
        channel: &mut Channel<'_, W>,
    ) -> Result<(), String> {
        let repo = self.receive_pack.repo;
        let Some(work_tree) = &worktree.path else {
            return Err(worktree::UpdateError::NoWorktree.to_string());
        };
        let hooks = self.receive_pack.hook_chain();
        let context = self.settled_context();
        let checkout = packgate_hooks::Checkout {
            name: command.name.as_bstr(),
            new: command.new,
            git_dir: &worktree.git_dir,
            work_tree,
        };
        if let Some(verdict) = hooks.push_to_checkout(&context, &checkout, &mut channel.messages())
        {
            return match verdict {
                Verdict::Accept => Ok(()),
                Verdict::Refuse { reason } => Err(reason),
            };
        }
        let store = repo.ref_store();
        let old = worktree.head_commit(|branch| resolve_branch(&store, branch));
        let new = (!command.is_delete()).then_some(command.new);
        let settings = worktree::Settings::from_config(repo.config());
        let index = worktree.git_dir.join("index");
        worktree::update(work_tree, &index, old, new, repo.objects(), &settings).map_err(|err| {
            tracing::debug!(%err, detail = err.detail(), work_tree = %work_tree.display(), "work tree not updated");
            if let Some(detail) = err.detail() {
                channel.error(detail);
            }
            err.to_string()
        })
    }

    /// Apply `edits` in one transaction. Each ref is locked (`<ref>.lock`, and `packed-refs.lock`
    /// for a deletion) for as long as git would wait; a lock another process holds, or one a
    /// killed process left behind, fails the transaction with the lock file's name, as in git.
    fn commit(
        &self,
        store: &gix_ref::file::Store,
        edits: Vec<RefEdit>,
        committer: gix_actor::SignatureRef<'_>,
    ) -> Result<(), gix_error::Error> {
        let config = &self.receive_pack.config;
        store
            .transaction()
            .prepare(edits, config.ref_lock_timeout, config.packed_refs_timeout)?
            .commit(committer)?;
        Ok(())
    }

    /// The ref edit for `command`, with compare-and-swap on the value the client saw;
    /// `None` when there is nothing to do (deleting a ref that does not exist).
    fn edit<W: Write>(
        &self,
        store: &gix_ref::file::Store,
        head: Option<&FullName>,
        command: &Command,
        channel: &mut Channel<'_, W>,
    ) -> Result<Option<RefEdit>, String> {
        let name = command.ref_name.clone().map_err(|_| "funny refname")?;
        let expected = if command.is_create() {
            PreviousValue::MustNotExist
        } else {
            PreviousValue::MustExistAndMatch(Target::Object(command.old))
        };
        if command.is_delete() {
            if command.is_create() {
                // Deleting with a null old value: git deletes whatever is there.
                match store.try_find(name.as_ref()) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        channel.warning("deleting a non-existent ref");
                        return Ok(None);
                    }
                    Err(err) => return Err(format!("failed to read ref: {err}")),
                }
                return Ok(Some(ref_edit(
                    name,
                    Change::Delete {
                        expected: PreviousValue::MustExist,
                        log: RefLog::AndReference,
                    },
                )));
            }
            return Ok(Some(ref_edit(
                name,
                Change::Delete {
                    expected,
                    log: RefLog::AndReference,
                },
            )));
        }
        // Updating the branch `HEAD` names goes through `HEAD`, so that `HEAD`'s reflog gets
        // the entry too, as git's files backend writes it (`split_head_update`).
        let name = match head {
            Some(branch) if *branch == name => FullName::try_from("HEAD").unwrap_or(name),
            _ => name,
        };
        Ok(Some(ref_edit(
            name,
            Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: REFLOG_MESSAGE.into(),
                },
                expected,
                new: Target::Object(command.new),
            },
        )))
    }

    /// Refuse to create a ref where another is in the way, as git's
    /// `verify_refname_available()` does while it locks: a ref named by a leading part of `name` (`refs/heads/a` blocks
    /// `refs/heads/a/b`), or refs below `name` (`refs/heads/a/b` blocks `refs/heads/a`), other
    /// than ones this push deletes. Checked before the transaction, so that an atomic push
    /// fails before any ref moves: the file store finds such a conflict only while it renames
    /// lock files into place, one ref after another.
    fn name_in_the_way(&self, command: &Command) -> Result<(), String> {
        let Ok(name) = &command.ref_name else {
            return Ok(());
        };
        if !command.is_create() {
            return Ok(());
        }
        let repo = self.receive_pack.repo;
        let deleted: Vec<&bstr::BStr> = self
            .list
            .commands
            .iter()
            .filter(|command| command.is_delete())
            .filter_map(|command| command.ref_name.as_ref().ok().map(|name| name.as_bstr()))
            .collect();
        let text = name.as_bstr();
        let blocked = |other: &bstr::BStr| {
            format!("cannot lock ref '{text}': '{other}' exists; cannot create '{text}'")
        };
        let store = repo.ref_store();
        let slashes = text
            .iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'/')
            .map(|(at, _)| at);
        for end in slashes.skip(1) {
            let leading = &text[..end];
            if deleted.contains(&leading.as_bstr()) {
                continue;
            }
            let Ok(leading_name) = gix_ref::FullName::try_from(leading.as_bstr()) else {
                continue;
            };
            match store.try_find(leading_name.as_ref()) {
                Ok(Some(_)) => return Err(blocked(leading.as_bstr())),
                Ok(None) => {}
                Err(err) => return Err(format!("failed to read ref: {err}")),
            }
        }
        let mut below = text.to_owned();
        below.push(b'/');
        let prefixes = [crate::refname::RefPrefix::new(below)];
        let refs = repo
            .all_refs(Some(&prefixes))
            .map_err(|err| format!("failed to read refs: {err}"))?;
        match refs
            .iter()
            .find(|record| !deleted.contains(&record.name.as_bstr()))
        {
            Some(record) => Err(blocked(record.name.as_bstr())),
            None => Ok(()),
        }
    }

    /// `post-receive` and `post-update`, once the report is out. Their output reaches the
    /// client while it still reads the sideband, as with git.
    pub(super) fn post_hooks<W: Write>(&self, accepted: &Accepted, channel: &mut Channel<'_, W>) {
        if accepted.names.is_empty() {
            return;
        }
        let hooks = self.receive_pack.hook_chain();
        let context = self.settled_context();
        hooks.post_receive(&context, &accepted.updates, &mut channel.messages());
        hooks.post_update(&context, &accepted.names, &mut channel.messages());
    }
}

/// The branch `HEAD` points at, if `HEAD` is a symbolic ref (to a branch that may not exist).
fn head_branch(store: &gix_ref::file::Store) -> Option<FullName> {
    let head = store.try_find("HEAD").ok()??;
    match head.target {
        Target::Symbolic(branch) => Some(branch),
        Target::Object(_) => None,
    }
}

/// The commit the branch `name` points at (through symbolic refs), if it exists.
fn resolve_branch(store: &gix_ref::file::Store, name: &bstr::BStr) -> Option<ObjectId> {
    const MAX_READS: usize = 5;
    let mut current = FullName::try_from(name).ok()?;
    for _ in 0..MAX_READS {
        match store.try_find(current.as_ref()).ok()??.target {
            Target::Object(id) => return Some(id),
            Target::Symbolic(next) => current = next,
        }
    }
    None
}

/// An edit of the ref `name` that, if `name` is a symbolic ref, changes the ref it points to
/// (and records the change in both reflogs), as git's ref updates without `REF_NO_DEREF`.
fn ref_edit(name: FullName, change: Change) -> RefEdit {
    RefEdit::new(name, change).with_deref(true)
}

/// Where the symbolic ref `name` leads after following every symbolic ref on the way (the
/// last name, whether that ref exists or not); `None` if `name` is not a symbolic ref, an
/// error if the chain does not end within git's five reads.
fn symref_destination(
    store: &gix_ref::file::Store,
    name: &FullName,
) -> Result<Option<FullName>, ()> {
    const MAX_READS: usize = 5;
    let mut current = name.clone();
    let mut is_symref = false;
    for _ in 0..MAX_READS {
        match store.try_find(current.as_ref()) {
            Ok(Some(gix_ref::Reference {
                target: Target::Symbolic(next),
                ..
            })) => {
                is_symref = true;
                current = next;
            }
            Ok(_) => return Ok(is_symref.then_some(current)),
            Err(err) if is_symref => {
                tracing::debug!(%err, name = %current, "could not read the target of a symbolic ref");
                return Err(());
            }
            Err(_) => return Ok(None),
        }
    }
    Err(())
}

/// For an atomic push: if any command failed, every other one fails too. Returns whether
/// that happened.
fn refuse_rest_if_any_failed(pending: &mut [Pending<'_>]) -> bool {
    if pending.iter().all(Pending::is_pending) {
        return false;
    }
    for p in pending.iter_mut() {
        p.refuse("atomic push failure");
    }
    true
}

/// For tests only (`tests/crash.rs`): while this environment variable names a file, a push
/// stops between moving its objects into the repository and updating its refs, so that a
/// test can kill the server exactly there. The server writes its process id to the file and
/// waits until the file is gone, a minute at most. Nothing else reads it; never set it in
/// production.
const PAUSE_AFTER_MIGRATION: &str = "PACKGATE_TEST_PAUSE_AFTER_MIGRATION";

/// The new shallow roots of the commands `keep` selects, once each, in the client's order.
fn accepted_roots<'a>(
    pending: &[Pending<'a>],
    keep: impl Fn(&Pending<'a>) -> bool,
) -> Vec<ObjectId> {
    let mut roots: Vec<ObjectId> = Vec::new();
    for p in pending.iter().filter(|p| keep(p)) {
        for root in &p.shallow_roots {
            if !roots.contains(root) {
                roots.push(*root);
            }
        }
    }
    roots
}

/// Stop at a test's pause point if the environment asks for it (see [`PAUSE_AFTER_MIGRATION`]).
pub(super) fn pause_for_tests(variable: &str) {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
    let Some(marker) = std::env::var_os(variable).map(std::path::PathBuf::from) else {
        return;
    };
    // Written under another name and renamed, so the test never reads half a line.
    let mut partial = marker.clone().into_os_string();
    partial.push(".partial");
    let written = std::fs::write(&partial, std::process::id().to_string())
        .and_then(|()| std::fs::rename(&partial, &marker));
    if let Err(err) = written {
        tracing::warn!(%err, variable, "could not write the pause marker");
        return;
    }
    tracing::warn!(variable, "paused for a test");
    let started = std::time::Instant::now();
    while marker.exists() && started.elapsed() < LIMIT {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What indexing a pushed pack is expected to hold, for the budget: gix-pack's entry tree
/// and its delta resolution (git's index-pack holds about as much for a push of 100k objects).
const INGEST_MEMORY: u64 = 64 << 20;

/// A push's receive-pack, owned, for the thread that finishes the push while the session's
/// thread sends keepalives (a [`Repository`](crate::repository::Repository) can't be shared
/// between threads; a clone can move to one).
struct Detached {
    repo: crate::repository::Repository,
    config: super::ReceivePackConfig,
    hooks: Vec<std::sync::Arc<dyn Hook>>,
    run_scripts: bool,
    remote_user: Option<String>,
    reflog_identity: Option<(BString, BString)>,
    nonce: Option<String>,
    session_id: String,
    budget: crate::budget::Budget,
    client: std::sync::Arc<str>,
    forward: Option<std::sync::Arc<dyn super::gate::Forward>>,
}

impl From<&ReceivePack<'_>> for Detached {
    fn from(receive_pack: &ReceivePack<'_>) -> Self {
        Detached {
            repo: receive_pack.repo.clone(),
            config: receive_pack.config.clone(),
            hooks: receive_pack.hooks.clone(),
            run_scripts: receive_pack.run_scripts,
            remote_user: receive_pack.remote_user.clone(),
            reflog_identity: receive_pack.reflog_identity.clone(),
            nonce: receive_pack.nonce.clone(),
            session_id: receive_pack.session_id.clone(),
            budget: receive_pack.budget.clone(),
            client: receive_pack.client.clone(),
            forward: receive_pack.forward.clone(),
        }
    }
}

impl Detached {
    fn attach(&self) -> ReceivePack<'_> {
        ReceivePack {
            repo: &self.repo,
            config: self.config.clone(),
            hooks: self.hooks.clone(),
            run_scripts: self.run_scripts,
            remote_user: self.remote_user.clone(),
            reflog_identity: self.reflog_identity.clone(),
            nonce: self.nonce.clone(),
            session_id: self.session_id.clone(),
            budget: self.budget.clone(),
            client: self.client.clone(),
            forward: self.forward.clone(),
        }
    }
}

/// What a push needs of an object database (the quarantine with the repository behind it,
/// or the repository alone).
trait ObjectsAccess {
    fn as_find(&self) -> &dyn gix_object::Find;
    /// The kind of an object, or `None` if it is missing (or unreadable).
    fn kind(&self, id: &ObjectId) -> Option<gix_object::Kind>;
    /// Whether `ancestor` is `descendant` or one of its ancestors.
    fn is_ancestor(&self, ancestor: &ObjectId, descendant: &ObjectId) -> bool;
    /// Whether everything reachable from `tips` is present, stopping at `existing` and at
    /// the parents of `grafts` (shallow commits).
    fn check_connectivity(
        &self,
        tips: &[ObjectId],
        existing: &[ObjectId],
        grafts: &HashSet<ObjectId>,
    ) -> Result<(), ingest::ConnectivityError>;
    /// For each of `tips`, the `candidates` (a shallow client's boundary) its new history
    /// stops at.
    fn shallow_roots(
        &self,
        tips: &[ObjectId],
        existing: &[ObjectId],
        candidates: &[ObjectId],
        grafts: &HashSet<ObjectId>,
    ) -> Result<Vec<Vec<ObjectId>>, ingest::ShallowWalkError>;
}

impl<T> ObjectsAccess for T
where
    T: gix_object::Find + gix_object::FindHeader + gix_object::Exists,
{
    fn as_find(&self) -> &dyn gix_object::Find {
        self
    }

    fn kind(&self, id: &ObjectId) -> Option<gix_object::Kind> {
        self.try_header(id).ok().flatten().map(|header| header.kind)
    }

    fn is_ancestor(&self, ancestor: &ObjectId, descendant: &ObjectId) -> bool {
        match packgate_negotiate::reachable_from(self, &[*descendant], &[*ancestor]) {
            Ok(found) => found.contains(ancestor),
            Err(err) => {
                tracing::debug!(%err, "fast-forward check failed");
                false
            }
        }
    }

    fn check_connectivity(
        &self,
        tips: &[ObjectId],
        existing: &[ObjectId],
        grafts: &HashSet<ObjectId>,
    ) -> Result<(), ingest::ConnectivityError> {
        ingest::check_connectivity_with_grafts(self, tips, existing, grafts).map(|_| ())
    }

    fn shallow_roots(
        &self,
        tips: &[ObjectId],
        existing: &[ObjectId],
        candidates: &[ObjectId],
        grafts: &HashSet<ObjectId>,
    ) -> Result<Vec<Vec<ObjectId>>, ingest::ShallowWalkError> {
        ingest::shallow_roots_by_tip(self, tips, existing, candidates, grafts)
    }
}

const REFUSE_UNCONFIGURED_DENY: &str = "\
By default, updating the current branch in a non-bare repository
is denied, because it will make the index and work tree inconsistent
with what you pushed, and will require 'git reset --hard' to match
the work tree to HEAD.

You can set the 'receive.denyCurrentBranch' configuration variable
to 'ignore' or 'warn' in the remote repository to allow pushing into
its current branch; however, this is not recommended unless you
arranged to update its work tree to match what you pushed in some
other way.

To squelch this message and still keep the default behaviour, set
'receive.denyCurrentBranch' configuration variable to 'refuse'.";

const REFUSE_UNCONFIGURED_DENY_DELETE_CURRENT: &str = "\
By default, deleting the current branch is denied, because the next
'git clone' won't result in any file checked out, causing confusion.

You can set 'receive.denyDeleteCurrent' configuration variable to
'warn' or 'ignore' in the remote repository to allow deleting the
current branch, with or without a warning message.

To squelch this message, you can set it to 'refuse'.";
