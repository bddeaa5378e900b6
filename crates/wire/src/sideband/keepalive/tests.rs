use super::*;

#[track_caller]
fn check(pieces: &[&[u8]], expected: State) {
    let mut framing = Framing::default();
    for piece in pieces {
        framing.advance(piece);
    }
    assert_eq!(framing.0, expected, "pieces: {pieces:?}");
}

#[test]
fn framing() {
    let boundary = State::default();
    check(&[], boundary);
    check(&[b"0009\x01PACK"], boundary);
    check(&[b"00", b"09", b"\x01PA", b"CK"], boundary);
    check(&[b"0000", b"0001", b"0002", b"0004"], boundary);
    check(&[b"0009\x01PA"], State::Payload { remaining: 2 });
    check(&[b"000"], State::Prefix { read: 3, value: 0 });
    check(
        &[b"fff0"],
        State::Payload {
            remaining: 0xfff0 - 4,
        },
    );
    check(&[b"0009\x01PACK00", b"0a"], State::Payload { remaining: 6 });
    check(&[b"0003"], State::Lost);
    check(&[b"PACK"], State::Lost);
    check(&[b"00x9", b"0000"], State::Lost);
}

#[test]
fn boundaries() {
    let mut framing = Framing::default();
    assert!(framing.at_boundary());
    framing.advance(b"0009\x01PA");
    assert!(!framing.at_boundary());
    framing.advance(b"CK0000");
    assert!(framing.at_boundary());
    framing.advance(b"PACK");
    assert!(!framing.at_boundary());
    framing.advance(b"0000");
    assert!(!framing.at_boundary(), "lost framing is never found again");
}
