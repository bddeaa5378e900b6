//! The client's half of a push before the pack: update commands with the capabilities on the
//! first one, and push options. Sans-IO: [`CommandParser`] is fed one packet at a time.

use std::collections::{HashMap, HashSet};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;

use crate::refname::{pushable_ref_name, FunnyRefName};

/// The most update commands one push may carry.
pub const MAX_COMMANDS: usize = 100_000;
/// The most `shallow` lines one push may carry (a shallow clone sends its whole boundary).
pub const MAX_SHALLOW: usize = 100_000;
/// The most push options one push may carry.
pub const MAX_PUSH_OPTIONS: usize = 1_000;

/// One `<old> <new> <ref>` line: move `name` from `old` to `new`. A null `old` creates the
/// ref, a null `new` deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The value the client believes the ref has (null: it does not exist).
    pub old: ObjectId,
    /// The value the client wants (null: delete the ref).
    pub new: ObjectId,
    /// The full ref name as sent, for the report.
    pub name: BString,
    /// `name` as a ref this push may update, validated when the command was read; an error
    /// if git would refuse it as a funny refname (nothing reads the file system by it).
    pub ref_name: Result<gix_ref::FullName, FunnyRefName>,
}

impl Command {
    /// Whether this command deletes its ref.
    pub fn is_delete(&self) -> bool {
        self.new.is_null()
    }

    /// Whether this command creates its ref.
    pub fn is_create(&self) -> bool {
        self.old.is_null()
    }
}

/// What the client asked for on its first command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCapabilities {
    /// `report-status`: the client wants the result of each command.
    pub report_status: bool,
    /// `report-status-v2`: the same, with room for option lines.
    pub report_status_v2: bool,
    /// `side-band-64k`: the report and messages come multiplexed.
    pub side_band_64k: bool,
    /// `quiet`: no progress messages.
    pub quiet: bool,
    /// `atomic`: all commands succeed or none does.
    pub atomic: bool,
    /// `push-options`: option lines follow the commands.
    pub push_options: bool,
    /// `agent=…`, for logs.
    pub agent: Option<BString>,
}

/// An error in the commands a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A command line is not `<old> <new> <ref>`.
    #[error("protocol error: expected old/new/ref, got '{line}'")]
    Malformed {
        /// The line, lossily shown.
        line: String,
    },
    /// A `shallow` line does not name an object id (git's wording).
    #[error("protocol error: expected shallow sha, got '{got}'")]
    Shallow {
        /// What followed `shallow `, lossily shown.
        got: String,
    },
    /// A `shallow` line after the first command: git's clients send them first.
    #[error("protocol error: shallow line after the commands: '{line}'")]
    ShallowAfterCommands {
        /// The line, lossily shown.
        line: String,
    },
    /// A push certificate and commands outside it in one push (git's wording).
    #[error("protocol error: got both push certificate and unsigned commands")]
    PushCertAndCommands,
    /// A push certificate without the empty line before its commands (git's wording).
    #[error("malformed push certificate {excerpt}")]
    MalformedPushCert {
        /// Its first 100 bytes.
        excerpt: String,
    },
    /// The client asked for an object format other than sha1.
    #[error("protocol error: mismatched object format: server sha1, client {format}")]
    ObjectFormat {
        /// What the client asked for.
        format: String,
    },
    /// The client sent a capability that needs something else (`atomic` without a report).
    #[error("protocol error: {0}")]
    Capability(String),
    /// Too many commands or push options.
    #[error("protocol error: more than {limit} {what}")]
    TooMany {
        /// What there were too many of.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A push option is not a single line of text.
    #[error("protocol error: bad push option '{option}'")]
    BadPushOption {
        /// The option, lossily shown.
        option: String,
    },
}

/// The commands of a push, and the capabilities from the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandList {
    /// The `shallow <id>` lines a shallow clone sends before its commands (the commits its
    /// own `.git/shallow` lists), in the order sent, without repeats.
    pub shallow: Vec<ObjectId>,
    /// The commands, in the order sent.
    pub commands: Vec<Command>,
    /// The capabilities sent with the first command (or with `push-cert`).
    pub capabilities: ClientCapabilities,
    /// The certificate of a signed push, whose commands are in [`CommandList::commands`].
    pub certificate: Option<super::push_cert::PushCertificate>,
}

impl CommandList {
    /// Whether a pack follows: only when some command sets a ref to an object.
    pub fn expects_pack(&self) -> bool {
        self.commands.iter().any(|command| !command.is_delete())
    }

    /// For each ref name, the index of the first command that names it (one hash-map pass,
    /// whatever the number of commands).
    pub fn first_by_name(&self) -> HashMap<&BStr, usize> {
        let mut first = HashMap::with_capacity(self.commands.len());
        for (index, command) in self.commands.iter().enumerate() {
            first.entry(command.name.as_bstr()).or_insert(index);
        }
        first
    }

    /// The ref names that more than one command names (git accepts them; each command is
    /// carried out in turn). One hash-set pass.
    pub fn repeated_names(&self) -> HashSet<&BStr> {
        let mut seen = HashSet::with_capacity(self.commands.len());
        let mut repeated = HashSet::new();
        for command in &self.commands {
            if !seen.insert(command.name.as_bstr()) {
                repeated.insert(command.name.as_bstr());
            }
        }
        repeated
    }
}

/// Parse one command line (the payload of a pkt-line, with or without its newline).
/// The first line of a push also carries `\0<capabilities>`; pass `first` for it.
pub fn parse_command(line: &[u8], list: &mut CommandList, first: bool) -> Result<(), CommandError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (line, capabilities) = match line.find_byte(0) {
        Some(nul) if first => (&line[..nul], Some(&line[nul + 1..])),
        Some(_) => {
            return Err(CommandError::Malformed {
                line: line.as_bstr().to_string(),
            })
        }
        None => (line, None),
    };
    if let Some(hex) = line.strip_prefix(b"shallow ") {
        if !list.commands.is_empty() {
            return Err(CommandError::ShallowAfterCommands {
                line: line.as_bstr().to_string(),
            });
        }
        let id = parse_oid(hex).ok_or_else(|| CommandError::Shallow {
            got: hex.as_bstr().to_string(),
        })?;
        // A client sends its whole shallow file: bounded by the commits it has, but a
        // hostile one could send any number of lines.
        if list.shallow.len() >= MAX_SHALLOW {
            return Err(CommandError::TooMany {
                what: "shallow lines",
                limit: MAX_SHALLOW,
            });
        }
        if !list.shallow.contains(&id) {
            list.shallow.push(id);
        }
        return Ok(());
    }
    let malformed = || CommandError::Malformed {
        line: line.as_bstr().to_string(),
    };
    let mut parts = line.splitn_str(3, " ");
    let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let old = parse_oid(old).ok_or_else(malformed)?;
    let new = parse_oid(new).ok_or_else(malformed)?;
    if name.is_empty() {
        return Err(malformed());
    }
    if list.commands.len() >= MAX_COMMANDS {
        return Err(CommandError::TooMany {
            what: "commands",
            limit: MAX_COMMANDS,
        });
    }
    // The same ref may be named twice, as with git: the commands run in turn.
    if let Some(capabilities) = capabilities {
        list.capabilities = parse_capabilities(capabilities.as_bstr())?;
    }
    list.commands.push(Command {
        old,
        new,
        name: name.into(),
        ref_name: pushable_ref_name(name.as_bstr(), new.is_null()),
    });
    Ok(())
}

/// Parse the space-separated capability list of the first command. Unknown capabilities are
/// ignored, as git does.
pub fn parse_capabilities(text: &BStr) -> Result<ClientCapabilities, CommandError> {
    let mut out = ClientCapabilities::default();
    for word in text.split_str(" ").filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once_str("=") {
            Some((key, value)) => (key, Some(value)),
            None => (word, None),
        };
        match (key, value) {
            (b"report-status", None) => out.report_status = true,
            (b"report-status-v2", None) => out.report_status_v2 = true,
            (b"side-band-64k", None) => out.side_band_64k = true,
            (b"quiet", None) => out.quiet = true,
            (b"atomic", None) => out.atomic = true,
            (b"push-options", None) => out.push_options = true,
            (b"agent", Some(agent)) => out.agent = Some(agent.into()),
            (b"object-format", Some(b"sha1")) => {}
            (b"object-format", Some(other)) => {
                return Err(CommandError::ObjectFormat {
                    format: other.as_bstr().to_string(),
                })
            }
            _ => tracing::debug!(capability = %word.as_bstr(), "ignoring unknown capability"),
        }
    }
    Ok(out)
}

/// Validate one push option line and add it to `options`.
pub fn parse_push_option(line: &[u8], options: &mut Vec<BString>) -> Result<(), CommandError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.contains(&b'\n') || line.contains(&0) {
        return Err(CommandError::BadPushOption {
            option: line.as_bstr().to_string(),
        });
    }
    if options.len() >= MAX_PUSH_OPTIONS {
        return Err(CommandError::TooMany {
            what: "push options",
            limit: MAX_PUSH_OPTIONS,
        });
    }
    options.push(line.into());
    Ok(())
}

fn parse_oid(hex: &[u8]) -> Option<ObjectId> {
    if hex.len() != 40 {
        return None;
    }
    ObjectId::from_hex(hex).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn check(lines: &[&[u8]], expected: Result<(usize, ClientCapabilities), CommandError>) {
        let mut list = CommandList::default();
        let mut result = Ok(());
        for (index, line) in lines.iter().enumerate() {
            result = parse_command(line, &mut list, index == 0);
            if result.is_err() {
                break;
            }
        }
        let actual = result.map(|()| (list.commands.len(), list.capabilities));
        assert_eq!(actual, expected, "lines: {lines:?}");
    }

    #[test]
    fn commands() {
        let first = format!(
            "{Z} {A} refs/heads/main\0report-status side-band-64k agent=git/2.47 quiet unknown\n"
        );
        check(
            &[first.as_bytes()],
            Ok((
                1,
                ClientCapabilities {
                    report_status: true,
                    side_band_64k: true,
                    quiet: true,
                    agent: Some("git/2.47".into()),
                    ..Default::default()
                },
            )),
        );
        let second = format!("{A} {Z} refs/heads/old\n");
        check(
            &[
                format!("{Z} {A} refs/heads/main").as_bytes(),
                second.as_bytes(),
            ],
            Ok((2, ClientCapabilities::default())),
        );
        check(
            &[format!("{Z} {A} refs/heads/x\0atomic push-options report-status-v2").as_bytes()],
            Ok((
                1,
                ClientCapabilities {
                    atomic: true,
                    push_options: true,
                    report_status_v2: true,
                    ..Default::default()
                },
            )),
        );
    }

    #[test]
    fn bad_commands() {
        let malformed = |line: &str| CommandError::Malformed { line: line.into() };
        check(&[b"hello"], Err(malformed("hello")));
        check(
            &[format!("{Z} {A}").as_bytes()],
            Err(malformed(&format!("{Z} {A}"))),
        );
        check(
            &[format!("{Z} {A} ").as_bytes()],
            Err(malformed(&format!("{Z} {A} "))),
        );
        check(
            &[format!("{Z} xyz refs/heads/a").as_bytes()],
            Err(malformed(&format!("{Z} xyz refs/heads/a"))),
        );
        check(
            &[b"shallow 1234"],
            Err(CommandError::Shallow { got: "1234".into() }),
        );
        check(
            &[
                format!("{Z} {A} refs/heads/a").as_bytes(),
                format!("shallow {A}").as_bytes(),
            ],
            Err(CommandError::ShallowAfterCommands {
                line: format!("shallow {A}"),
            }),
        );
        check(
            &[
                format!("{Z} {A} refs/heads/a").as_bytes(),
                format!("{Z} {A} refs/heads/b\0atomic").as_bytes(),
            ],
            Err(malformed(&format!("{Z} {A} refs/heads/b\0atomic"))),
        );
        check(
            &[format!("{Z} {A} refs/heads/a\0object-format=sha256").as_bytes()],
            Err(CommandError::ObjectFormat {
                format: "sha256".into(),
            }),
        );
    }

    /// A shallow clone's boundary comes first; the first command still carries the
    /// capabilities; a repeated line counts once.
    #[test]
    fn shallow_lines_before_the_commands() {
        const B: &str = "2222222222222222222222222222222222222222";
        let mut list = CommandList::default();
        let lines = [
            format!("shallow {A}\n"),
            format!("shallow {B}"),
            format!("shallow {A}"),
        ];
        for line in &lines {
            let first = list.commands.is_empty();
            parse_command(line.as_bytes(), &mut list, first).unwrap();
        }
        let first = format!("{Z} {B} refs/heads/main\0report-status");
        parse_command(first.as_bytes(), &mut list, true).unwrap();
        let ids: Vec<String> = list.shallow.iter().map(ToString::to_string).collect();
        assert_eq!(ids, [A, B]);
        assert_eq!(list.commands.len(), 1);
        assert!(list.capabilities.report_status);
    }

    #[test]
    fn names_are_validated_when_read() {
        let mut list = CommandList::default();
        for (index, line) in [
            format!("{Z} {A} refs/heads/a"),
            format!("{Z} {A} refs/heads/../../x"),
            format!("{Z} {A} refs/x"),
            format!("{A} {Z} refs/x"),
            format!("{Z} {A} HEAD"),
        ]
        .iter()
        .enumerate()
        {
            parse_command(line.as_bytes(), &mut list, index == 0).unwrap();
        }
        let valid: Vec<bool> = list.commands.iter().map(|c| c.ref_name.is_ok()).collect();
        assert_eq!(valid, [true, false, false, true, false]);
    }

    /// The same ref twice is not an error (git carries out both), and a mirror push of the
    /// most commands a push may carry is read and searched for repeated names in linear
    /// time: comparing every pair would be 5·10⁹ comparisons.
    #[test]
    fn repeated_names_in_a_push_of_the_most_commands() {
        let mut list = CommandList::default();
        for n in 0..MAX_COMMANDS - 2 {
            let line = format!("{Z} {A} refs/heads/branch-{n}");
            parse_command(line.as_bytes(), &mut list, n == 0).unwrap();
        }
        for name in ["refs/heads/branch-7", "refs/heads/branch-99997"] {
            parse_command(format!("{A} {Z} {name}").as_bytes(), &mut list, false).unwrap();
        }
        assert_eq!(list.commands.len(), MAX_COMMANDS);
        let mut repeated: Vec<&BStr> = list.repeated_names().into_iter().collect();
        repeated.sort();
        assert_eq!(repeated, ["refs/heads/branch-7", "refs/heads/branch-99997"]);
        let first = list.first_by_name();
        assert_eq!(first.len(), MAX_COMMANDS - 2);
        assert_eq!(first.get(b"refs/heads/branch-7".as_bstr()), Some(&7));
        assert!(parse_command(
            format!("{Z} {A} refs/heads/one-more").as_bytes(),
            &mut list,
            false
        )
        .is_err());
    }

    #[test]
    fn push_options() {
        let mut options = Vec::new();
        parse_push_option(b"foo\n", &mut options).unwrap();
        parse_push_option(b"bar=baz", &mut options).unwrap();
        assert_eq!(
            options,
            vec![BString::from("foo"), BString::from("bar=baz")]
        );
        assert!(parse_push_option(b"a\nb", &mut options).is_err());
    }
}
