use proptest::prelude::*;

use super::*;

/// A request as the tests write it: command, capabilities, arguments.
fn request(command: &str, capabilities: &[&str], arguments: &[&str]) -> Request {
    Request {
        command: command.to_owned(),
        capabilities: capabilities
            .iter()
            .map(|line| BString::from(*line))
            .collect(),
        arguments: arguments.iter().map(|line| BString::from(*line)).collect(),
    }
}

/// Reads every request from `input` until the session ends or an error, which is rendered
/// as its message.
fn read_all(input: &[u8], limits: &Limits) -> (Vec<Request>, Result<(), String>) {
    let mut reader = PacketReader::new(input);
    let mut requests = Vec::new();
    loop {
        match read_request(&mut reader, limits) {
            Ok(Some(request)) => requests.push(request),
            Ok(None) => return (requests, Ok(())),
            Err(error) => return (requests, Err(error.to_string())),
        }
    }
}

#[test]
fn read_request_table() {
    #[track_caller]
    fn check(input: &[u8], expected_requests: &[Request], expected_end: Result<(), &str>) {
        let (requests, end) = read_all(input, &Limits::default());
        assert_eq!(requests, expected_requests, "input {:?}", input.as_bstr());
        assert_eq!(
            end.as_ref().map_err(String::as_str).copied(),
            expected_end,
            "input {:?}",
            input.as_bstr()
        );
    }

    // The client ends the session.
    check(b"", &[], Ok(()));
    check(b"0000", &[], Ok(()));

    // Complete requests.
    check(
        b"0014command=ls-refs\n00010000",
        &[request("ls-refs", &[], &[])],
        Ok(()),
    );
    check(
        b"0014command=ls-refs\n0015agent=git/2.47.0\n00010009peel\n0014ref-prefix HEAD\n0000",
        &[request(
            "ls-refs",
            &["agent=git/2.47.0"],
            &["peel", "ref-prefix HEAD"],
        )],
        Ok(()),
    );
    check(
        b"0013command=ls-refs0000",
        &[request("ls-refs", &[], &[])],
        Ok(()),
    );
    check(
        b"0014command=ls-refs\n0015agent=git/2.47.0\n0000",
        &[request("ls-refs", &["agent=git/2.47.0"], &[])],
        Ok(()),
    );
    check(
        b"0012command=fetch\n0001000adone\n\n00040000",
        &[request("fetch", &[], &["done\n", ""])],
        Ok(()),
    );
    check(
        b"0014command=ls-refs\n000100000012command=fetch\n000100000000",
        &[request("ls-refs", &[], &[]), request("fetch", &[], &[])],
        Ok(()),
    );
    check(
        b"0014command=ls-refs\n000100000012command=fetch\n00010000",
        &[request("ls-refs", &[], &[]), request("fetch", &[], &[])],
        Ok(()),
    );
    check(
        b"0017command=object-info00010000",
        &[request("object-info", &[], &[])],
        Ok(()),
    );
    check(
        b"0012command=A_b-9\n00010000",
        &[request("A_b-9", &[], &[])],
        Ok(()),
    );

    // Capabilities before the command, as git 2.47 sends a bundle-uri request.
    check(
        b"0013agent=git/2.47\n0017object-format=sha1\n0017command=bundle-uri\n00010000",
        &[request(
            "bundle-uri",
            &["agent=git/2.47", "object-format=sha1"],
            &[],
        )],
        Ok(()),
    );
    check(
        b"0013agent=git/2.47\n0000",
        &[],
        Err("no command requested"),
    );
    check(
        b"0013agent=git/2.47\n0014command=ls-refs\n0012command=fetch\n",
        &[],
        Err(r#"command "fetch" requested after already requesting command ls-refs"#),
    );

    // Malformed requests.
    // Capabilities may come before the command, as in git's serve.c; without one, the
    // request is refused once its capabilities end.
    check(
        b"0015agent=git/2.47.0\n0014command=ls-refs\n00010000",
        &[request("ls-refs", &["agent=git/2.47.0"], &[])],
        Ok(()),
    );
    check(
        b"000eversion 2\n",
        &[],
        Err("unexpected end of stream in a request"),
    );
    check(b"000afoobar0000", &[], Err("no command requested"));
    check(b"0004", &[], Err("unexpected end of stream in a request"));
    check(b"0001", &[], Err("no command requested"));
    check(b"000afoobar00010000", &[], Err("no command requested"));
    check(b"000dcommand=\n", &[], Err("empty command name"));
    check(
        b"0013command=ls refs",
        &[],
        Err(r#"invalid command name "ls refs""#),
    );
    check(
        b"000fcommand=l\xc3\xa9",
        &[],
        Err(r#"invalid command name "lé""#),
    );
    check(
        b"000ecommand=\xff\n",
        &[],
        Err(r#"invalid command name "\xff""#),
    );
    check(
        b"0014command=ls-refs\n0012command=fetch\n",
        &[],
        Err(r#"command "fetch" requested after already requesting command ls-refs"#),
    );
    check(
        b"0014command=ls-refs\n000100010000",
        &[],
        Err("expected flush after ls-refs arguments"),
    );
    check(
        b"0002",
        &[],
        Err("unexpected response-end-pkt in a request"),
    );
    check(
        b"0014command=ls-refs\n0002",
        &[],
        Err("unexpected response-end-pkt in a request"),
    );
    check(
        b"0014command=ls-refs\n00010002",
        &[],
        Err("unexpected response-end-pkt in a request"),
    );
    check(
        b"0014command=ls-refs\n",
        &[],
        Err("unexpected end of stream in a ls-refs request"),
    );
    check(
        b"0014command=ls-refs\n00010009peel\n",
        &[],
        Err("unexpected end of stream in a ls-refs request"),
    );
    check(
        b"0014command=ls-refs\n00010009pe",
        &[],
        Err("unexpected end of stream inside a pkt-line: got 6 of 9 bytes"),
    );
    check(
        b"0014command=ls-refs\n0001000",
        &[],
        Err("unexpected end of stream inside a pkt-line: got 3 of 4 bytes"),
    );
    check(
        b"0014command=ls-refs\n0003",
        &[],
        Err("invalid pkt-line length 0003: reserved"),
    );
    check(
        b"0014command=ls-refs\n00010000PACK",
        &[request("ls-refs", &[], &[])],
        Err(r#"invalid pkt-line length "PACK": expected four hexadecimal digits"#),
    );
    check(
        b"0014command=ls-refs\n0001fff1",
        &[],
        Err("pkt-line length 65521 exceeds the maximum of 65520"),
    );
}

#[test]
fn long_lines_are_cut_short_in_messages() {
    let line = format!("command=.{}", "x".repeat(1000));
    let mut input = Vec::new();
    pkt_line::encode_text(&line, &mut input).unwrap();
    let (_, end) = read_all(&input, &Limits::default());
    assert_eq!(
        end,
        Err(format!("invalid command name \".{}\"...", "x".repeat(79)))
    );
}

#[test]
fn limits() {
    #[track_caller]
    fn check(limits: Limits, input: &[u8], expected: Result<(), &str>) {
        let (_, end) = read_all(input, &limits);
        assert_eq!(
            end.as_ref().map_err(String::as_str).copied(),
            expected,
            "input {:?}, {limits:?}",
            input.as_bstr()
        );
    }
    // Three lines of 16, 5 and 5 bytes: 26 bytes.
    let input = b"0014command=ls-refs\n00010009cap1\n0009arg1\n0000";

    check(
        Limits {
            max_lines: 3,
            max_bytes: 26,
        },
        input,
        Ok(()),
    );
    check(
        Limits {
            max_lines: 2,
            max_bytes: 26,
        },
        input,
        Err("request exceeds the limit of 2 lines"),
    );
    check(
        Limits {
            max_lines: 3,
            max_bytes: 25,
        },
        input,
        Err("request exceeds the limit of 25 bytes"),
    );
    check(
        Limits {
            max_lines: 0,
            max_bytes: 0,
        },
        b"0000",
        Ok(()),
    );
    check(
        Limits {
            max_lines: 0,
            max_bytes: 1000,
        },
        input,
        Err("request exceeds the limit of 0 lines"),
    );

    // Limits hold per request, not per session.
    let mut session = input.to_vec();
    session.extend_from_slice(input);
    check(
        Limits {
            max_lines: 3,
            max_bytes: 26,
        },
        &session,
        Ok(()),
    );

    let defaults = Limits::default();
    assert_eq!(defaults.max_lines, 1_048_576);
    assert_eq!(defaults.max_bytes, 64 * 1024 * 1024);
}

#[test]
fn parser_starts_over_after_a_request_and_after_an_error() -> Result<(), RequestError> {
    let mut parser = RequestParser::new(Limits::default());
    assert!(!parser.is_in_request());
    assert_eq!(
        parser.push(Packet::Data(b"command=fetch\n"))?,
        Parsed::NeedMorePackets
    );
    assert!(parser.is_in_request());
    assert_eq!(
        parser.push(Packet::Flush)?,
        Parsed::Complete(request("fetch", &[], &[]))
    );
    assert!(!parser.is_in_request());
    parser.end_of_input()?;

    assert_eq!(
        parser.push(Packet::Data(b"command=fetch\n"))?,
        Parsed::NeedMorePackets
    );
    assert!(matches!(
        parser.push(Packet::ResponseEnd),
        Err(RequestError::ResponseEnd)
    ));
    assert!(!parser.is_in_request());
    assert_eq!(parser.push(Packet::Flush)?, Parsed::SessionEnd);

    assert_eq!(
        parser.push(Packet::Data(b"command=fetch\n"))?,
        Parsed::NeedMorePackets
    );
    assert!(matches!(
        parser.end_of_input(),
        Err(RequestError::UnexpectedEof { command }) if command.as_deref() == Some("fetch")
    ));
    assert!(!parser.is_in_request());
    Ok(())
}

#[test]
fn encode_writes_what_git_clients_send() -> Result<(), EncodeError> {
    let mut out = Vec::new();
    request("ls-refs", &["agent=git/2.47.0"], &[]).encode(&mut out)?;
    assert_eq!(
        out.as_bstr(),
        b"0014command=ls-refs\n0015agent=git/2.47.0\n00010000".as_bstr()
    );

    let mut out = Vec::new();
    let too_long = "x".repeat(pkt_line::MAX_DATA_LENGTH);
    assert_eq!(
        request("fetch", &[], &[&too_long]).encode(&mut out),
        Err(EncodeError::DataTooLong { length: 65517 })
    );
    Ok(())
}

fn arbitrary_request() -> impl Strategy<Value = Request> {
    let line = "[ -~]{0,40}";
    (
        "[a-zA-Z0-9_-]{1,20}",
        proptest::collection::vec(line, 0..8),
        proptest::collection::vec(line, 0..8),
    )
        .prop_filter(
            "capabilities cannot start with command=",
            |(_, capabilities, _)| {
                capabilities
                    .iter()
                    .all(|line| !line.starts_with("command="))
            },
        )
        .prop_map(|(command, capabilities, arguments)| Request {
            command,
            capabilities: capabilities.into_iter().map(BString::from).collect(),
            arguments: arguments.into_iter().map(BString::from).collect(),
        })
}

proptest! {
    #[test]
    fn encoded_requests_parse_back(requests in proptest::collection::vec(arbitrary_request(), 0..4)) {
        let mut input = Vec::new();
        for request in &requests {
            request.encode(&mut input).unwrap();
        }
        pkt_line::encode_flush(&mut input);
        input.extend_from_slice(b"ignored after the session ends");
        let (parsed, end) = read_all(&input, &Limits::default());
        prop_assert_eq!(parsed, requests);
        prop_assert_eq!(end, Ok(()));
    }

    #[test]
    fn requests_without_delimiter_parse_back(request in arbitrary_request()) {
        let request = Request { arguments: Vec::new(), ..request };
        let mut input = Vec::new();
        request.encode(&mut input).unwrap();
        // Drop the delim-pkt before the flush-pkt.
        input.truncate(input.len() - 8);
        pkt_line::encode_flush(&mut input);
        let (parsed, end) = read_all(&input, &Limits::default());
        prop_assert_eq!(parsed, vec![request]);
        prop_assert_eq!(end, Ok(()));
    }

    #[test]
    fn truncated_requests_are_errors_once_begun(request in arbitrary_request(), cut in any::<prop::sample::Index>()) {
        let mut input = Vec::new();
        request.encode(&mut input).unwrap();
        let cut = 1 + cut.index(input.len() - 1);
        let (parsed, end) = read_all(&input[..cut], &Limits::default());
        prop_assert!(parsed.is_empty());
        // Cut inside the first packet, nothing of a request began: the client left, as git's
        // serve loop sees it. Anywhere later the request is cut short.
        let first = usize::from_str_radix(std::str::from_utf8(&input[..4]).unwrap(), 16).unwrap();
        prop_assert_eq!(end.is_ok(), cut < first);
    }
}
