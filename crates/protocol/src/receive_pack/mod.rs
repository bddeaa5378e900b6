//! receive-pack: the server side of `git push`, over protocol v0 (and v1, which only adds a
//! `version 1` line). Push has no protocol v2; a client asking for it gets v0, as from git.
//!
//! A push is one exchange, driven by [`ReceivePack::serve()`] over any blocking reader and
//! writer:
//!
//! 1. the server advertises its refs and capabilities ([`ReceivePack::advertise()`]);
//! 2. the client sends `shallow <id>` lines if it is a shallow clone, `<old> <new> <ref>`
//!    commands (capabilities on the first), a flush, push options if both sides do
//!    `push-options`, and a pack unless it only deletes;
//! 3. the pack goes into a quarantine directory inside the object store; a ref whose new
//!    history stops at a client boundary commit the repository has no complete history for
//!    is refused ("shallow update not allowed") unless `receive.shallowUpdate`, which makes
//!    those commits the ref's new shallow roots; the objects are checked for connectivity
//!    from the new tips, history ending at the repository's and the new shallow commits;
//! 4. each command is checked against the repository's `receive.*` settings and hidden refs,
//!    then the `pre-receive` hooks judge the whole push and the `update` hooks each ref;
//! 5. if anything is left to update, the quarantine is moved into the repository, the new
//!    shallow roots of the refs to update are added to `$GIT_DIR/shallow`, and the refs
//!    are updated with compare-and-swap on their old values: one transaction for an `atomic`
//!    push (all or nothing), else one transaction per ref, as git does;
//! 6. the client gets a status report (`unpack ok`, `ok <ref>` / `ng <ref> <reason>`), then
//!    `post-receive` and `post-update` hooks run.
//!
//! Pushes to one repository run side by side, as git's do: no repository-wide lock, only
//! each ref's own lock for the moment of its compare-and-swap, so a push to one ref never
//! waits for another's hooks, and a server killed at any point leaves nothing that blocks
//! the next push (one exception, as in git: killed while it rewrote `$GIT_DIR/shallow`, it
//! leaves `shallow.lock`, which fails later shallow updates until deleted). A push that is refused or fails before step 5 leaves nothing behind: the
//! quarantine is deleted when it is dropped; one whose process was killed is removed by a
//! later push once it is older than `receive.quarantineExpiry`.
//!
//! With `side-band-64k` the report travels in band 1 and messages for the user (hook output,
//! refusals, explained as `remote: error: …`) in band 2; without it messages go where the
//! caller's [`ReceivePackOptions::messages`] says: standard error for a stdio session (the
//! user's terminal, as with git), the log for a network session (as git daemon's and git
//! http-backend's receive-pack write them to the daemon's or web server's log). The library
//! itself never writes to the process's standard streams.

mod commands;
mod config;
pub mod gate;
mod messages;
pub mod proc_receive;
pub mod push_cert;
mod report;
mod shallow;
mod update;
mod worktree;

use std::{
    io::{BufReader, Read, Write},
    sync::{atomic::AtomicBool, Arc},
};

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use packgate_hooks::Hook;
use packgate_wire::pkt_line::{Packet, PacketReader, PacketWriter, ReadError};

pub use self::commands::{ClientCapabilities, Command, CommandError, CommandList};
pub use self::config::{Deny, ReceivePackConfig};
pub use self::messages::{MessageSink, MESSAGE_LOG_TARGET};
pub use self::proc_receive::{ProcReceiveRef, ProcReceiveRefs};
use self::report::Channel;
pub use self::report::{PushReport, RefStatus};
pub use self::shallow::ShallowUpdateError;
pub use crate::upload_pack::ServeError;
use crate::{
    repository::{RefRecord, Repository},
    upload_pack::agent,
};
/// The hook crate, whose [`Hook`] trait in-process hooks implement.
pub use packgate_hooks as hooks;

/// The capabilities receive-pack always advertises, first, in git's order; the rest depend on
/// the configuration ([`ReceivePack::capabilities()`]).
pub const CAPABILITIES: &str = "report-status report-status-v2 delete-refs side-band-64k quiet";

/// Which protocol version the client asked for (`GIT_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolVersion {
    /// Version 0, also what a client asking for version 2 gets.
    #[default]
    V0,
    /// Version 1: v0 preceded by a `version 1` line.
    V1,
}

/// How a push session is run.
#[derive(Debug, Clone, Default)]
pub struct ReceivePackOptions {
    /// HTTP-style: no advertisement unless asked for; the request is the commands and pack.
    pub stateless: bool,
    /// Only send the advertisement, then end.
    pub advertise_only: bool,
    /// The protocol version to speak.
    pub version: ProtocolVersion,
    /// Set from another thread to abandon pack ingestion (the push then fails cleanly).
    pub interrupt: Arc<AtomicBool>,
    /// Where messages for the user go if the client has no sideband (with it they go to the
    /// client, in band 2): the log unless the caller says otherwise.
    pub messages: MessageSink,
}

/// receive-pack for one repository, with the in-process hooks of the embedding application.
pub struct ReceivePack<'repo> {
    repo: &'repo Repository,
    config: ReceivePackConfig,
    hooks: Vec<Arc<dyn Hook>>,
    run_scripts: bool,
    remote_user: Option<String>,
    reflog_identity: Option<(BString, BString)>,
    /// The nonce of this session's `push-cert` capability (with `receive.certNonceSeed`),
    /// made when the session starts, as git's receive-pack makes it.
    nonce: Option<String>,
    /// This session's id, advertised under `transfer.advertiseSID`.
    session_id: String,
    /// Where indexing the pack takes its CPU slots and memory from.
    budget: crate::budget::Budget,
    /// Who pushes, for the budget's fairness between clients.
    client: std::sync::Arc<str>,
    /// The push client of a gated repository (see [`gate`]).
    forward: Option<Arc<dyn gate::Forward>>,
}

impl std::fmt::Debug for ReceivePack<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivePack")
            .field("repo", &self.repo)
            .field("config", &self.config)
            .field("hooks", &self.hooks.len())
            .field("run_scripts", &self.run_scripts)
            .field("forward", &self.forward.is_some())
            .finish()
    }
}

impl<'repo> ReceivePack<'repo> {
    /// Serve pushes to `repo` with its `receive.*` settings; the repository's hook scripts
    /// run, and no in-process hooks until added with [`ReceivePack::with_hook()`].
    pub fn new(repo: &'repo Repository) -> Result<Self, crate::config::ConfigError> {
        let config = ReceivePackConfig::from_config(repo.config(), repo.git_dir())?;
        let nonce = config.cert_nonce_seed.as_ref().map(|seed| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            push_cert::nonce(seed, &repo.git_dir().to_string_lossy(), now)
        });
        Ok(ReceivePack {
            repo,
            config,
            hooks: Vec::new(),
            run_scripts: true,
            remote_user: None,
            reflog_identity: None,
            nonce,
            session_id: crate::upload_pack::new_session_id(),
            budget: crate::budget::Budget::global(),
            client: std::sync::Arc::from("local"),
            forward: None,
        })
    }

    /// The push client a gated repository (one with an upstream: `packgate.upstream`, or
    /// [`ReceivePack::with_upstream()`]) forwards pushes with, before its refs move (see
    /// [`gate`]). Without one, a gated repository refuses every push.
    pub fn with_forward(mut self, forward: Option<Arc<dyn gate::Forward>>) -> Self {
        self.forward = forward;
        self
    }

    /// The push client and the configured upstreams of a server (see [`with_forward`] and
    /// [`with_upstream`]).
    ///
    /// [`with_forward`]: ReceivePack::with_forward
    /// [`with_upstream`]: ReceivePack::with_upstream
    pub fn with_upstreams(self, upstreams: &crate::upstream::Upstreams) -> Self {
        let configured = upstreams.configured(self.repo.git_dir());
        self.with_forward(upstreams.forward.clone())
            .with_upstream(configured)
    }

    /// Gate this repository in front of `upstream` when its configuration names none
    /// (`packgate.upstream` wins): the embedding application's setting, e.g. the TOML of
    /// `packgate serve --config`.
    pub fn with_upstream(mut self, upstream: Option<String>) -> Self {
        if self.config.upstream.is_none() {
            self.config.upstream = upstream;
        }
        self
    }

    /// Take indexing's CPU slots and memory from `budget`, as a request of `client` (an
    /// address or a user). Without this the process-wide
    /// [`Budget::global()`](crate::budget::Budget::global) is used.
    pub fn with_budget(mut self, budget: crate::budget::Budget, client: &str) -> Self {
        self.budget = budget;
        self.client = std::sync::Arc::from(client);
        self
    }

    /// Add an in-process hook (a policy of the embedding application). In-process hooks run
    /// in the order added, before the repository's hook scripts.
    pub fn with_hook(mut self, hook: impl Hook + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Whether to run the repository's hook scripts (`hooks/pre-receive`, … or
    /// `core.hooksPath`); on by default.
    pub fn with_hook_scripts(mut self, run: bool) -> Self {
        self.run_scripts = run;
        self
    }

    /// The user the front-end authenticated, for the hooks (`HookContext::remote_user`;
    /// `REMOTE_USER` for scripts).
    pub fn with_remote_user(mut self, user: Option<String>) -> Self {
        self.remote_user = user;
        self
    }
    /// The name and email of this push's reflog entries instead of the configured identity
    /// (`GIT_COMMITTER_*`, `user.*`): an HTTP front-end's `<user> <user@http.<address>>`.
    pub fn with_reflog_identity(mut self, name: BString, email: BString) -> Self {
        self.reflog_identity = Some((name, email));
        self
    }

    /// The settings in use.
    pub fn config(&self) -> &ReceivePackConfig {
        &self.config
    }

    /// Write the advertisement: each visible ref (the first with the capabilities after a
    /// NUL), then `<id> .have` for each value of an alternate's refs that no line before
    /// named, or `capabilities^{}` when there is nothing to list, then for a shallow
    /// repository a `shallow <id>` line per commit of `$GIT_DIR/shallow`, then a flush. Like
    /// git's receive-pack, it lists neither `HEAD` nor peeled tags.
    pub fn advertise<W: Write>(&self, out: &mut PacketWriter<W>) -> Result<(), ServeError> {
        let mut lines: Vec<(ObjectId, BString)> = Vec::new();
        let mut seen: gix_hashtable::HashSet<ObjectId> = Default::default();
        for (record, stripped) in self.visible_refs()? {
            match stripped {
                Some(name) => {
                    seen.insert(record.id);
                    lines.push((record.id, name));
                }
                // Refs outside the namespace, once per value, as `.have`: the client may
                // build on their objects but sees no names (git's `show_ref_cb`).
                None => {
                    if seen.insert(record.id) {
                        lines.push((record.id, ".have".into()));
                    }
                }
            }
        }
        let timeout = self.config.hook_timeout_seconds.map_or(
            packgate_hooks::ScriptHooks::DEFAULT_TIMEOUT,
            std::time::Duration::from_secs,
        );
        for id in crate::alternates::alternate_ref_values(self.repo, timeout) {
            if seen.insert(id) {
                lines.push((id, ".have".into()));
            }
        }
        if lines.is_empty() {
            lines.push((
                ObjectId::null(gix_hash::Kind::Sha1),
                "capabilities^{}".into(),
            ));
        }
        let capabilities = self.capabilities();
        for (n, (id, name)) in lines.iter().enumerate() {
            if n == 0 {
                out.write_text(format!("{id} {}\0{capabilities}", name.as_bstr()))?;
            } else {
                out.write_text(format!("{id} {}", name.as_bstr()))?;
            }
        }
        // A shallow repository says where its history ends, as git's receive-pack does.
        let mut shallow = self
            .repo
            .shallow_commits()
            .map_err(|err| ServeError::Failed(err.to_string()))?;
        shallow.sort_unstable();
        shallow.dedup();
        for id in shallow {
            out.write_text(format!("shallow {id}"))?;
        }
        out.flush_pkt()?;
        out.get_mut().flush()?;
        Ok(())
    }

    /// The capabilities of the advertisement, in git's order: [`CAPABILITIES`], then `atomic`
    /// (`receive.advertiseAtomic`, on by default), `ofs-delta` (`repack.useDeltaBaseOffset`,
    /// on by default), `push-cert=<nonce>` (with `receive.certNonceSeed`), `push-options`
    /// (`receive.advertisePushOptions`, off by default, as in git), `session-id=<id>`
    /// (`transfer.advertiseSID`, off by default), the object format and the agent.
    pub fn capabilities(&self) -> String {
        let config = &self.config;
        let mut capabilities = CAPABILITIES.to_owned();
        for (advertised, name) in [
            (config.advertise_atomic, " atomic"),
            (config.ofs_delta, " ofs-delta"),
        ] {
            if advertised {
                capabilities.push_str(name);
            }
        }
        if let Some(nonce) = &self.nonce {
            capabilities.push_str(" push-cert=");
            capabilities.push_str(nonce);
        }
        if config.advertise_push_options {
            capabilities.push_str(" push-options");
        }
        if config.advertise_sid {
            capabilities.push_str(" session-id=");
            capabilities.push_str(&self.session_id);
        }
        capabilities.push_str(" object-format=sha1 agent=");
        capabilities.push_str(&agent());
        capabilities
    }

    /// Run a whole push session. Returns the report of the push, or `None` if the session
    /// ended without one (advertisement only, or the client had nothing to push).
    ///
    /// Errors in what the client sends end the session with an error message (`ERR`, or
    /// band 3 with sideband) and [`ServeError::BadRequest`]. Refused refs are not errors:
    /// they are in the report.
    pub fn serve<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        options: &ReceivePackOptions,
    ) -> Result<Option<PushReport>, ServeError> {
        let mut out = PacketWriter::new(output);
        if options.advertise_only || !options.stateless {
            if options.version == ProtocolVersion::V1 {
                out.write_text("version 1")?;
            }
            self.advertise(&mut out)?;
            if options.advertise_only {
                return Ok(None);
            }
        }
        // PacketReader reads exactly one packet at a time, so the pack that follows the
        // commands is still in this buffer when the commands are read.
        let mut input = BufReader::with_capacity(64 * 1024, input);
        let mut reader = PacketReader::new(&mut input);
        let list = match read_commands(&mut reader) {
            Ok(Some(list)) => list,
            Ok(None) => {
                tracing::debug!("client sent no commands");
                return Ok(None);
            }
            Err(message) => {
                let mut messages = options.messages.open();
                let mut channel = Channel::new(out.into_inner(), false, &mut messages);
                return Err(fail(&mut channel, message));
            }
        };
        let mut list = list;
        // In a namespace the commands name refs without its prefix; the refs updated have it.
        if let Some(namespace) = self.repo.namespace() {
            for command in &mut list.commands {
                if let Ok(name) = &command.ref_name {
                    command.ref_name = gix_ref::FullName::try_from(namespace.full(name.as_bstr()))
                        .map_err(|_| crate::refname::FunnyRefName {
                            name: command.name.to_string(),
                        });
                }
            }
        }
        // As git: what was not advertised is not honoured.
        list.capabilities.atomic &= self.config.advertise_atomic;
        list.capabilities.push_options &= self.config.advertise_push_options;
        let capabilities = list.capabilities.clone();
        let mut messages = options.messages.open();
        let mut channel = Channel::new(out.into_inner(), capabilities.side_band_64k, &mut messages);
        let push_options = if capabilities.push_options {
            match read_push_options(&mut reader) {
                Ok(options) => Some(options),
                Err(message) => return Err(fail(&mut channel, message)),
            }
        } else {
            None
        };
        drop(reader);
        let certificate = match &list.certificate {
            Some(certificate) => match self.judge_certificate(certificate, options.stateless) {
                Ok(judged) => Some(judged),
                Err(message) => return Err(fail(&mut channel, message)),
            },
            None => None,
        };
        // git: the push options must be the ones the certificate signs.
        let refuse_all = list
            .certificate
            .as_ref()
            .filter(|certificate| {
                let signed: Vec<&[u8]> = certificate.header_values("push-option").collect();
                let sent: Vec<&[u8]> = push_options
                    .iter()
                    .flatten()
                    .map(|option| option.as_slice())
                    .collect();
                signed != sent
            })
            .map(|_| "inconsistent push options");
        tracing::debug!(
            commands = list.commands.len(),
            agent = ?capabilities.agent,
            atomic = capabilities.atomic,
            "push"
        );
        let mut push = update::Push {
            receive_pack: self,
            list: &list,
            push_options: push_options.as_deref(),
            options,
            certificate: certificate.as_ref(),
            refuse_all,
        };
        let (report, accepted) = push.execute(&mut input, &mut channel);
        if capabilities.report_status || capabilities.report_status_v2 {
            channel.report(&report, capabilities.report_status_v2)?;
        }
        push.post_hooks(&accepted, &mut channel);
        channel.finish()?;
        Ok(Some(report))
    }

    /// Store a push certificate as a blob, judge its nonce and, if a hook will hear of it,
    /// verify its signature as git does (`gpg.*`): what the hooks learn of it. Unverified,
    /// the status is `N`. A signature of no kind git knows ends the push, as in git.
    fn judge_certificate(
        &self,
        certificate: &push_cert::PushCertificate,
        stateless: bool,
    ) -> Result<packgate_hooks::PushCertificate, String> {
        use gix_object::Write as _;
        let blob = self
            .repo
            .objects()
            .write_buf(gix_object::Kind::Blob, &certificate.text)
            .map_err(|err| format!("could not store the push certificate: {err}"))?;
        let path = self.repo.git_dir().to_string_lossy();
        let verdict = push_cert::NonceCheck {
            issued: self.nonce.as_deref(),
            seed: self
                .config
                .cert_nonce_seed
                .as_ref()
                .map_or(&b""[..], |seed| seed.as_slice()),
            path: &path,
            stateless,
            slop_limit: self.config.cert_nonce_slop,
        }
        .judge(certificate);
        let solicited = verdict.nonce.is_some();
        let mut judged = packgate_hooks::PushCertificate {
            blob,
            signer: String::new(),
            key: String::new(),
            status: 'N',
            nonce: verdict.nonce,
            nonce_status: solicited.then(|| verdict.status.as_str().to_owned()),
            nonce_slop: verdict.slop,
        };
        // git checks the signature when it prepares the first receive hook to run; with
        // none, nobody would hear of it.
        if !self.receive_hooks_would_run() {
            return Ok(judged);
        }
        let check = self
            .config
            .signature_verifier
            .verify(
                certificate.payload(),
                certificate.signature(),
                self.repo.git_dir(),
            )
            .map_err(|err| err.to_string())?;
        if let Some(error) = &check.error {
            tracing::warn!(%error, "the push certificate's signature was not verified");
        }
        tracing::debug!(status = %check.result, signer = ?check.signer, key = ?check.key, "push certificate checked");
        judged.status = check.result;
        judged.signer = check.signer.unwrap_or_default();
        judged.key = check.key.unwrap_or_default();
        Ok(judged)
    }

    /// Whether a receive hook (`pre-receive`, `post-receive`) would run: an in-process hook,
    /// or a script.
    fn receive_hooks_would_run(&self) -> bool {
        if !self.hooks.is_empty() {
            return true;
        }
        if !self.run_scripts {
            return false;
        }
        let scripts = packgate_hooks::ScriptHooks::new(self.config.hooks_dir.clone());
        ["pre-receive", "post-receive"]
            .into_iter()
            .any(|hook| scripts.would_run(self.repo.git_dir(), hook))
    }

    /// The refs a client may see, each with the name the client knows it by (`None`
    /// outside the namespace served): all below `refs/` that are not hidden, by full name.
    fn visible_refs(&self) -> Result<Vec<(RefRecord, Option<BString>)>, ServeError> {
        let refs = self
            .repo
            .all_refs(None)
            .map_err(|err| ServeError::Failed(format!("could not list refs: {err}")))?;
        let namespace = self.repo.namespace();
        Ok(refs
            .into_iter()
            .filter_map(|record| {
                let stripped = match namespace {
                    Some(namespace) => namespace.strip(&record.name).map(BString::from),
                    None => Some(record.name.clone()),
                };
                (!self
                    .config
                    .is_hidden_as(stripped.as_deref().map(|s| s.as_slice()), &record.name))
                .then_some((record, stripped))
            })
            .collect())
    }

    /// The chain of hooks for this push: in-process hooks, then the repository's scripts.
    fn hook_chain(&self) -> packgate_hooks::Hooks {
        let mut chain = packgate_hooks::Hooks::new();
        for hook in &self.hooks {
            chain.push(Arc::clone(hook));
        }
        for pattern in &self.config.secret_patterns {
            chain.push(packgate_hooks::SecretScanner::new(pattern.to_vec()));
        }
        if self.run_scripts {
            let mut scripts = packgate_hooks::ScriptHooks::new(self.config.hooks_dir.clone());
            if let Some(seconds) = self.config.hook_timeout_seconds {
                scripts = scripts.with_timeout(std::time::Duration::from_secs(seconds));
            }
            chain.push(scripts);
        }
        chain
    }
}

/// Read the command list: `Ok(None)` if the client ends the session (EOF or flush) without
/// commands, as git clients do when they have nothing to push.
fn read_commands<R: Read>(reader: &mut PacketReader<R>) -> Result<Option<CommandList>, String> {
    let mut list = CommandList::default();
    loop {
        let packet = match reader.read_packet() {
            Ok(packet) => packet,
            Err(err) => return Err(describe_read_error(err)),
        };
        match packet {
            None if list.commands.is_empty() => return Ok(None),
            None => return Err("protocol error: the command list ended without a flush".into()),
            Some(Packet::Flush) if list.commands.is_empty() => return Ok(None),
            Some(Packet::Flush) => return Ok(Some(list)),
            Some(Packet::Data(line)) if is_push_cert_start(line) => {
                if !list.commands.is_empty() || list.certificate.is_some() {
                    return Err(CommandError::PushCertAndCommands.to_string());
                }
                if let Some(nul) = line.find_byte(0) {
                    let capabilities = line[nul + 1..]
                        .strip_suffix(b"\n")
                        .unwrap_or(&line[nul + 1..]);
                    list.capabilities = commands::parse_capabilities(capabilities.as_bstr())
                        .map_err(|err| err.to_string())?;
                }
                let (certificate, flushed) = read_push_certificate(reader)?;
                let Some(command_lines) = certificate.command_lines() else {
                    let excerpt =
                        certificate.text[..certificate.text.len().min(100)].to_str_lossy();
                    return Err(CommandError::MalformedPushCert {
                        excerpt: excerpt.into_owned(),
                    }
                    .to_string());
                };
                for line in command_lines {
                    commands::parse_command(line, &mut list, false)
                        .map_err(|err| err.to_string())?;
                }
                list.certificate = Some(certificate);
                if flushed {
                    return Ok(Some(list));
                }
            }
            Some(Packet::Data(line)) => {
                if list.certificate.is_some() {
                    return Err(CommandError::PushCertAndCommands.to_string());
                }
                let first = list.commands.is_empty();
                commands::parse_command(line, &mut list, first).map_err(|err| err.to_string())?;
            }
            Some(other) => {
                return Err(format!(
                    "protocol error: unexpected {} in the command list",
                    other.kind_name()
                ))
            }
        }
    }
}

/// Whether `line` opens a push certificate: `push-cert`, with capabilities after a NUL.
fn is_push_cert_start(line: &[u8]) -> bool {
    let word = line.split(|byte| *byte == 0 || *byte == b'\n').next();
    word == Some(&b"push-cert"[..])
}

/// The most bytes of one push certificate: its commands and a signature.
const MAX_PUSH_CERT_BYTES: usize = 64 << 20;

/// Read a push certificate's lines up to `push-cert-end`, as sent (with their LFs). Returns
/// the certificate and whether a flush ended it instead (which also ends the commands).
fn read_push_certificate<R: Read>(
    reader: &mut PacketReader<R>,
) -> Result<(push_cert::PushCertificate, bool), String> {
    let mut text = BString::default();
    loop {
        match reader.read_packet().map_err(describe_read_error)? {
            Some(Packet::Flush) => return Ok((push_cert::PushCertificate::new(text), true)),
            Some(Packet::Data(b"push-cert-end\n")) => {
                return Ok((push_cert::PushCertificate::new(text), false))
            }
            Some(Packet::Data(line)) => {
                if text.len() + line.len() > MAX_PUSH_CERT_BYTES {
                    return Err(format!(
                        "protocol error: push certificate larger than {MAX_PUSH_CERT_BYTES} bytes"
                    ));
                }
                text.extend_from_slice(line);
            }
            None | Some(_) => return Err("protocol error: got an unexpected packet".into()),
        }
    }
}

fn read_push_options<R: Read>(reader: &mut PacketReader<R>) -> Result<Vec<BString>, String> {
    let mut options = Vec::new();
    loop {
        match reader.read_packet().map_err(describe_read_error)? {
            None => return Err("protocol error: the push options ended without a flush".into()),
            Some(Packet::Flush) => return Ok(options),
            Some(Packet::Data(line)) => {
                commands::parse_push_option(line, &mut options).map_err(|err| err.to_string())?
            }
            Some(other) => {
                return Err(format!(
                    "protocol error: unexpected {} in the push options",
                    other.kind_name()
                ))
            }
        }
    }
}

fn describe_read_error(err: ReadError) -> String {
    match err {
        ReadError::Io(err) => format!("could not read from the client: {err}"),
        other => format!("protocol error: {other}"),
    }
}

/// Tell the client its request is bad, then hand back the error that ends the session.
fn fail<W: Write>(channel: &mut Channel<'_, W>, message: String) -> ServeError {
    tracing::debug!(%message, "rejecting push");
    let _ = channel.fatal(&message);
    ServeError::BadRequest(message)
}

#[cfg(test)]
mod tests;
